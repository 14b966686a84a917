/**
 * The API's answers, declared once: the server builds them here and the typed client
 * re-exports the same types, so the two cannot drift apart. Times are ISO 8601 strings.
 */
import type { QuotaUsage, TaskCounts, WorkerInfo, WorkflowEvent, WorkflowRecord, WorkflowStatus } from './store/port.ts';
import { eventTime, iso, type Priority, type TaskError, type TaskEvent, type TaskRecord, type TaskStatus } from './task.ts';

/** A task as GET /tasks/:id answers it. */
export interface TaskView {
  task_id: string;
  /** The tenant that owns it (of the API key that created it). */
  tenant: string;
  status: TaskStatus;
  type: string;
  user_id: string | null;
  priority: Priority;
  /** 0-100. */
  progress: number;
  message: string | null;
  /** What the handler streamed as `partial` chunks, concatenated; null when nothing. */
  output: string | null;
  /** The handler's result once `done`; null before. */
  result: unknown;
  error: TaskError | null;
  attempts: number;
  max_attempts: number;
  /** The tenant's quota was short, so the type's cheaper form runs (seed 000's downgrade). */
  downgraded: boolean;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  updated_at: string;
  retry_at: string | null;
  /** When a delayed task (run_at / delay_ms) is due; null when it was not delayed. */
  run_at: string | null;
  /** The workflow it is a step of, and its step id there; null for a plain task. */
  workflow_id: string | null;
  step: string | null;
  /** How often it was rerun (POST /tasks/:id/retry, a dead-letter redrive). */
  reruns: number;
  /** Only with `?history=true`. */
  history?: TaskEventView[];
}

/** The data of each event type; `at` is when it happened. */
export interface TaskEventData {
  status: { status: TaskStatus; attempt: number; at: string; [field: string]: unknown };
  progress: { percent: number; message: string | null; at: string };
  log: { level: string; message: string; data?: unknown; at: string };
  partial: { chunk: string; at: string };
  done: { result: unknown; at: string };
  failed: { error: TaskError; at: string };
  cancelled: { at: string; reason?: string | null };
  /** A workflow's own end, in its stream (GET /workflows/:id/events) only. */
  workflow: { status: WorkflowStatus; error?: TaskError; at: string };
}
export type TaskEventName = keyof TaskEventData;

/** One entry of a task's history: an SSE event of GET /tasks/:id/events, or of `history`. */
export type TaskEventView = { [E in TaskEventName]: { id: string; event: E; data: TaskEventData[E] } }[TaskEventName];

/**
 * The 202 of POST /tasks: the task is on its way. `status` is `queued`, except when an
 * Idempotency-Key replays an earlier submission: then it is that task's status now.
 */
export interface AcceptedView {
  task_id: string;
  status: TaskStatus;
  type: string;
  status_url: string;
  /** The tenant's quota was short, so the type's cheaper form runs (seed 000's downgrade). */
  downgraded: boolean;
  /** Null only on a replay whose task has expired since (IDEMPOTENCY_TTL_SECONDS > RESULT_TTL_SECONDS). */
  created_at: string | null;
  /** A delayed task (status `scheduled`): when it is due. */
  run_at?: string;
}

/** A page of GET /tasks. */
export interface TaskListView {
  tasks: TaskView[];
  /** Null on the last page. */
  next_cursor: string | null;
}

const isoOf = (ms: number): string => new Date(ms).toISOString();

export function toEventView(e: TaskEvent): TaskEventView {
  const data: Record<string, unknown> = { ...e.data, at: isoOf(eventTime(e.id)) };
  // Times are epoch ms in the store and ISO 8601 on the wire, as in the task view.
  if (typeof data.retry_at === 'number') data.retry_at = iso(data.retry_at);
  if (typeof data.run_at === 'number') data.run_at = iso(data.run_at);
  return { id: e.id, event: e.type, data } as TaskEventView;
}

