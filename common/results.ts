/**
 * The one place that publishes result messages: the worker at the end of a task (or on a
 * redelivery that finds it ended without its result out), the API for a task cancelled
 * while queued. The mark that the result is out is batched with other tasks' marks.
 */
import type { Broker } from './broker/port.ts';
import { retrying } from './backoff.ts';
import { UnavailableError } from './errors.ts';
import { resultOutgoing } from './messages.ts';
import { SpanKind, inSpan, traceHeaders } from './tracing.ts';
import type { TaskStore } from './store/port.ts';
import type { TaskRecord } from './task.ts';

/** Store calls that must not be lost to a short Redis blip. */
export const storeRetry = { tries: 5, baseMs: 200, maxMs: 2000, retriable: (e: unknown) => e instanceof UnavailableError };

/** Publishes the result of an ended task, then notes in the store that it is out. */
export function publishResult(broker: Broker, store: TaskStore, topic: string, task: TaskRecord): Promise<void> {
  // The result message carries the trace on to downstream consumers.
  return inSpan(`publish ${topic}`, { kind: SpanKind.PRODUCER, attributes: { 'atq.task_id': task.id, 'atq.status': task.status } }, async () => {
    await broker.publish(topic, resultOutgoing(task, traceHeaders()));
    await retrying(() => store.markResultPublished(task.id), storeRetry);
  });
}
