/** Builds the broker messages for requests and results (the message shapes are in task.ts). */
import type { OutgoingMessage } from './broker/port.ts';
import { toRequestMessage, toResultMessage, type TaskRecord } from './task.ts';

export function requestOutgoing(task: Pick<TaskRecord, 'id' | 'type' | 'input' | 'userId' | 'priority' | 'createdAt'>): OutgoingMessage {
  return { key: task.id, body: JSON.stringify(toRequestMessage(task)), tag: task.type, headers: { type: task.type } };
}

export function resultOutgoing(task: TaskRecord): OutgoingMessage {
  return { key: task.id, body: JSON.stringify(toResultMessage(task)), tag: task.type, headers: { type: task.type, status: task.status } };
}
