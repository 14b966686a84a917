/** Builds the broker messages for requests and results (the message shapes are in task.ts). */
import type { OutgoingMessage } from './broker/port.ts';
import { DEFAULT_TENANT, PRIORITIES, toRequestMessage, toResultMessage, type Priority, type RequestFields, type TaskRecord } from './task.ts';

/** A request message; its headers carry the task's trace context (W3C `traceparent`). */
export function requestOutgoing(task: RequestFields): OutgoingMessage {
  const headers = { ...task.traceContext, type: task.type, tenant: task.tenant ?? DEFAULT_TENANT };
  return { key: task.id, body: JSON.stringify(toRequestMessage(task)), tag: task.type, headers };
}

/** A result message; `traceContext` (the publisher's active one) goes in its headers. */
export function resultOutgoing(task: TaskRecord, traceContext: Record<string, string> = {}): OutgoingMessage {
  return {
    key: task.id,
    body: JSON.stringify(toResultMessage(task)),
    tag: task.type,
    headers: { ...traceContext, type: task.type, status: task.status, tenant: task.tenant },
  };
}

/**
 * Seed 001's three queues: one request topic per priority, each consumed by its own group.
 * `normal` keeps the configured names (MQ_TOPIC_REQUEST, MQ_GROUP_AGENT), so a deployment
 * that never sends priorities sees the seed's topic and group; the others add a suffix
 * (`-` is valid in RocketMQ and Kafka names alike, `.` is not in RocketMQ's).
 */
export function requestTopicFor(base: string, priority: Priority): string {
  return priority === 'normal' ? base : `${base}-${priority}`;
}

export function groupFor(base: string, priority: Priority): string {
  return priority === 'normal' ? base : `${base}-${priority}`;
}

export const allRequestTopics = (base: string): string[] => PRIORITIES.map((p) => requestTopicFor(base, p));
