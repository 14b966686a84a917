/**
 * Submission: the dual write of ARCHITECTURE.md. The record and its outbox entry are written
 * in one atomic step; then the request message is published; then the outbox entry is
 * disarmed. A 202 follows only a published message (or, if the API dies before answering,
 * the relay publishes it). If publishing fails in time, the task is marked failed before the
 * 503, so a message that lands late is dropped by the claim.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { Broker } from '../common/broker/port.ts';
import { retrying } from '../common/backoff.ts';
import { IdempotencyKeyReusedError, UnavailableError, errorMessage, withTimeout } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { requestOutgoing, requestTopicFor } from '../common/messages.ts';
import type { TaskStore } from '../common/store/port.ts';
import type { NewTask, Priority, TaskError } from '../common/task.ts';

export interface SubmitDeps {
  store: TaskStore;
  broker: Broker;
  logger: Logger;
  requestTopic: string;
  /** Time the publish may take before the API answers 503. */
  publishTimeoutMs: number;
  /** When the relay publishes a record whose API died before publishing. */
  relayAfterMs: number;
  /** How long an Idempotency-Key names its task. */
  idempotencyTtlSeconds: number;
}

export interface SubmitRequest {
  type: string;
  input: unknown;
  userId: string | null;
  priority: Priority;
  maxAttempts: number;
}

export type SubmitResult = { replayed: false; task: NewTask } | { replayed: true; taskId: string };

/** JSON with sorted keys, so the same request always has the same fingerprint. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

export function fingerprint(req: SubmitRequest): string {
  return createHash('sha256')
    .update(canonical({ type: req.type, input: req.input, user_id: req.userId, priority: req.priority }))
    .digest('hex');
}

export async function submitTask(deps: SubmitDeps, req: SubmitRequest, idempotencyKey?: string): Promise<SubmitResult> {
  const task: NewTask = { id: randomUUID(), createdAt: Date.now(), ...req };
  // Only a request with an Idempotency-Key needs its fingerprint (a hash of the whole input).
  const idem = idempotencyKey === undefined ? undefined : { key: idempotencyKey, fingerprint: fingerprint(req), ttlSeconds: deps.idempotencyTtlSeconds };
  const created = await deps.store.create(task, task.createdAt + deps.relayAfterMs, idem);
  if (created.outcome === 'replay') {
    if (created.fingerprint !== idem?.fingerprint) throw new IdempotencyKeyReusedError(created.taskId);
    return { replayed: true, taskId: created.taskId };
  }
  if (created.outcome !== 'created') throw new Error(`task id collision: ${task.id}`);

  try {
    await withTimeout(
      deps.broker.publish(requestTopicFor(deps.requestTopic, task.priority), requestOutgoing(task)),
      deps.publishTimeoutMs,
      () => new Error(`no ack within ${deps.publishTimeoutMs} ms`),
    );
  } catch (err) {
    const error = { code: 'broker_unavailable', message: `the request message could not be published: ${errorMessage(err)}`, retriable: true };
    try {
      await retrying(() => deps.store.failQueued(task.id, error, idempotencyKey), {
        tries: 3,
        baseMs: 100,
        maxMs: 500,
        retriable: (e) => e instanceof UnavailableError,
      });
    } catch (storeErr) {
      // Redis went away too. The outbox entry stays armed, so once Redis is back a relay
      // could publish the task the client was told failed; keep trying to mark it failed
      // in the background to keep that window short (with an Idempotency-Key the client's
      // retry gets this same task, never a second one).
      deps.logger.error('could not mark an unpublished task failed; retrying in the background', { task_id: task.id, err: errorMessage(storeErr) });
      failLater(deps, task.id, error, idempotencyKey);
    }
    throw new UnavailableError('broker', `the broker did not accept the task: ${errorMessage(err)}`, { cause: err });
  }

  // Off the request path, batched with the other submissions' disarms; if it fails, the relay
  // publishes once more, which the claim absorbs.
  deps.store
    .disarmOutbox(task.id, 0)
    .catch((err: unknown) => deps.logger.warn('could not disarm the outbox entry', { task_id: task.id, err: errorMessage(err) }));
  return { replayed: false, task };
}

/** Retries failQueued every second for a minute, off the request path. */
function failLater(deps: SubmitDeps, id: string, error: TaskError, idempotencyKey: string | undefined): void {
  let tries = 0;
  const attempt = () => {
    deps.store.failQueued(id, error, idempotencyKey).then(
      (code) => deps.logger.info('marked an unpublished task failed after all', { task_id: id, code }),
      () => {
        if (++tries < 60) setTimeout(attempt, 1000).unref();
        else deps.logger.error('gave up marking an unpublished task failed; a relay may still run it', { task_id: id });
      },
    );
  };
  setTimeout(attempt, 1000).unref();
}
