/**
 * Every Redis key is built here. Task ids are checked before they become part of a key, so
 * no request can make us read or write a key we did not mean to.
 */
import { createHash } from 'node:crypto';
import { isScheduleId } from './schedules/port.ts';
import { DEFAULT_TENANT, isTaskId, isTenant } from './task.ts';

function tenantPart(tenant: string): string {
  if (!isTenant(tenant)) throw new TypeError(`not a tenant name: ${JSON.stringify(tenant).slice(0, 80)}`);
  return tenant;
}

/** Every key of a deployment shares this hash tag, so one script's keys share a cluster slot. */
export const DEFAULT_KEY_PREFIX = '{atq}:';

export interface Keys {
  task(id: string): string;
  /** Sorted set: task id → the time its request message is due to be (re)published. */
  outbox(): string;
  /** Idempotency-Key of a tenant → task; the client's key is hashed, so any string is safe. */
  idempotency(tenant: string, clientKey: string): string;
  /**
   * Idempotency-Key of a tenant → workflow (POST /workflows): a namespace of its own, so the
   * same header value names a task on POST /tasks and a workflow on POST /workflows, apart.
   */
  workflowIdempotency(tenant: string, clientKey: string): string;
  /** Stream: the execution history of a task (status, progress, log, partial, end). */
  events(id: string): string;
  /** String: the partial output a handler streamed, appended. */
  output(id: string): string;
  /** Sorted set: every live task id of a tenant by creation time, for listing. */
  index(tenant: string): string;
  /** Sorted set: the task ids of one user of a tenant by creation time; the user id is hashed. */
  userIndex(tenant: string, userId: string): string;
  /** Sorted set: `<task id><tenant>\n<user id>` of finished tasks by the time they expire, for the sweeper. */
  expiring(): string;
  /**
   * The tenant keys below are also built inside the transition scripts, from the prefix
   * (redis-scripts.ts `tenant_key`): keep the two in step.
   * Hash: a tenant's own limits (quota_units, quota_window_seconds, submits_per_s, reads_per_s, max_running).
   */
  tenant(tenant: string): string;
  /** Hash: a tenant's quota window: `start` (epoch ms) and `spent` units. */
  quota(tenant: string): string;
  /** String: requests of `kind` of a tenant in the current second. */
  rate(tenant: string, kind: 'reads' | 'submits'): string;
  /** Sorted set: the tenant's running task ids by lease expiry, for its cap on running tasks. */
  running(tenant: string): string;
  /** Hash: an API key's record, under the SHA-256 of its secret. */
  apiKey(secretHash: string): string;
  /** Hash: API key id → the SHA-256 of its secret, for listing and revoking. */
  apiKeys(): string;
  /** Pub/sub channel: ids of running tasks that were cancelled. */
  cancelChannel(): string;
  /** Hash: worker id → its WorkerInfo as JSON (the live-worker list). */
  workers(): string;
  /** Sorted set: worker id → when its heartbeat expires (epoch ms). */
  workerBeats(): string;
  /** Hash: a cron schedule (common/schedules). */
  schedule(id: string): string;
  /** Sorted set: a tenant's schedule ids by creation time, for listing. */
  scheduleIndex(tenant: string): string;
  /** Sorted set: active schedule id → when it is next due (its next run, or the end of a replica's lease on it). */
  schedulesDue(): string;
  /**
   * Hash: a workflow (id, tenant, name, user_id, parent_task, status, steps as JSON
   * [[step, task id], …], left = steps not done, error, created_at, finished_at). The scripts
   * build this name and the two below from the prefix too (redis-scripts.ts `tkey`).
   */
  workflow(id: string): string;
  /** Stream: every event of every step of a workflow, and its own end. */
  workflowEvents(id: string): string;
  /** Sorted set: a tenant's workflow ids by creation time. */
  workflowIndex(tenant: string): string;
  /** Sorted set: a tenant's dead letters (tasks failed after their attempts) by when they failed. */
  dead(tenant: string): string;
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
    // The default tenant keeps the names from before tenants, so an upgrade loses nothing.
    idempotency: (tenant, clientKey) =>
      `${prefix}idem:${createHash('sha256')
        .update(tenant === DEFAULT_TENANT ? clientKey : `${tenantPart(tenant)}\n${clientKey}`)
        .digest('hex')}`,
    workflowIdempotency: (tenant, clientKey) =>
      `${prefix}wfidem:${createHash('sha256')
        .update(`${tenantPart(tenant)}\n${clientKey}`)
        .digest('hex')}`,
    events(id) {
      if (!isTaskId(id)) throw new TypeError(`not a task id: ${JSON.stringify(id).slice(0, 60)}`);
      return `${prefix}events:${id.toLowerCase()}`;
    },
    output(id) {
      if (!isTaskId(id)) throw new TypeError(`not a task id: ${JSON.stringify(id).slice(0, 60)}`);
      return `${prefix}output:${id.toLowerCase()}`;
    },
    index: (tenant) => (tenant === DEFAULT_TENANT ? `${prefix}index` : `${prefix}index:${tenantPart(tenant)}`),
    userIndex: (tenant, userId) =>
      `${prefix}user:${tenant === DEFAULT_TENANT ? '' : `${tenantPart(tenant)}:`}${createHash('sha256').update(userId).digest('hex')}`,
    expiring: () => `${prefix}expiring`,
    cancelChannel: () => `${prefix}cancel`,
    tenant: (tenant) => `${prefix}tenant:${tenantPart(tenant)}`,
    quota: (tenant) => `${prefix}quota:${tenantPart(tenant)}`,
    rate: (tenant, kind) => `${prefix}rate:${kind}:${tenantPart(tenant)}`,
    running: (tenant) => `${prefix}running:${tenantPart(tenant)}`,
    apiKey: (secretHash) => {
      if (!/^[0-9a-f]{64}$/.test(secretHash)) throw new TypeError('not a SHA-256 hex digest');
      return `${prefix}apikey:${secretHash}`;
    },
    apiKeys: () => `${prefix}apikeys`,
    workers: () => `${prefix}workers`,
    workerBeats: () => `${prefix}workers:beats`,
    schedule(id) {
      if (!isScheduleId(id)) throw new TypeError(`not a schedule id: ${JSON.stringify(id).slice(0, 60)}`);
      return `${prefix}schedule:${id}`;
    },
    scheduleIndex: (tenant) => `${prefix}schedules:index:${tenantPart(tenant)}`,
    schedulesDue: () => `${prefix}schedules:due`,
    workflow(id) {
      if (!isTaskId(id)) throw new TypeError(`not a workflow id: ${JSON.stringify(id).slice(0, 60)}`);
      return `${prefix}wf:${id.toLowerCase()}`;
    },
    workflowEvents(id) {
      if (!isTaskId(id)) throw new TypeError(`not a workflow id: ${JSON.stringify(id).slice(0, 60)}`);
      return `${prefix}wfevents:${id.toLowerCase()}`;
    },
    workflowIndex: (tenant) => `${prefix}wfindex:${tenantPart(tenant)}`,
    dead: (tenant) => `${prefix}dead:${tenantPart(tenant)}`,
    unused: () => `${prefix}unused`,
  };
}
