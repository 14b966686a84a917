/**
 * The task-store port: the truth about every task. Each transition is one atomic
 * compare-and-set that answers a code; callers never read-then-write.
 *
 * The outbox is a sorted set of task ids by the time their request message is due to be
 * (re)published. It closes three gaps with one mechanism:
 *  - submission: `create` arms it; the API disarms it after publishing; if the API dies in
 *    between, the relay publishes it;
 *  - retries: `retryLater` arms it at the retry time, and the relay publishes it then;
 *  - takeover: `claim` and `renewLease` arm it just past the lease, so a task whose worker
 *    died is republished once its lease expires, on any broker.
 */
import type { HandlerEvent, NewTask, TaskError, TaskEvent, TaskRecord, TaskStatus } from '../task.ts';

export type ClaimResult =
  /** `afterLostLease`: the previous attempt's worker died (its lease expired); this claim re-runs it. */
  | { outcome: 'claimed'; task: TaskRecord; afterLostLease?: boolean }
  | { outcome: 'missing' }
  /** done, failed or cancelled: the message is a duplicate. */
  | { outcome: 'terminal'; task: TaskRecord }
  /** running under a live lease, or a retry that is not due yet: someone else has it. */
  | { outcome: 'busy'; task: TaskRecord }
  /** Its tenant is at its cap of running tasks: put back in the outbox until `task.retryAt`. */
  | { outcome: 'throttled'; task: TaskRecord }
  /**
   * Its worker died (lease expired) on the last attempt it had: now failed with code
   * `worker_lost`; the caller publishes the failure result and dead-letters the message.
   */
  | { outcome: 'exhausted'; task: TaskRecord };

/**
 * Answer of a transition. `not_owner`: the caller no longer holds the task (its lease
 * expired and another worker claimed it, or it was cancelled); `conflict`: the task is not in
 * a state this transition leaves from.
 */
export type TransitionCode = 'ok' | 'missing' | 'not_owner' | 'terminal' | 'conflict';

/** Answer of a transition that ends an attempt: the record as the transition left it, or why it did not happen. */
export type TransitionResult =
  /** `ready`: workflow steps whose last need this completion was; now queued, their outbox armed, for the caller to publish. */
  { code: 'ok'; task: TaskRecord; ready?: string[] } | { code: Exclude<TransitionCode, 'ok'> };

/** An Idempotency-Key to bind to the task being created. */
export interface IdempotencyClaim {
  /** The key as the client sent it. */
  key: string;
  /** Fingerprint of the request, so a different request under the same key can be told apart. */
  fingerprint: string;
  ttlSeconds: number;
}

/**
 * What a submit is admitted against, checked and spent in the same atomic step as the create.
 * The numbers are the deployment's defaults; a tenant's own limits (setTenantLimits) win.
 */
export interface Admission {
  /** Submits per second of the tenant; 0 = no limit. */
  submitsPerSecond: number;
  /** Quota units per window; 0 = unlimited. */
  quotaUnits: number;
  quotaWindowSeconds: number;
  /** Units this task costs. */
  cost: number;
  /** A cheaper form to create instead when the full cost does not fit. */
  downgrade?: { input: unknown; cost: number };
}

/** The state of a rate limit after a request, for the RateLimit headers. */
export interface RateState {
  /** Requests allowed per window. */
  limit: number;
  remaining: number;
  /** Milliseconds until the window resets. */
  resetMs: number;
}

export interface CreateOptions {
  idempotency?: IdempotencyClaim;
  admission?: Admission;
}

export type CreateResult =
  /** `downgraded`: the cheaper form was created. `rate`: the submit rate limit, when there is one. */
  | { outcome: 'created'; downgraded: boolean; rate?: RateState }
  /** The task id exists already (never in practice: ids are random UUIDs). */
  | { outcome: 'exists' }
  /** The idempotency key was used before: nothing was written; here is what it names. */
  | { outcome: 'replay'; taskId: string; fingerprint: string; rate?: RateState }
  /** Over the tenant's submit rate: nothing was written. */
  | { outcome: 'rate_limited'; rate: RateState }
  /** The tenant's quota is short of the cost (and of any downgrade): nothing was written. */
  | { outcome: 'quota_exceeded'; retryAfterMs: number; usage: QuotaUsage };

