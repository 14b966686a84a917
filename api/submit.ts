/**
 * Submission: the dual write of ARCHITECTURE.md. The record and its outbox entry are written
 * in one atomic step; then the request message is published; then the outbox entry is
 * disarmed. A 202 follows only a published message (or, if the API dies before answering,
 * the relay publishes it). If publishing fails in time, the task is marked failed before the
 * 503, so a message that lands late is dropped by the claim.
 */
import { randomUUID } from 'node:crypto';
import type { Broker } from '../common/broker/port.ts';
import { retrying } from '../common/backoff.ts';
import { fingerprintOf } from '../common/canonical.ts';
import { sleep } from '../common/backoff.ts';
import { IdempotencyKeyReusedError, UnavailableError, errorMessage, withTimeout } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { countSubmission, type Metrics, type SubmitSource } from '../common/metrics.ts';
import { requestOutgoing, requestTopicFor } from '../common/messages.ts';
import { costOf, type TaskRegistry } from '../common/registry.ts';
import type { Admission, RateState, TaskStore } from '../common/store/port.ts';
import type { NewTask, Priority, TaskError, TaskRecord } from '../common/task.ts';
import { SpanKind, inSpan, traceHeaders } from '../common/tracing.ts';
import { quotaExceededError, rateLimitedError } from '../common/limits.ts';

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
  /** Task types, for their quota cost and downgrade. */
  registry: TaskRegistry;
  /** The deployment's default limits (a tenant's own win, in the store). */
  limits: { submitsPerSecond: number; quotaUnits: number; quotaWindowSeconds: number };
  /** Counts each submission in atq_tasks_submitted_total (and times it) when given. */
  metrics?: Metrics | undefined;
  /** Its `source` label: `http` (POST /tasks) unless given (`schedule` for a firing). */
  source?: SubmitSource;
}

export interface SubmitRequest {
  type: string;
  input: unknown;
  userId: string | null;
  priority: Priority;
  maxAttempts: number;
  /** A delayed task: due then (epoch ms); it stays `scheduled` and the relay publishes it. */
  runAt?: number;
}

export type SubmitResult = ({ replayed: false; task: NewTask; downgraded: boolean } | { replayed: true; taskId: string; task: TaskRecord | null }) & {
  /** The tenant's submit rate limit after this request, when it has one. */
  rate?: RateState;
};

/** What a replay under the same Idempotency-Key must match: the type, the input, the user and the priority. */
export function fingerprint(req: SubmitRequest): string {
  return fingerprintOf({ type: req.type, input: req.input, user_id: req.userId, priority: req.priority });
}

/** Quota units of a request, and of its downgrade when its type has one. */
function admissionOf(deps: SubmitDeps, req: SubmitRequest): Admission {
  const type = deps.registry.get(req.type);
  const adm: Admission = { ...deps.limits, cost: type ? costOf(type, req.input) : 1 };
  const cheaper = type?.downgrade?.(req.input);
  if (type && cheaper !== undefined && cheaper !== null) adm.downgrade = { input: cheaper, cost: costOf(type, cheaper) };
  return adm;
}

/** Submits a task for `tenant` (the tenant of the caller's API key). */
export function submitTask(deps: SubmitDeps, tenant: string, req: SubmitRequest, idempotencyKey?: string): Promise<SubmitResult> {
  const id = randomUUID();
  // The producer span of the task: its context is stored with the record and sent in the
  // message headers, so the worker's span (and a relay republish, and every retry) is its child.
  const submit = () =>
    inSpan(`submit ${req.type}`, { kind: SpanKind.PRODUCER, attributes: { 'atq.task_id': id, 'atq.tenant': tenant, 'atq.type': req.type } }, () =>
      submitTraced(deps, { id, createdAt: Date.now(), tenant, ...req, traceContext: traceHeaders() }, req, idempotencyKey),
    );
  return deps.metrics ? countSubmission(deps.metrics, req.type, deps.source ?? 'http', submit) : submit();
}

