/**
 * The Scheduler: fires cron schedules. Every API and worker process runs one; each tick it
 * takes the schedules that are due (ScheduleStore.lease: one replica per schedule at a time),
 * works out which slots to fire under the schedule's catch-up policy (`planFirings`), submits
 * each slot's task through the normal submission path (api/submit.ts) with the
 * Idempotency-Key `schedule:<id>:<slot ms>`, and records the firing (ScheduleStore.commit, a
 * compare-and-set on the schedule's next run). A replica that dies mid-firing loses its lease;
 * the next one submits the same key and gets the same task: one task per slot.
 */
import type { Cron } from 'croner';
import { IdempotencyKeyReusedError, TooManyRequestsError, ValidationError, errorMessage } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { submitTask, type SubmitDeps, type SubmitRequest } from '../../api/submit.ts';
import { cronOf, slotAfter } from './cron.ts';
import type { CatchUpPolicy, ScheduleRecord, ScheduleStore } from './port.ts';

export interface PlanOptions {
  /** Missed slots older than this are never fired (SCHEDULE_CATCH_UP_SECONDS). */
  catchUpMs: number;
  /** A slot picked up within this long of its time is on time, and fires under every policy. */
  onTimeMs: number;
  /** `all`: at most this many missed slots fire (the newest), per pickup (SCHEDULE_CATCH_UP_MAX). */
  maxCatchUp: number;
}

export interface FiringPlan {
  /** The slots to fire, oldest first. */
  fire: number[];
  /** Slots passed over (all older than the first to fire). */
  skipped: number;
  /** The first slot after `now`: the schedule's next run once these have fired. */
  next: number | null;
}

/**
 * Missed slots are counted one by one (croner takes some 0.2 ms a slot with a time zone) up to
 * this many; a longer gap is jumped over and counts as this many in `skipped`.
 */
export const SKIP_COUNT_LIMIT = 1000;

/** The newest `n` slots before `before`, oldest first. */
function slotsBefore(cron: Cron, before: number, n: number): number[] {
  return cron
    .previousRuns(n, new Date(before))
    .map((d) => d.getTime())
    .reverse();
}

/**
 * Which slots from `nextRunAt` up to `now` fire. Slots within `onTimeMs` of now are on time and
 * fire. Older ones were missed (no scheduler ran, or Redis was down):
 * - `latest`: the most recent missed slot fires if it is younger than `catchUpMs`; the others are skipped;
 * - `none`: every missed slot is skipped;
 * - `all`: every missed slot younger than `catchUpMs` fires, oldest first, at most `maxCatchUp`
 *   of them (the newest); the older ones are skipped.
 */
export function planFirings(cron: Cron, nextRunAt: number, policy: CatchUpPolicy, now: number, opts: PlanOptions): FiringPlan {
  const onTimeFrom = now - opts.onTimeMs;
  const onTime: number[] = [];
  let slot = slotAfter(cron, Math.max(nextRunAt, onTimeFrom) - 1);
  while (slot !== null && slot <= now) {
    onTime.push(slot);
    slot = slotAfter(cron, slot);
  }
  if (nextRunAt >= onTimeFrom) return { fire: onTime, skipped: 0, next: slot };
  // Missed: the slots in [nextRunAt, onTimeFrom).
  const young = (t: number) => t >= nextRunAt && now - t <= opts.catchUpMs;
  const late = policy === 'none' ? [] : slotsBefore(cron, onTimeFrom, policy === 'latest' ? 1 : opts.maxCatchUp).filter(young);
  let missed = 0;
  for (let t: number | null = nextRunAt; t !== null && t < onTimeFrom && missed < SKIP_COUNT_LIMIT; t = slotAfter(cron, t)) missed++;
  const skipped = missed >= SKIP_COUNT_LIMIT ? SKIP_COUNT_LIMIT : missed - late.length;
  return { fire: [...late, ...onTime], skipped, next: slot };
}

/** Batches of due schedules one tick takes at most. */
const MAX_ROUNDS = 50;

/** The Idempotency-Key of a slot's task. */
export const firingKey = (scheduleId: string, slotAt: number): string => `schedule:${scheduleId}:${slotAt}`;