export type Scope = 'tasks:write' | 'tasks:read' | 'admin';
export const SCOPES: readonly Scope[] = ['tasks:write', 'tasks:read', 'admin'];

/** An API key as stored: never the key itself, only its SHA-256. */
export interface ApiKeyRecord {
  /** Public id (`key_…`), for listing and revoking. */
  id: string;
  tenant: string;
  scopes: Scope[];
  name: string | null;
  createdAt: number;
}

/** A tenant's own limits; an absent field falls back to the deployment's default. */
export interface TenantLimits {
  quotaUnits?: number;
  quotaWindowSeconds?: number;
  submitsPerSecond?: number;
  readsPerSecond?: number;
  /** Tasks of the tenant running at once; 0 = no cap. */
  maxRunning?: number;
}

/** What GET /quota shows. */
export interface QuotaUsage {
  tenant: string;
  /** 0 = unlimited. */
  units: number;
  windowSeconds: number;
  spent: number;
  /** Start of the current window (epoch ms); windows are aligned to the epoch (a day starts at 00:00 UTC). */
  windowStart: number;
  resetsAt: number;
}

/** How a claim treats the tenant's cap on running tasks. */
export interface ClaimOptions {
  /** Default cap on running tasks per tenant (its own limit wins); 0 = none. Default 0. */
  maxRunning?: number;
  /** Base delay before a task over the cap is offered again; doubles per deferral, to 16×. Default 1000 ms. */
  throttleMs?: number;
}

export type CancelResult =
  /** It had not started or was running (`was`) and is now cancelled. */
  | { outcome: 'cancelled'; was: 'scheduled' | 'waiting' | 'queued' | 'running'; task: TaskRecord }
  | { outcome: 'terminal'; task: TaskRecord }
  | { outcome: 'missing' };

// --- workflows -----------------------------------------------------------------------------

export const WORKFLOW_STATUSES = ['running', 'done', 'failed', 'cancelled'] as const;
export type WorkflowStatus = (typeof WORKFLOW_STATUSES)[number];

/** One step of a workflow to create: its task, and the step ids it needs. */
export interface NewStep {
  step: string;
  task: NewTask;
  needs: string[];
}

export interface NewWorkflow {
  /** A UUID. */
  id: string;
  tenant: string;
  name: string | null;
  userId: string | null;
  /** The task whose handler spawned it (ctx.spawn), or null. */
  parentTaskId: string | null;
  createdAt: number;
  /** In an order where every step comes after the steps it needs. */
  steps: NewStep[];
}

export interface WorkflowRecord {
  id: string;
  tenant: string;
  name: string | null;
  userId: string | null;
  parentTaskId: string | null;
  status: WorkflowStatus;
  /** Step id → task id, in the order they were given. */
  steps: { step: string; taskId: string }[];
  /** Why it failed or was cancelled (the failing step's error). */
  error: TaskError | null;
  createdAt: number;
  finishedAt: number | null;
}

export interface CreateWorkflowOptions {
  /**
   * An Idempotency-Key to bind to the workflow (POST /workflows). Workflow keys are apart from
   * create's task keys: the same key may name a task and a workflow of the same tenant.
   */
  idempotency?: IdempotencyClaim;
  admission?: Admission;
}

export type CreateWorkflowResult =
  | { outcome: 'created'; rate?: RateState }
  /** The workflow id exists already (a handler's ctx.spawn run again after a crash): nothing was written. */
  | { outcome: 'exists' }
  /** The idempotency key was used before: nothing was written; here is the workflow it names. */
  | { outcome: 'replay'; workflowId: string; fingerprint: string; rate?: RateState }
  | { outcome: 'rate_limited'; rate: RateState }
  | { outcome: 'quota_exceeded'; retryAfterMs: number; usage: QuotaUsage };

/** An event of one step, in the workflow's own stream (ids grow across all its steps). */
export interface WorkflowEvent extends TaskEvent {
  taskId: string;
  /** Its step id; '' for the workflow's own events (type `workflow`). */
  step: string;
}

export type WorkflowCancelResult =
  { outcome: 'cancelled'; workflow: WorkflowRecord } | { outcome: 'terminal'; workflow: WorkflowRecord } | { outcome: 'missing' };

