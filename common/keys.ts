/**
 * Every Redis key is built here. Task ids are checked before they become part of a key, so
 * no request can make us read or write a key we did not mean to.
 */
import { createHash } from 'node:crypto';
import { isTaskId } from './task.ts';

/** Every key of a deployment shares this hash tag, so one script's keys share a cluster slot. */
export const DEFAULT_KEY_PREFIX = '{atq}:';

export interface Keys {
  task(id: string): string;
  /** Sorted set: task id → the time its request message is due to be (re)published. */
  outbox(): string;
  /** Idempotency-Key → task; the client's key is hashed, so any string is safe. */
  idempotency(clientKey: string): string;
  /** Stream: the execution history of a task (status, progress, log, partial, end). */
  events(id: string): string;
  /** String: the partial output a handler streamed, appended. */
  output(id: string): string;
  /** Sorted set: every live task id by creation time, for listing. */
  index(): string;
  /** Sorted set: the task ids of one user by creation time; the user id is hashed. */
  userIndex(userId: string): string;
  /** Sorted set: `<task id><user id>` of finished tasks by the time they expire, for the sweeper. */
  expiring(): string;
  /** Pub/sub channel: ids of running tasks that were cancelled. */
  cancelChannel(): string;
  /** Never written: fills a script's optional key slot, in the same hash slot as the rest. */
  unused(): string;
}

export function makeKeys(prefix: string): Keys {
  return {
    task(id) {
      if (!isTaskId(id)) throw new TypeError(`not a task id: ${JSON.stringify(id).slice(0, 60)}`);
      return `${prefix}task:${id.toLowerCase()}`;
    },
    outbox: () => `${prefix}outbox`,
    idempotency: (clientKey) => `${prefix}idem:${createHash('sha256').update(clientKey).digest('hex')}`,
    events(id) {
      if (!isTaskId(id)) throw new TypeError(`not a task id: ${JSON.stringify(id).slice(0, 60)}`);
      return `${prefix}events:${id.toLowerCase()}`;
    },
    output(id) {
      if (!isTaskId(id)) throw new TypeError(`not a task id: ${JSON.stringify(id).slice(0, 60)}`);
      return `${prefix}output:${id.toLowerCase()}`;
    },
    index: () => `${prefix}index`,
    userIndex: (userId) => `${prefix}user:${createHash('sha256').update(userId).digest('hex')}`,
    expiring: () => `${prefix}expiring`,
    cancelChannel: () => `${prefix}cancel`,
    unused: () => `${prefix}unused`,
  };
}
