/**
 * Cron schedules: the record and the storage port. A schedule creates one task per firing of
 * its cron expression (in its time zone), through the normal submission path; the Scheduler
 * (scheduler.ts) runs in every API and worker process and fires each slot exactly once.
 *
 * How replicas share the work: every active schedule sits in a "due" index under the time it
 * is next due. A scheduler takes a due schedule with `lease`, which moves its due time to the
 * end of the lease (so no other replica takes it meanwhile, and another does once the lease
 * runs out if the holder dies); it then submits the slot's task with the Idempotency-Key
 * `schedule:<id>:<slot ms>` and records the firing with `commit`, a compare-and-set on
 * `nextRunAt`. A replica that took over an unfinished firing submits the same key and gets the
 * same task back: one task per slot.
 */
import type { Priority } from '../task.ts';

/** What happens to slots missed while no scheduler ran (an outage): see scheduler.ts `planFirings`. */
export const CATCH_UP_POLICIES = ['latest', 'none', 'all'] as const;
export type CatchUpPolicy = (typeof CATCH_UP_POLICIES)[number];

const SCHEDULE_ID_RE = /^sch_[0-9a-f]{24}$/;
/** Schedule ids are `sch_` and 24 hex digits; anything else is refused before a key is built from it. */
export const isScheduleId = (s: string): boolean => SCHEDULE_ID_RE.test(s);

/** The task each firing submits. */
export interface ScheduledTask {
  type: string;
  /** Checked against the type's schema when the schedule is created, and again at each firing. */
  input: unknown;
  userId: string | null;
  priority: Priority;
  /** Null: the type's own, else MAX_ATTEMPTS. */
  maxAttempts: number | null;
}

export interface ScheduleError {
  code: string;
  message: string;
  /** The slot (epoch ms) whose firing failed. */
  slotAt: number;
}

/** One schedule as stored. Times are epoch milliseconds. */
export interface ScheduleRecord {
  id: string;
  tenant: string;
  name: string | null;
  cron: string;
  /** IANA time zone the cron expression is read in, e.g. `Europe/Berlin`. */
  timezone: string;
  task: ScheduledTask;
  catchUp: CatchUpPolicy;
  paused: boolean;
  createdAt: number;
  updatedAt: number;
  /** The next slot to fire; null when the expression has no future run (or never had one). */
  nextRunAt: number | null;
  /** The slot of the last firing (its scheduled time, not when it ran). */
  lastFiredAt: number | null;
  lastTaskId: string | null;
  /** Firings that created (or found, after a takeover) their task. */
  fired: number;
  /** Slots not fired: missed beyond the catch-up policy, or refused (see lastError). */
  skipped: number;
  /** The last firing that could not create its task for good (quota, an input the type no longer takes); null after a firing succeeds. */
  lastError: ScheduleError | null;
}

/** What a firing changes (see ScheduleStore.commit). */
export interface ScheduleCommit {
  nextRunAt: number | null;
  /** When the schedule is due again: `nextRunAt`, or later (the holder keeps its lease while it fires more slots, or backs off). */
  dueAt: number | null;
  updatedAt: number;
  /** Set when a slot fired. */
  fired?: { slotAt: number; taskId: string };
  /** Slots skipped by this step. */
  skipped?: number;
  /** A firing refused for good; `null` clears the last one. Absent: unchanged. */
  error?: ScheduleError | null;
}

export type CommitResult = 'ok' | 'paused' | 'conflict';

export interface ScheduleCursor {
  createdAt: number;
  id: string;
}

export interface SchedulePage {
  schedules: ScheduleRecord[];
  /** Null on the last page. */
  next: ScheduleCursor | null;
}

export interface ScheduleStore {
  /** Stores a new schedule (and puts it in the due index unless it is paused or has no next run). */
  create(s: ScheduleRecord): Promise<void>;
  get(id: string): Promise<ScheduleRecord | null>;
  /** The tenant's schedules, newest first. */
  list(tenant: string, limit: number, after?: ScheduleCursor): Promise<SchedulePage>;
  /**
   * Pauses (out of the due index) or resumes (due at `nextRunAt`, computed by the caller from
   * now: slots of the paused time are not fired) a schedule of `tenant`. Resuming one that is
   * not paused changes nothing. Null when there is no such schedule of that tenant.
   */
  setPaused(id: string, tenant: string, paused: boolean, nextRunAt: number | null, now: number): Promise<ScheduleRecord | null>;
  /** Deletes a schedule of `tenant`; false when there is none. A firing in flight may still create its task. */
  delete(id: string, tenant: string): Promise<boolean>;
  /** Ids of active schedules due at `now` (their next run has come and no replica holds them), earliest first. */
  due(now: number, limit: number): Promise<string[]>;
  /**
   * Takes a due schedule for `leaseMs`: atomically, if it is still due at `now`, not paused,
   * and nobody holds it, its due time moves to `now + leaseMs` and the record is answered;
   * otherwise null. Two replicas racing for one schedule: exactly one gets it.
   */
  lease(id: string, now: number, leaseMs: number): Promise<ScheduleRecord | null>;
  /**
   * Records a step of a firing, if the schedule's `nextRunAt` is still `expectedNextRunAt`
   * (compare-and-set). Answers `conflict`, changing nothing, when it is not (resumed, deleted,
   * or another replica moved on); `paused` when it was recorded but the schedule is paused
   * now (it stays out of the due index, and the holder stops firing); otherwise `ok`.
   */
  commit(id: string, expectedNextRunAt: number | null, c: ScheduleCommit): Promise<CommitResult>;
  ping(): Promise<void>;
  close(): Promise<void>;
}