export type RerunResult =
  /** Queued again with a fresh set of attempts; its outbox entry is armed for the caller to publish. */
  | { outcome: 'rerun'; task: TaskRecord }
  | { outcome: 'missing' }
  /** Not failed or cancelled, or a workflow step (rerun its workflow's steps by redrive instead): nothing changed. */
  | { outcome: 'conflict'; task: TaskRecord }
  /** The tenant's quota has not the task's cost left in this window: nothing changed. */
  | { outcome: 'quota_exceeded'; retryAfterMs: number; usage: QuotaUsage };

/** What a rerun spends from its tenant's quota: the task's cost, against the deployment's default limits (a tenant's own win). */
export type RerunCharge = Pick<Admission, 'quotaUnits' | 'quotaWindowSeconds' | 'cost'>;

export interface DeadLetterQuery {
  tenant: string;
  type?: string;
  /** The error code it failed with. */
  code?: string;
  limit: number;
  after?: ListCursor;
}

/** Where a listing page starts: after the task `id` created at `createdAt` (newest first). */
export interface ListCursor {
  createdAt: number;
  id: string;
}

export interface ListQuery {
  /** Default: DEFAULT_TENANT. */
  tenant?: string;
  status?: TaskStatus;
  userId?: string;
  type?: string;
  limit: number;
  after?: ListCursor;
}

export interface ListPage {
  tasks: TaskRecord[];
  /** Null at the end. A page may hold fewer than `limit` tasks and still have a next one. */
  next: ListCursor | null;
}

/** Entries a listing looks at per page before it answers with what it has and a cursor. */
export const LIST_SCAN_BUDGET = 2000;

export interface CancelWatch {
  close(): Promise<void>;
}

export interface TaskWatch {
  /**
   * Resolves true once the task's history grew since the last call (or since the watch
   * began), false when `timeoutMs` passed or `signal` aborted first. Callers read the store
   * again after either: a false is the safety net for news that could not be heard.
   */
  changed(timeoutMs: number, signal?: AbortSignal): Promise<boolean>;
  close(): void;
}

/** A live worker, as it registers itself with every heartbeat (GET /stats lists them). */
export interface WorkerInfo {
  id: string;
  host: string;
  /** Task slots, all priorities together. */
  concurrency: number;
  /** Tasks it runs now. */
  running: number;
  /** When it started (epoch ms). */
  startedAt: number;
  /** The product version it runs (package.json). */
  version: string;
  /** Its last heartbeat (epoch ms); set by the store. */
  seenAt?: number;
}

/** Counts of a tenant's tasks, from a scan of its listing index bounded by LIST_SCAN_BUDGET. */
export interface TaskCounts {
  byStatus: Record<TaskStatus, number>;
  /** By task type name. */
  byType: Record<string, number>;
  /** Tasks looked at. */
  scanned: number;
  /** The tenant has more tasks than the scan looked at: the counts cover the newest `scanned`. */
  truncated: boolean;
}

export interface StoreStats {
  roundTrips: number;
}

export interface TaskStoreOptions {
  /** Seconds a finished task (with its history) stays readable. Default 86400. */
  resultTtlSeconds?: number;
  /** Events kept per task history; older ones are trimmed. Default 1000. */
  historyLimit?: number;
  /** Bytes of partial output kept per task; chunks past it only go to the history. Default 1 MiB. */
  outputLimitBytes?: number;
  /** How long after lease expiry the takeover watchdog fires. Default 1000 ms. */
  takeoverDelayMs?: number;
  /**
   * When the relay publishes a workflow step that became ready, if the worker that readied it
   * does not publish it first (it dies in between). Default 2000 ms.
   */
  readyPublishDelayMs?: number;
}

export interface TaskStore {
  /**
   * Writes a `queued` record and arms the outbox at `publishDueAt`, in one atomic step that
   * first checks the tenant's submit rate, then binds `idempotency.key` (per tenant) to the
   * task unless the key is bound already (then `replay`), then spends the quota units (or the
   * downgrade's): one round trip in all.
   */
  create(task: NewTask, publishDueAt: number, opts?: CreateOptions): Promise<CreateResult>;
  get(id: string): Promise<TaskRecord | null>;

