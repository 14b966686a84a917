/** The schedule routes' answers (api/schedules.ts), declared once. Times are ISO 8601 strings. */
import { iso, type Priority } from '../task.ts';
import type { TaskView } from '../views.ts';
import type { CatchUpPolicy, ScheduleRecord } from './port.ts';

export interface ScheduleView {
  schedule_id: string;
  tenant: string;
  name: string | null;
  cron: string;
  /** The IANA time zone the expression is read in. */
  timezone: string;
  /** What happens to slots missed while no scheduler ran: see the README's Schedules section. */
  catch_up: CatchUpPolicy;
  /** The task each firing submits. */
  task: { type: string; input: unknown; user_id: string | null; priority: Priority; max_attempts: number | null };
  paused: boolean;
  created_at: string;
  updated_at: string;
  /** The next slot to fire; null while paused, or when the expression has no future run. */
  next_run_at: string | null;
  /** The slot (scheduled time) of the last firing. */
  last_fired_at: string | null;
  last_task_id: string | null;
  /** Firings that created their task. */
  fired: number;
  /** Slots not fired: missed past the catch-up policy, or refused (see last_error). */
  skipped: number;
  /** The last firing that could not create its task (quota exceeded, an input its type no longer takes); null once one succeeds. */
  last_error: { code: string; message: string; slot_at: string } | null;
}

/** GET /schedules/:id: the schedule with its coming slots and its last task. */
export interface ScheduleDetailView extends ScheduleView {
  /** The next slots (up to 5); empty while paused. */
  next_runs: string[];
  /** The task of the last firing, as GET /tasks/:id answers it; null before the first firing or once that task has expired. */
  last_task: TaskView | null;
}

export interface ScheduleListView {
  schedules: ScheduleView[];
  next_cursor: string | null;
}

export interface DeletedScheduleView {
  schedule_id: string;
  deleted: true;
}

const isoOf = (ms: number): string => new Date(ms).toISOString();

export function toScheduleView(s: ScheduleRecord): ScheduleView {
  return {
    schedule_id: s.id,
    tenant: s.tenant,
    name: s.name,
    cron: s.cron,
    timezone: s.timezone,
    catch_up: s.catchUp,
    task: { type: s.task.type, input: s.task.input, user_id: s.task.userId, priority: s.task.priority, max_attempts: s.task.maxAttempts },
    paused: s.paused,
    created_at: isoOf(s.createdAt),
    updated_at: isoOf(s.updatedAt),
    next_run_at: s.paused ? null : iso(s.nextRunAt),
    last_fired_at: iso(s.lastFiredAt),
    last_task_id: s.lastTaskId,
    fired: s.fired,
    skipped: s.skipped,
    last_error: s.lastError ? { code: s.lastError.code, message: s.lastError.message, slot_at: isoOf(s.lastError.slotAt) } : null,
  };
}
