/** The task record, its status machine, and the messages that carry tasks and results. */
import { z } from 'zod';

/**
 * `scheduled`: submitted with run_at/delay_ms, published by the relay when due. `waiting`: a
 * workflow step whose needs are not all done yet; it holds no message and no worker slot.
 */
export const TASK_STATUSES = ['scheduled', 'waiting', 'queued', 'running', 'done', 'failed', 'cancelled'] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];
export const TERMINAL_STATUSES: ReadonlySet<TaskStatus> = new Set(['done', 'failed', 'cancelled']);
export const isTerminal = (s: TaskStatus): boolean => TERMINAL_STATUSES.has(s);
/** A task that can be rerun (POST /tasks/:id/retry). */
export const RERUNNABLE_STATUSES: ReadonlySet<TaskStatus> = new Set(['failed', 'cancelled']);

export const PRIORITIES = ['high', 'normal', 'low'] as const;
export type Priority = (typeof PRIORITIES)[number];

/** The tenant of tasks created with AUTH=off, and of records and messages from before tenants. */
export const DEFAULT_TENANT = 'default';
const TENANT_RE = /^[a-z0-9][a-z0-9_-]{0,62}$/;
/** Tenant names go into keys as they are: lower-case letters, digits, `_` and `-`, at most 63. */
export const isTenant = (s: string): boolean => TENANT_RE.test(s);

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Task ids are UUIDs; anything else is rejected before a key is built from it. */
export const isTaskId = (s: string): boolean => UUID_RE.test(s);

export interface TaskError {
  code: string;
  message: string;
  retriable: boolean;
}

/** One task as stored. Times are epoch milliseconds; absent ones are null. */
export interface TaskRecord {
  id: string;
  /** Who owns it: the tenant of the API key that created it. */
  tenant: string;
  type: string;
  status: TaskStatus;
  input: unknown;
  userId: string | null;
  priority: Priority;
  /** Attempts started so far (a claim increments it). */
  attempt: number;
  maxAttempts: number;
  progress: number;
  message: string | null;
  /** What the handler streamed with partial(), concatenated (capped); '' when nothing. */
  output: string;
  result: unknown;
  error: TaskError | null;
  worker: string | null;
  leaseUntil: number | null;
  retryAt: number | null;
  /** Whether the result message has been published (so a redelivery need not publish it). */
  resultPublished: boolean;
  /** Whether the request message has been acknowledged by the broker at least once. */
  requestPublished: boolean;
  /** Quota units spent on it (0 when the tenant has no quota). */
  cost: number;
  /** Start (epoch ms) of the quota window its units came from; null when none were spent. */
  quotaWindow: number | null;
  /** The tenant's quota was short, so the type's cheaper input runs instead (seed 000). */
  downgraded: boolean;
  /** W3C trace context (`traceparent`, `tracestate`) of its submission; {} when untraced. Republishes carry it on. */
  traceContext: Record<string, string>;
  /** When a delayed task is due (run_at / delay_ms); null when it was not delayed. */
  runAt: number | null;
  /** The workflow it is a step of, and its step id there; null when it is a plain task. */
  workflowId: string | null;
  step: string | null;
  /** Task ids of the steps it needs (all must end done before it is published). */
  needs: string[];
  /** How often it was rerun (POST /tasks/:id/retry, a redrive). */
  reruns: number;
  createdAt: number;
  startedAt: number | null;
  finishedAt: number | null;
  updatedAt: number;
}

/**
 * One entry of a task's execution history, and one server-sent event. Ids are Redis stream
 * ids (`<ms>-<seq>`): they grow with every event of a task, so "after id X" is exact.
 */
/** `workflow`: a workflow's own end (running → done, failed or cancelled), in its stream only. */
export const EVENT_TYPES = ['status', 'progress', 'log', 'partial', 'done', 'failed', 'cancelled', 'workflow'] as const;
export type TaskEventType = (typeof EVENT_TYPES)[number];
export const TERMINAL_EVENTS: ReadonlySet<TaskEventType> = new Set(['done', 'failed', 'cancelled']);

export interface TaskEvent {
  id: string;
  type: TaskEventType;
  data: Record<string, unknown>;
}

/** Epoch ms of an event, from its id. */
export const eventTime = (id: string): number => Number(id.split('-')[0]);

const EVENT_ID_RE = /^\d{1,15}-\d{1,15}$/;
export const isEventId = (s: string): boolean => EVENT_ID_RE.test(s);

/** What a handler may add to the history itself (progress also sets the record's progress and message). */
export type HandlerEvent =
  | { type: 'progress'; data: { percent: number; message: string | null } }
  | { type: 'log'; data: { level: string; message: string; data?: Record<string, unknown> } }
  | { type: 'partial'; data: { chunk: string } };

/** What the API hands to the store to create a task. */
export interface NewTask {
  id: string;
  /** Default: DEFAULT_TENANT. */
  tenant?: string;
  /** Trace context of the submission (see TaskRecord.traceContext). */
  traceContext?: Record<string, string>;
  type: string;
  input: unknown;
  userId: string | null;
  priority: Priority;
  maxAttempts: number;
  createdAt: number;
  /** A delayed task: `scheduled` until then (the relay publishes it when due). */
  runAt?: number;
}

// --- messages ---------------------------------------------------------------------------

export const requestMessageSchema = z.object({
  v: z.literal(1),
  task_id: z.string().refine(isTaskId, 'must be a UUID'),
  // Messages from before tenants carry none.
  tenant: z.string().refine(isTenant, 'must be a tenant name').default(DEFAULT_TENANT),
  type: z.string().min(1),
  input: z.unknown(),
  user_id: z.string().nullable(),
  priority: z.enum(PRIORITIES),
  created_at: z.string(),
});
export type RequestMessage = z.infer<typeof requestMessageSchema>;

export interface ResultMessage {
  v: 1;
  task_id: string;
  tenant: string;
  type: string;
  status: 'done' | 'failed' | 'cancelled';
  result?: unknown;
  error?: TaskError;
  user_id: string | null;
  attempt: number;
  started_at: string | null;
  finished_at: string | null;
  duration_ms: number | null;
}

/** Epoch ms as ISO 8601, the form of every time on the wire. */
export const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

export type RequestFields = Pick<TaskRecord, 'id' | 'type' | 'input' | 'userId' | 'priority' | 'createdAt'> & {
  tenant?: string;
  traceContext?: Record<string, string>;
};

export function toRequestMessage(t: RequestFields): RequestMessage {
  return {
    v: 1,
    task_id: t.id,
    tenant: t.tenant ?? DEFAULT_TENANT,
    type: t.type,
    input: t.input,
    user_id: t.userId,
    priority: t.priority,
    created_at: new Date(t.createdAt).toISOString(),
  };
}

export function toResultMessage(t: TaskRecord): ResultMessage {
  if (!isTerminal(t.status)) throw new Error(`task ${t.id} is ${t.status}, not terminal`);
  const msg: ResultMessage = {
    v: 1,
    task_id: t.id,
    tenant: t.tenant,
    type: t.type,
    status: t.status as ResultMessage['status'],
    user_id: t.userId,
    attempt: t.attempt,
    started_at: iso(t.startedAt),
    finished_at: iso(t.finishedAt),
    duration_ms: t.startedAt !== null && t.finishedAt !== null ? t.finishedAt - t.startedAt : null,
  };
  if (t.status === 'done') msg.result = t.result;
  else if (t.error) msg.error = t.error;
  return msg;
}