export interface SchedulerOptions {
  schedules: ScheduleStore;
  /** The submission path's dependencies (store, broker, registry, limits…), as the API's; its metrics count firings as source `schedule`. */
  submit: SubmitDeps;
  logger: Logger;
  /** Attempts of a task whose schedule and type set none (MAX_ATTEMPTS). */
  defaultMaxAttempts: number;
  /** Pause between ticks. Default 1000 ms (SCHEDULER_TICK_MS). */
  tickMs?: number;
  /** SCHEDULE_CATCH_UP_SECONDS, in ms. Default 3 600 000. */
  catchUpMs?: number;
  /** SCHEDULE_CATCH_UP_MAX. Default 100. */
  maxCatchUp?: number;
  /** Default: the larger of 5 s and three ticks. */
  onTimeMs?: number;
  /** How long a replica holds a schedule while it fires it; renewed per slot. Default 30 000 ms. */
  leaseMs?: number;
  /** Wait before a firing that failed for a while (Redis or the broker down, the tenant's rate limit) is tried again. Default 2000 ms. */
  retryMs?: number;
  /** Schedules per tick. Default 100. */
  batch?: number;
  /** The clock (tests). Default Date.now. */
  now?: () => number;
}

type Outcome = { kind: 'fired'; taskId: string; replayed: boolean } | { kind: 'refused'; code: string; message: string } | { kind: 'retry'; err: unknown };

export class Scheduler {
  private readonly o: Required<Omit<SchedulerOptions, 'schedules' | 'submit' | 'logger' | 'defaultMaxAttempts'>>;
  private stopped = true;
  /** Set by stop(): a tick in flight ends after the schedule it is firing. */
  private halted = false;
  private timer: NodeJS.Timeout | undefined;
  private current: Promise<unknown> = Promise.resolve();
  private failingSince = 0;
  private lastWarn = 0;
  readonly stats = { fired: 0, replayed: 0, skipped: 0, refused: 0, retried: 0 };

  constructor(private readonly opts: SchedulerOptions) {
    const tickMs = opts.tickMs ?? 1000;
    this.o = {
      tickMs,
      catchUpMs: opts.catchUpMs ?? 3_600_000,
      maxCatchUp: opts.maxCatchUp ?? 100,
      onTimeMs: opts.onTimeMs ?? Math.max(5000, 3 * tickMs),
      leaseMs: opts.leaseMs ?? 30_000,
      retryMs: opts.retryMs ?? 2000,
      batch: opts.batch ?? 100,
      now: opts.now ?? Date.now,
    };
  }

  /** Starts ticking (the first tick at once). */
  start(): this {
    if (!this.stopped) return this;
    this.stopped = false;
    this.halted = false;
    this.loop();
    return this;
  }

  /** Stops ticking; resolves when the tick in flight has ended (its firing recorded). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.halted = true;
    clearTimeout(this.timer);
    await this.current;
  }

  private loop(): void {
    if (this.stopped) return;
    this.current = this.tick()
      .then(() => {
        if (this.failingSince) this.opts.logger.info('scheduler ticks work again', { failed_for_ms: Date.now() - this.failingSince });
        this.failingSince = 0;
      })
      .catch((err: unknown) => {
        const now = Date.now();
        this.failingSince ||= now;
        if (now - this.lastWarn < 30_000) return;
        this.lastWarn = now;
        this.opts.logger.warn('scheduler tick failed; retrying every tick', { err: errorMessage(err), failing_for_ms: now - this.failingSince });
      })
      .finally(() => {
        if (!this.stopped) this.timer = setTimeout(() => this.loop(), this.o.tickMs);
      });
  }

  /** One pass over the due schedules; answers how many tasks it created (or found, after a takeover). */
  async tick(): Promise<number> {
    let fired = 0;
    // Batch after batch while full (many schedules due at once), so none waits a tick per batch
    // and turns "missed"; every id answered is then leased or dropped, so each batch is new.
    for (let round = 0; round < MAX_ROUNDS && !this.halted; round++) {
      const ids = await this.opts.schedules.due(this.o.now(), this.o.batch);
      for (const id of ids) {
        if (this.halted) break;
        fired += await this.runSchedule(id);
      }
      if (ids.length < this.o.batch) break;
    }
    return fired;
  }