  /**
   * The idempotent claim: queued, or running with an expired lease → running for `worker`.
   * A claim after a lost lease counts as an attempt: with none left the task fails
   * (`exhausted`). Over its tenant's running cap the task is deferred (`throttled`).
   */
  claim(id: string, worker: string, leaseMs: number, opts?: ClaimOptions): Promise<ClaimResult>;
  renewLease(id: string, worker: string, leaseMs: number): Promise<TransitionCode>;
  /**
   * Adds a handler's events (progress, log lines, partial output) to a running task's history,
   * in order, in one owner-checked step.
   */
  report(id: string, worker: string, events: readonly HandlerEvent[]): Promise<TransitionCode>;
  /** running → done with the result; `events` still pending from the handler go first, in the same step. */
  complete(id: string, worker: string, result: unknown, events?: readonly HandlerEvent[]): Promise<TransitionResult>;
  /** running → queued with the error, and the outbox armed at `retryAt`. */
  retryLater(id: string, worker: string, error: TaskError, retryAt: number, events?: readonly HandlerEvent[]): Promise<TransitionResult>;
  /** running → failed. */
  fail(id: string, worker: string, error: TaskError, events?: readonly HandlerEvent[]): Promise<TransitionResult>;
  /**
   * queued → failed, for a submission whose message could not be published: no result is
   * due. Releases `idempotencyKey` if it names this task, so the client's retry with the same
   * key creates a task instead of replaying this dead one (keys are per tenant: `tenant`,
   * default DEFAULT_TENANT, is the task's). Its quota units go back.
   */
  failQueued(id: string, error: TaskError, idempotencyKey?: string, tenant?: string): Promise<TransitionCode>;
  /** Notes that the result message is out. Calls made together may share one round trip. */
  markResultPublished(id: string): Promise<void>;

  /** Up to `limit` events of a task's history after the event id `after` (from the start if null), oldest first. */
  events(id: string, after: string | null, limit: number): Promise<TaskEvent[]>;
  /**
   * Watches a task for news: `changed()` resolves once something was added to its history
   * since the last call. All watches of a process share one subscription, not a poll each.
   */
  watch(id: string): Promise<TaskWatch>;
  /**
   * queued or running → cancelled; a running task's worker is told through watchCancellations.
   * A task of another tenant than `tenant` (when given) is `missing`. A task that never
   * started gives its quota units back.
   */
  cancel(id: string, reason: string | null, tenant?: string): Promise<CancelResult>;
  /** Calls `onCancel` with the id of every running task that gets cancelled, on any process. */
  watchCancellations(onCancel: (id: string) => void): Promise<CancelWatch>;
  /** Tasks newest first, filtered. */
  list(query: ListQuery): Promise<ListPage>;
  /** Drops expired tasks from the listing indexes; answers how many. Run by every relay. */
  sweep(limit: number): Promise<number>;

  /**
   * Disarms the outbox entry of a task whose request message is out — only if the task is
   * still the `queued` task at `attempt` that was published (or is finished), and not deferred
   * to a later retry_at. A worker may have claimed it and armed the entry again since (a lease
   * watchdog, a retry, a deferral by its tenant's cap): that entry must stay, or a retry scheduled in between would never be published. Calls made
   * together may share one round trip.
   */
  disarmOutbox(id: string, attempt: number): Promise<void>;
  /** Takes up to `limit` due outbox entries, pushing each back by `holdMs` so relays don't collide. */
  outboxDue(limit: number, holdMs: number): Promise<string[]>;

  // --- access: API keys, tenant limits, quota, rate limits ---