export function toTaskView(t: TaskRecord): TaskView {
  return {
    task_id: t.id,
    tenant: t.tenant,
    status: t.status,
    type: t.type,
    user_id: t.userId,
    priority: t.priority,
    progress: t.progress,
    message: t.message,
    output: t.output === '' ? null : t.output,
    result: t.status === 'done' ? t.result : null,
    error: t.error,
    attempts: t.attempt,
    max_attempts: t.maxAttempts,
    downgraded: t.downgraded,
    created_at: isoOf(t.createdAt),
    started_at: iso(t.startedAt),
    finished_at: iso(t.finishedAt),
    updated_at: isoOf(t.updatedAt),
    retry_at: iso(t.retryAt),
    run_at: iso(t.runAt ?? null),
    workflow_id: t.workflowId ?? null,
    step: t.step ?? null,
    reruns: t.reruns ?? 0,
  };
}

export function toAcceptedView(
  t: Pick<TaskRecord, 'id' | 'status' | 'type' | 'createdAt' | 'downgraded'> & { runAt?: number | null },
  statusUrl: string,
): AcceptedView {
  const v: AcceptedView = { task_id: t.id, status: t.status, type: t.type, status_url: statusUrl, downgraded: t.downgraded, created_at: isoOf(t.createdAt) };
  if (t.runAt !== undefined && t.runAt !== null) v.run_at = isoOf(t.runAt);
  return v;
}

// --- workflows and dead letters ------------------------------------------------------------

/** One step as GET /workflows/:id shows it. */
export interface WorkflowStepView {
  /** The step id of the request. */
  id: string;
  task_id: string;
  type: string;
  /** Step ids it needs. */
  needs: string[];
  status: TaskStatus;
  progress: number;
  message: string | null;
  attempts: number;
  error: TaskError | null;
  /** The step's result once `done`. */
  result: unknown;
  started_at: string | null;
  finished_at: string | null;
}

/** GET /workflows/:id. */
export interface WorkflowView {
  workflow_id: string;
  name: string | null;
  status: WorkflowStatus;
  /** The mean of its steps' progress, 0-100. */
  progress: number;
  user_id: string | null;
  /** The task whose handler started it (ctx.spawn), or null. */
  parent_task_id: string | null;
  error: TaskError | null;
  created_at: string;
  finished_at: string | null;
  steps: WorkflowStepView[];
}

/** An entry of GET /workflows (no step details). */
export interface WorkflowSummaryView {
  workflow_id: string;
  name: string | null;
  status: WorkflowStatus;
  steps: number;
  user_id: string | null;
  parent_task_id: string | null;
  created_at: string;
  finished_at: string | null;
}

export interface WorkflowListView {
  workflows: WorkflowSummaryView[];
  next_cursor: string | null;
}

/** The 202 of POST /workflows. */
export interface WorkflowAcceptedView {
  workflow_id: string;
  status: WorkflowStatus;
  /** Step id → task id. */
  steps: Record<string, string>;
  status_url: string;
  events_url: string;
}

/** An SSE event of GET /workflows/:id/events: a step's event, with its task and step. */
export type WorkflowEventView = TaskEventView & { data: { task_id: string | null; step: string | null } };

export function toWorkflowSummary(w: WorkflowRecord): WorkflowSummaryView {
  return {
    workflow_id: w.id,
    name: w.name,
    status: w.status,
    steps: w.steps.length,
    user_id: w.userId,
    parent_task_id: w.parentTaskId,
    created_at: isoOf(w.createdAt),
    finished_at: iso(w.finishedAt),
  };
}

/** `tasks`: the records of its steps, by task id (a step whose record expired shows as cancelled). */
export function toWorkflowView(w: WorkflowRecord, tasks: Map<string, TaskRecord>): WorkflowView {
  const stepOf = new Map(w.steps.map((s) => [s.taskId, s.step]));
  const steps = w.steps.map(({ step, taskId }): WorkflowStepView => {
    const t = tasks.get(taskId);
    return {
      id: step,
      task_id: taskId,
      type: t?.type ?? '',
      needs: (t?.needs ?? []).map((n) => stepOf.get(n) ?? n),
      status: t?.status ?? 'cancelled',
      progress: t?.progress ?? 0,
      message: t?.message ?? null,
      attempts: t?.attempt ?? 0,
      error: t?.error ?? null,
      result: t?.status === 'done' ? t.result : null,
      started_at: iso(t?.startedAt ?? null),
      finished_at: iso(t?.finishedAt ?? null),
    };
  });
  const progress = steps.length === 0 ? 0 : Math.round(steps.reduce((n, s) => n + (s.status === 'done' ? 100 : s.progress), 0) / steps.length);
  return {
    workflow_id: w.id,
    name: w.name,
    status: w.status,
    progress,
    user_id: w.userId,
    parent_task_id: w.parentTaskId,
    error: w.error,
    created_at: isoOf(w.createdAt),
    finished_at: iso(w.finishedAt),
    steps,
  };
}