  private async runSchedule(id: string): Promise<number> {
    const { schedules, logger } = this.opts;
    const now = this.o.now();
    const s = await schedules.lease(id, now, this.o.leaseMs);
    if (!s) return 0; // another replica has it, or it was paused or deleted meanwhile
    if (s.nextRunAt === null) {
      await schedules.commit(id, null, { nextRunAt: null, dueAt: null, updatedAt: now });
      return 0;
    }
    let cron: Cron;
    try {
      cron = cronOf(s.cron, s.timezone);
    } catch (err) {
      // Refused at creation, so only a library or runtime change gets here: stop firing, say why.
      logger.error('schedule: its cron expression no longer parses; it will not fire', { schedule_id: id, cron: s.cron, err: errorMessage(err) });
      await schedules.commit(id, s.nextRunAt, {
        nextRunAt: null,
        dueAt: null,
        updatedAt: now,
        error: { code: 'invalid_cron', message: errorMessage(err), slotAt: s.nextRunAt },
      });
      return 0;
    }
    const plan = planFirings(cron, s.nextRunAt, s.catchUp, now, this.o);
    if (plan.skipped > 0) {
      this.stats.skipped += plan.skipped;
      logger.warn('schedule: missed slots skipped', {
        schedule_id: id,
        tenant: s.tenant,
        catch_up: s.catchUp,
        skipped: plan.skipped,
        from: new Date(s.nextRunAt).toISOString(),
        firing: plan.fire.length,
      });
    }
    if (plan.fire.length === 0) {
      await schedules.commit(id, s.nextRunAt, { nextRunAt: plan.next, dueAt: plan.next, updatedAt: now, skipped: plan.skipped });
      return 0;
    }
    let expected: number = s.nextRunAt;
    let fired = 0;
    for (const [i, slot] of plan.fire.entries()) {
      const after = plan.fire[i + 1] ?? plan.next;
      const last = i === plan.fire.length - 1;
      const skipped = i === 0 ? plan.skipped : 0;
      const outcome = await this.fire(s, slot);
      const at = this.o.now();
      if (outcome.kind === 'retry') {
        // Redis, the broker or the tenant's rate limit: this slot again after a pause (the
        // policy decides, then, if it is still worth firing).
        this.stats.retried++;
        const cause = outcome.err;
        logger.warn('schedule: could not submit a firing; trying again', {
          schedule_id: id,
          slot: new Date(slot).toISOString(),
          err: errorMessage(cause),
        });
        await schedules.commit(id, expected, { nextRunAt: slot, dueAt: at + this.o.retryMs, updatedAt: at, skipped });
        return fired;
      }
      const dueAt = last ? after : at + this.o.leaseMs;
      let result: 'ok' | 'paused' | 'conflict';
      if (outcome.kind === 'fired') {
        fired++;
        this.stats.fired++;
        if (outcome.replayed) this.stats.replayed++;
        logger.info('schedule fired', {
          schedule_id: id,
          tenant: s.tenant,
          slot: new Date(slot).toISOString(),
          task_id: outcome.taskId,
          replayed: outcome.replayed,
        });
        result = await schedules.commit(id, expected, {
          nextRunAt: after,
          dueAt,
          updatedAt: at,
          fired: { slotAt: slot, taskId: outcome.taskId },
          skipped,
          error: null,
        });
      } else {
        this.stats.refused++;
        logger.warn('schedule: firing refused; slot skipped', { schedule_id: id, tenant: s.tenant, slot: new Date(slot).toISOString(), code: outcome.code });
        result = await schedules.commit(id, expected, {
          nextRunAt: after,
          dueAt,
          updatedAt: at,
          skipped: skipped + 1,
          error: { code: outcome.code, message: outcome.message, slotAt: slot },
        });
      }
      // Paused, deleted, resumed (a new next run) or taken over meanwhile: stop here.
      if (result !== 'ok') return fired;
      if (after === null) return fired;
      expected = after;
    }
    return fired;
  }

  private async fire(s: ScheduleRecord, slot: number): Promise<Outcome> {
    const { registry } = this.opts.submit;
    const type = registry.get(s.task.type);
    if (!type) return { kind: 'refused', code: 'unknown_type', message: `task type ${s.task.type} is not registered` };
    const input = type.input.safeParse(s.task.input);
    if (!input.success) {
      const issue = input.error.issues[0];
      const path = ['input', ...(issue?.path ?? [])].join('.');
      return { kind: 'refused', code: 'validation_failed', message: `${path}: ${issue?.message ?? 'invalid'}` };
    }
    const req: SubmitRequest = {
      type: s.task.type,
      input: input.data,
      userId: s.task.userId,
      priority: s.task.priority,
      maxAttempts: s.task.maxAttempts ?? type.maxAttempts ?? this.opts.defaultMaxAttempts,
    };
    try {
      const r = await submitTask({ ...this.opts.submit, source: 'schedule' }, s.tenant, req, firingKey(s.id, slot));
      return { kind: 'fired', taskId: r.replayed ? r.taskId : r.task.id, replayed: r.replayed };
    } catch (err) {
      // The slot's key names a task already (made from an earlier form of the input): that is its task.
      if (err instanceof IdempotencyKeyReusedError) return { kind: 'fired', taskId: err.taskId, replayed: true };
      if (err instanceof TooManyRequestsError && err.code === 'quota_exceeded') return { kind: 'refused', code: err.code, message: err.message };
      if (err instanceof ValidationError) return { kind: 'refused', code: err.code, message: err.message };
      return { kind: 'retry', err };
    }
  }
}
