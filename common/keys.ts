/**
 * Every Redis key is built here. Task ids are checked before they become part of a key, so
 * no request can make us read or write a key we did not mean to.
 */
import { createHash } from 'node:crypto';
import { isTaskId } from './task.ts';

export interface Keys {
  task(id: string): string;
  /** Sorted set: task id → the time its request message is due to be (re)published. */
  outbox(): string;
  /** Idempotency-Key → task; the client's key is hashed, so any string is safe. */
  idempotency(clientKey: string): string;
}

export function makeKeys(prefix: string): Keys {
  return {
    task(id) {
      if (!isTaskId(id)) throw new TypeError(`not a task id: ${JSON.stringify(id).slice(0, 60)}`);
      return `${prefix}task:${id.toLowerCase()}`;
    },
    outbox: () => `${prefix}outbox`,
    idempotency: (clientKey) => `${prefix}idem:${createHash('sha256').update(clientKey).digest('hex')}`,
  };
}