  /** Stores a new key under the SHA-256 of its secret. */
  createKey(key: ApiKeyRecord, secretHash: string): Promise<void>;
  findKey(secretHash: string): Promise<ApiKeyRecord | null>;
  /** Every key, or a tenant's, oldest first. */
  listKeys(tenant?: string): Promise<ApiKeyRecord[]>;
  /** Answers false when there was no such key. */
  revokeKey(id: string): Promise<boolean>;
  tenantLimits(tenant: string): Promise<TenantLimits>;
  /** Sets the given fields; a null field goes back to the default. */
  setTenantLimits(tenant: string, limits: { [K in keyof TenantLimits]?: number | null }): Promise<TenantLimits>;
  /** The tenant's quota now, with `defaults` where it has no limits of its own. */
  quotaUsage(tenant: string, defaults: { quotaUnits: number; quotaWindowSeconds: number }): Promise<QuotaUsage>;
  /**
   * Counts one request against the tenant's limit of `perSecond` requests of `kind` per
   * second (the caller resolves the tenant's own limit); answers null when `perSecond` is 0,
   * else the state and whether the request was allowed.
   */
  hit(tenant: string, kind: 'reads' | 'submits', perSecond: number): Promise<(RateState & { allowed: boolean }) | null>;

  // --- live workers and statistics ---

  /** Registers or renews a worker's entry; it leaves `workers()` once `ttlMs` passes without another. */
  heartbeat(info: WorkerInfo, ttlMs: number): Promise<void>;
  /** The workers whose heartbeat has not expired, by id. */
  workers(): Promise<WorkerInfo[]>;
  /** Drops a worker's entry (on graceful shutdown). */
  removeWorker(id: string): Promise<void>;
  /** Counts of the tenant's newest tasks (at most `budget`, default LIST_SCAN_BUDGET) by status and by type. */
  countTasks(tenant: string, budget?: number): Promise<TaskCounts>;

  /** Round trips to the store so far (a shared batch counts once), for the process statistics. */
  readonly stats: StoreStats;

  // --- delayed tasks, workflows, reruns and dead letters ---

  /**
   * Writes a workflow and all its steps in one atomic step (after the same rate limit and
   * quota check as create, for the sum of the steps' costs, in `admission.cost`; no downgrade): the steps that need nothing are
   * `queued` with their outbox armed at `publishDueAt`, the rest `waiting`. When a step ends
   * done, the same transition queues each step whose last need it was (TransitionResult.ready);
   * when one fails or is cancelled, the workflow fails (or is cancelled) and every step not
   * finished is cancelled. With `idempotency`, the key (per tenant, in a namespace apart from
   * create's) is bound to the workflow for its ttl, checked after the rate limit and before
   * the quota, as create does: a key bound already answers `replay` and writes nothing.
   */
  createWorkflow(wf: NewWorkflow, publishDueAt: number, opts?: CreateWorkflowOptions): Promise<CreateWorkflowResult>;
  getWorkflow(id: string): Promise<WorkflowRecord | null>;
  /** A tenant's workflows, newest first. */
  listWorkflows(tenant: string, limit: number, after?: ListCursor): Promise<{ workflows: WorkflowRecord[]; next: ListCursor | null }>;
  /**
   * Cancels every step not finished; a workflow of another tenant than `tenant` (when given) is
   * `missing`. When it cancels, it also releases `idempotencyKey` (a createWorkflow binding of
   * `tenant`, default DEFAULT_TENANT) if that names this workflow, as failQueued does for a
   * task: a workflow whose first steps could not be published leaves the key free for the
   * client's retry.
   */
  cancelWorkflow(id: string, reason: string | null, tenant?: string, idempotencyKey?: string): Promise<WorkflowCancelResult>;
  /** Up to `limit` events of all the workflow's steps after `after`, oldest first. */
  workflowEvents(id: string, after: string | null, limit: number): Promise<WorkflowEvent[]>;
  watchWorkflow(id: string): Promise<TaskWatch>;
  /**
   * failed or cancelled → queued with a fresh set of attempts (attempt 0, error cleared, its
   * history kept with a `status` event marking the rerun), out of the dead letters, its outbox
   * armed at `publishDueAt`. A task of another tenant than `tenant` (when given) is `missing`.
   * A rerun is new work: with a `charge` it spends the task's cost from the tenant's quota
   * again, in the same atomic step (`quota_exceeded` when it does not fit), and a cancel before
   * it starts gives back that spend. Without one it is free.
   */
  rerun(id: string, publishDueAt: number, tenant?: string, charge?: RerunCharge): Promise<RerunResult>;
  /** The tenant's tasks that failed after their attempts (the dead letters), newest first. */
  deadLetters(q: DeadLetterQuery): Promise<ListPage>;

  /** Throws an UnavailableError when the store cannot be reached. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