export function toWorkflowEventView(e: WorkflowEvent): WorkflowEventView {
  const v = toEventView(e);
  return { ...v, data: { ...v.data, task_id: e.taskId || null, step: e.step || null } } as WorkflowEventView;
}

/** An entry of GET /dead-letters: a task that failed after its attempts. */
export interface DeadLetterView {
  task_id: string;
  type: string;
  /** The error code it failed with, and its message. */
  code: string;
  message: string;
  attempts: number;
  dead_at: string | null;
  user_id: string | null;
  workflow_id: string | null;
}

export interface DeadLetterListView {
  dead_letters: DeadLetterView[];
  next_cursor: string | null;
}

export function toDeadLetterView(t: TaskRecord): DeadLetterView {
  return {
    task_id: t.id,
    type: t.type,
    code: t.error?.code ?? 'unknown',
    message: t.error?.message ?? '',
    attempts: t.attempt,
    dead_at: iso(t.finishedAt),
    user_id: t.userId,
    workflow_id: t.workflowId ?? null,
  };
}

/** POST /dead-letters/redrive. */
export interface RedriveView {
  redriven: number;
  task_ids: string[];
}

/** GET /quota. */
export interface QuotaView {
  tenant: string;
  /** Units per window; 0 = unlimited. */
  units: number;
  window_seconds: number;
  spent: number;
  /** Null when unlimited. */
  remaining: number | null;
  /** When the window resets (windows are aligned to the epoch: a day starts at 00:00 UTC). */
  resets_at: string;
}

export function toQuotaView(q: QuotaUsage): QuotaView {
  return {
    tenant: q.tenant,
    units: q.units,
    window_seconds: q.windowSeconds,
    spent: q.spent,
    remaining: q.units === 0 ? null : Math.max(0, q.units - q.spent),
    resets_at: isoOf(q.resetsAt),
  };
}

/** A live worker in GET /stats. */
export interface WorkerView {
  id: string;
  host: string;
  concurrency: number;
  /** Tasks it was running at its last heartbeat. */
  running: number;
  started_at: string;
  /** Its last heartbeat. */
  seen_at: string | null;
  version: string;
}

/** GET /stats: the caller's tenant's tasks, the request backlog, the live workers. */
export interface StatsView {
  tenant: string;
  tasks: {
    by_status: Record<TaskStatus, number>;
    by_type: Record<string, number>;
    /** Tasks counted: the tenant's newest, at most the scan budget (LIST_SCAN_BUDGET, 2000). */
    scanned: number;
    /** True when the tenant has more live tasks than were counted. */
    truncated: boolean;
  };
  /** Request messages not yet consumed, per priority, for the whole deployment; null where the broker cannot tell (RocketMQ). */
  backlog: Record<Priority, number | null>;
  /** The workers of the deployment whose heartbeat is live. */
  workers: WorkerView[];
}

export function toWorkerView(w: WorkerInfo): WorkerView {
  return {
    id: w.id,
    host: w.host,
    concurrency: w.concurrency,
    running: w.running,
    started_at: isoOf(w.startedAt),
    seen_at: iso(w.seenAt ?? null),
    version: w.version,
  };
}

export function toStatsView(tenant: string, counts: TaskCounts, backlog: Record<Priority, number | null>, workers: WorkerInfo[]): StatsView {
  return {
    tenant,
    tasks: { by_status: counts.byStatus, by_type: counts.byType, scanned: counts.scanned, truncated: counts.truncated },
    backlog,
    workers: workers.map(toWorkerView),
  };
}