async function submitTraced(
  deps: SubmitDeps,
  task: NewTask & { tenant: string },
  req: SubmitRequest,
  idempotencyKey: string | undefined,
): Promise<SubmitResult> {
  const { tenant } = task;
  // Only a request with an Idempotency-Key needs its fingerprint (a hash of the whole input).
  const idem = idempotencyKey === undefined ? undefined : { key: idempotencyKey, fingerprint: fingerprint(req), ttlSeconds: deps.idempotencyTtlSeconds };
  const admission = admissionOf(deps, req);
  // Rate limit, idempotency, quota and the record: one round trip.
  const created = await deps.store.create(task, task.createdAt + deps.relayAfterMs, { ...(idem ? { idempotency: idem } : {}), admission });
  const rate = created.outcome !== 'exists' && created.outcome !== 'quota_exceeded' ? created.rate : undefined;
  if (created.outcome === 'rate_limited') throw rateLimitedError(tenant, 'submits', created.rate);
  if (created.outcome === 'quota_exceeded') {
    const cheaper = admission.downgrade ? ` (${admission.downgrade.cost} in its cheaper form)` : '';
    throw quotaExceededError(tenant, created.usage, created.retryAfterMs, `a ${req.type} task costs ${admission.cost}${cheaper}`);
  }
  if (created.outcome === 'replay') {
    if (created.fingerprint !== idem?.fingerprint) throw new IdempotencyKeyReusedError(created.taskId);
    return { replayed: true, taskId: created.taskId, task: await replayOutcome(deps, created.taskId), ...(rate ? { rate } : {}) };
  }
  if (created.outcome !== 'created') throw new Error(`task id collision: ${task.id}`);
  // The store wrote the cheaper input: the message carries the same.
  if (created.downgraded && admission.downgrade) task.input = admission.downgrade.input;
  // A delayed task is published by the relay once due (any replica's: each takes an outbox entry once).
  if (task.runAt !== undefined) return { replayed: false, task, downgraded: created.downgraded, ...(rate ? { rate } : {}) };

  try {
    await withTimeout(
      deps.broker.publish(requestTopicFor(deps.requestTopic, task.priority), requestOutgoing(task)),
      deps.publishTimeoutMs,
      () => new Error(`no ack within ${deps.publishTimeoutMs} ms`),
    );
  } catch (err) {
    const error = { code: 'broker_unavailable', message: `the request message could not be published: ${errorMessage(err)}`, retriable: true };
    try {
      await retrying(() => deps.store.failQueued(task.id, error, idempotencyKey, tenant), {
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
      failLater(deps, task.id, error, idempotencyKey, tenant);
    }
    throw new UnavailableError('broker', `the broker did not accept the task: ${errorMessage(err)}`, { cause: err });
  }

  // Off the request path, batched with the other submissions' disarms; if it fails, the relay
  // publishes once more, which the claim absorbs.
  deps.store
    .disarmOutbox(task.id, 0)
    .catch((err: unknown) => deps.logger.warn('could not disarm the outbox entry', { task_id: task.id, err: errorMessage(err) }));
  return { replayed: false, task, downgraded: created.downgraded, ...(rate ? { rate } : {}) };
}

/**
 * A replay answers what the first request answered: while that request is still publishing
 * (the record is queued and its message not yet acknowledged), it waits for the outcome. A
 * publish that failed ends the task `failed` with broker_unavailable before the first
 * request's 503, so the replay answers 503 too. A task still unpublished after the first
 * request's publish timeout (its API died, or could not record the failure yet) is a 503 as
 * well: it may yet end failed, so a 202 would promise too much; the client retries with the
 * same key and gets 202 once the relay has published it, or a new task once it has failed.
 */
async function replayOutcome(deps: SubmitDeps, id: string): Promise<TaskRecord | null> {
  const deadline = Date.now() + deps.publishTimeoutMs + 1000;
  for (let pause = 10; ; pause = Math.min(pause * 2, 200)) {
    const task = await deps.store.get(id);
    if (!task) return null;
    const unpublished = task.status === 'queued' && task.attempt === 0 && !task.requestPublished;
    if (task.status === 'failed' && task.attempt === 0 && task.error?.code === 'broker_unavailable') {
      throw new UnavailableError('broker', `the broker did not accept the task: ${task.error.message}`);
    }
    if (!unpublished) return task;
    if (Date.now() >= deadline) {
      throw new UnavailableError('broker', `the first request with this Idempotency-Key has not published task ${id} yet; retry with the same key`);
    }
    await sleep(pause);
  }
}

/** Retries failQueued every second for a minute, off the request path. */
function failLater(deps: SubmitDeps, id: string, error: TaskError, idempotencyKey: string | undefined, tenant: string): void {
  let tries = 0;
  const attempt = () => {
    deps.store.failQueued(id, error, idempotencyKey, tenant).then(
      (code) => deps.logger.info('marked an unpublished task failed after all', { task_id: id, code }),
      () => {
        if (++tries < 60) setTimeout(attempt, 1000).unref();
        else deps.logger.error('gave up marking an unpublished task failed; a relay may still run it', { task_id: id });
      },
    );
  };
  setTimeout(attempt, 1000).unref();
}
