/**
 * The Scheduler on the in-process stores, mostly with a fake clock: one task per slot with
 * replicas racing, a takeover after a replica died mid-firing, each catch-up policy after an
 * outage, pause, resume and delete, and firings that cannot create their task.
 */
import { describe, expect, it } from 'vitest';
import type { SubmitDeps } from '../../api/submit.ts';
import { submitTask } from '../../api/submit.ts';
import { defaultRegistry } from '../../worker/task-types.ts';
import { MemoryBroker } from '../broker/memory.ts';
import { silentLogger } from '../logger.ts';
import { MemoryTaskStore } from '../store/memory.ts';
import type { CreateOptions } from '../store/port.ts';
import type { NewTask } from '../task.ts';
import { cronOf, slotAfter, slotsFrom } from './cron.ts';
import { MemoryScheduleStore } from './memory.ts';
import type { CatchUpPolicy, ScheduleRecord } from './port.ts';
import { newSchedule } from './schedules.case.ts';
import { SKIP_COUNT_LIMIT, Scheduler, firingKey, planFirings, type SchedulerOptions } from './scheduler.ts';

const MIN = 60_000;
const T0 = Date.UTC(2026, 10, 23, 8, 0, 0); // a Monday, 08:00 UTC
const OPTS = { catchUpMs: 3_600_000, onTimeMs: 5000, maxCatchUp: 100 };
const minutely = cronOf('* * * * *', 'UTC');

describe('planFirings', () => {
  it('fires a slot that is on time, and names the next one', () => {
    expect(planFirings(minutely, T0, 'latest', T0 + 300, OPTS)).toEqual({ fire: [T0], skipped: 0, next: T0 + MIN });
    expect(planFirings(minutely, T0, 'none', T0 + 4999, OPTS)).toEqual({ fire: [T0], skipped: 0, next: T0 + MIN });
    // Several slots within the on-time window all fire (a second-level expression on a slow tick).
    const everySecond = cronOf('* * * * * *', 'UTC');
    expect(planFirings(everySecond, T0, 'none', T0 + 2500, OPTS)).toEqual({ fire: [T0, T0 + 1000, T0 + 2000], skipped: 0, next: T0 + 3000 });
  });

  it('latest: after an outage, fires the most recent missed slot once and skips the older ones', () => {
    // Down from 08:00 to 08:10:30: eleven slots missed, the one of 08:10 fires.
    expect(planFirings(minutely, T0, 'latest', T0 + 10 * MIN + 30_000, OPTS)).toEqual({ fire: [T0 + 10 * MIN], skipped: 10, next: T0 + 11 * MIN });
    // With an on-time slot as well, both fire.
    expect(planFirings(minutely, T0, 'latest', T0 + 10 * MIN + 2000, OPTS)).toEqual({ fire: [T0 + 9 * MIN, T0 + 10 * MIN], skipped: 9, next: T0 + 11 * MIN });
    // The most recent missed slot is older than the catch-up window: nothing fires.
    const daily = cronOf('0 9 * * *', 'Europe/Berlin'); // 08:00 UTC in November
    expect(planFirings(daily, T0, 'latest', T0 + 2 * 3_600_000, OPTS)).toEqual({ fire: [], skipped: 1, next: T0 + 24 * 3_600_000 });
    expect(planFirings(daily, T0, 'latest', T0 + 3_599_000, OPTS)).toEqual({ fire: [T0], skipped: 0, next: T0 + 24 * 3_600_000 });
  });

  it('none: skips every missed slot', () => {
    expect(planFirings(minutely, T0, 'none', T0 + 10 * MIN + 30_000, OPTS)).toEqual({ fire: [], skipped: 11, next: T0 + 11 * MIN });
    expect(planFirings(minutely, T0, 'none', T0 + 10 * MIN + 2000, OPTS)).toEqual({ fire: [T0 + 10 * MIN], skipped: 10, next: T0 + 11 * MIN });
  });

  it('all: fires every missed slot within the window, oldest first, the newest ones up to the cap', () => {
    const all = planFirings(minutely, T0, 'all', T0 + 10 * MIN + 30_000, OPTS);
    expect(all).toEqual({ fire: Array.from({ length: 11 }, (_, i) => T0 + i * MIN), skipped: 0, next: T0 + 11 * MIN });
    expect(planFirings(minutely, T0, 'all', T0 + 10 * MIN + 30_000, { ...OPTS, maxCatchUp: 3 })).toEqual({
      fire: [T0 + 8 * MIN, T0 + 9 * MIN, T0 + 10 * MIN],
      skipped: 8,
      next: T0 + 11 * MIN,
    });
    // Two hours down with a one-hour window: only the last hour's slots fire.
    const twoHours = planFirings(minutely, T0, 'all', T0 + 120 * MIN + 30_000, OPTS);
    expect(twoHours.fire).toHaveLength(60);
    expect(twoHours.fire[0]).toBe(T0 + 61 * MIN);
    expect(twoHours.skipped).toBe(61);
  });

  it('jumps over a long gap without walking every slot of it', () => {
    const everySecond = cronOf('* * * * * *', 'UTC');
    const now = T0 + 30 * 86_400_000 + 500;
    const started = performance.now();
    const plan = planFirings(everySecond, T0, 'none', now, OPTS);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(plan.fire).toEqual([now - 4500, now - 3500, now - 2500, now - 1500, now - 500]);
    expect(plan.next).toBe(now + 500);
    // Counted one by one up to the limit.
    expect(plan.skipped).toBe(SKIP_COUNT_LIMIT);
    expect(planFirings(everySecond, T0, 'latest', now, OPTS).fire).toEqual([now - 5500, now - 4500, now - 3500, now - 2500, now - 1500, now - 500]);
  });

  it('reads the expression in its time zone, daylight saving time included', () => {
    const berlin = cronOf('0 9 * * *', 'Europe/Berlin');
    expect(new Date(slotAfter(berlin, Date.UTC(2026, 2, 28, 12)) ?? 0).toISOString()).toBe('2026-03-29T07:00:00.000Z'); // CEST from that night
    expect(new Date(slotAfter(berlin, Date.UTC(2026, 2, 27, 12)) ?? 0).toISOString()).toBe('2026-03-28T08:00:00.000Z');
    expect(slotsFrom(minutely, T0, 3)).toEqual([T0, T0 + MIN, T0 + 2 * MIN]);
    expect(slotsFrom(minutely, T0 + 1, 2)).toEqual([T0 + MIN, T0 + 2 * MIN]);
    expect(slotAfter(cronOf('0 0 30 2 *', 'UTC'), T0)).toBeNull();
  });
});

/** A task store that notes the Idempotency-Key of every create: which slots were submitted. */
class KeyedStore extends MemoryTaskStore {
  readonly keys: string[] = [];
  /** Idempotency-Key → the id of the task first created under it. */
  readonly taskOf = new Map<string, string>();
  override create(task: NewTask, publishDueAt: number, opts: CreateOptions = {}) {
    if (opts.idempotency) {
      this.keys.push(opts.idempotency.key);
      if (!this.taskOf.has(opts.idempotency.key)) this.taskOf.set(opts.idempotency.key, task.id);
    }
    return super.create(task, publishDueAt, opts);
  }
}

function world(opts: { failPublish?: () => boolean } = {}) {
  let clock = T0;
  const store = new KeyedStore({}, () => clock);
  const broker = new MemoryBroker();
  /** Keys (task ids) of the request messages the broker accepted. */
  const published: string[] = [];
  const realPublish = broker.publish.bind(broker);
  broker.publish = async (topic, message) => {
    if (opts.failPublish?.()) throw new Error('broker down');
    await realPublish(topic, message);
    published.push(message.key);
  };
  const schedules = new MemoryScheduleStore();
  const submit: SubmitDeps = {
    store,
    broker,
    logger: silentLogger,
    registry: defaultRegistry(),
    requestTopic: 'req',
    publishTimeoutMs: 500,
    relayAfterMs: 5000,
    idempotencyTtlSeconds: 86_400,
    limits: { submitsPerSecond: 0, quotaUnits: 0, quotaWindowSeconds: 86_400 },
  };
  const scheduler = (over: Partial<SchedulerOptions> = {}) =>
    new Scheduler({ schedules, submit, logger: silentLogger, defaultMaxAttempts: 3, now: () => clock, ...over });
  const add = async (over: Partial<ScheduleRecord> = {}) => {
    const s = newSchedule({ nextRunAt: T0, createdAt: T0 - MIN, updatedAt: T0 - MIN, ...over });
    await schedules.create(s);
    return s;
  };
  const tasks = async (tenant = 'default') => (await store.list({ tenant, limit: 100 })).tasks;
  /** The slots (epoch ms) whose task was created, in order. */
  const firedSlots = (id: string) => store.keys.filter((k) => k.startsWith(`schedule:${id}:`)).map((k) => Number(k.split(':')[2]));
  return {
    store,
    broker,
    published,
    schedules,
    submit,
    scheduler,
    add,
    tasks,
    firedSlots,
    at: (ms: number) => (clock = ms),
  };
}

describe('Scheduler', () => {
  it('creates one task per slot, with the schedule’s task, while replicas race for it', async () => {
    const w = world();
    const s = await w.add({
      task: { type: 'agent', input: { content: 'daily digest' }, userId: 'u7', priority: 'high', maxAttempts: 5 },
    });
    const replicas = [w.scheduler(), w.scheduler(), w.scheduler()];
    for (let i = 0; i < 5; i++) {
      w.at(T0 + i * MIN + 200);
      const fired = await Promise.all(replicas.map((r) => r.tick()));
      expect(fired.reduce((a, b) => a + b, 0)).toBe(1);
    }
    const tasks = await w.tasks();
    expect(tasks).toHaveLength(5);
    expect(w.firedSlots(s.id)).toEqual([0, 1, 2, 3, 4].map((i) => T0 + i * MIN));
    for (const t of tasks) expect(t).toMatchObject({ type: 'agent', input: { content: 'daily digest' }, userId: 'u7', priority: 'high', maxAttempts: 5 });
    expect(w.published).toHaveLength(5);
    const lastTaskId = w.store.taskOf.get(firingKey(s.id, T0 + 4 * MIN));
    expect(tasks.map((t) => t.id)).toContain(lastTaskId);
    expect(await w.schedules.get(s.id)).toMatchObject({ fired: 5, skipped: 0, lastFiredAt: T0 + 4 * MIN, lastTaskId, nextRunAt: T0 + 5 * MIN });
    // Nothing is due until the next slot.
    w.at(T0 + 4 * MIN + 59_000);
    expect(await Promise.all(replicas.map((r) => r.tick()))).toEqual([0, 0, 0]);
  });

  it('a replica that takes over from one that died mid-firing gets the same task back', async () => {
    const w = world();
    const s = await w.add();
    // The dead replica took the schedule and submitted the slot's task, then died before recording it.
    w.at(T0 + 100);
    const leased = await w.schedules.lease(s.id, T0 + 100, 30_000);
    expect(leased).not.toBeNull();
    const first = await submitTask(
      w.submit,
      'default',
      { type: 'agent', input: s.task.input, userId: 'u1', priority: 'normal', maxAttempts: 3 },
      firingKey(s.id, T0),
    );
    const other = w.scheduler({ leaseMs: 30_000 });
    // Held: nobody else fires it meanwhile.
    w.at(T0 + 10_000);
    expect(await other.tick()).toBe(0);
    // The lease runs out; the slot is still within the catch-up window, so it fires, with the same key.
    w.at(T0 + 30_200);
    expect(await other.tick()).toBe(1);
    expect(other.stats).toMatchObject({ fired: 1, replayed: 1 });
    expect(await w.tasks()).toHaveLength(1);
    expect((await w.schedules.get(s.id))?.lastTaskId).toBe(first.replayed ? null : first.task.id);
  });

  const outage = async (policy: CatchUpPolicy, downMs: number, over: Partial<SchedulerOptions> = {}) => {
    const w = world();
    const s = await w.add({ catchUp: policy });
    w.at(T0 + downMs);
    await w.scheduler(over).tick();
    return { w, s, rec: await w.schedules.get(s.id) };
  };

  it('catch_up latest: after an outage, one task for the most recent missed slot', async () => {
    const { w, s, rec } = await outage('latest', 10 * MIN + 30_000);
    expect(w.firedSlots(s.id)).toEqual([T0 + 10 * MIN]);
    expect(rec).toMatchObject({ fired: 1, skipped: 10, nextRunAt: T0 + 11 * MIN, lastFiredAt: T0 + 10 * MIN });
    // Down longer than SCHEDULE_CATCH_UP_SECONDS: nothing fires.
    const old = await outage('latest', 10 * MIN + 30_000, { catchUpMs: 20_000 });
    expect(old.w.firedSlots(old.s.id)).toEqual([]);
    expect(old.rec).toMatchObject({ fired: 0, skipped: 11, nextRunAt: T0 + 11 * MIN });
  });

  it('catch_up none: no task for the missed slots', async () => {
    const { w, s, rec } = await outage('none', 10 * MIN + 30_000);
    expect(w.firedSlots(s.id)).toEqual([]);
    expect(await w.tasks()).toEqual([]);
    expect(rec).toMatchObject({ fired: 0, skipped: 11, nextRunAt: T0 + 11 * MIN });
  });

  it('catch_up all: one task per missed slot, up to the cap', async () => {
    const { w, s, rec } = await outage('all', 10 * MIN + 30_000, { maxCatchUp: 4 });
    expect(w.firedSlots(s.id)).toEqual([7, 8, 9, 10].map((i) => T0 + i * MIN));
    expect(rec).toMatchObject({ fired: 4, skipped: 7, nextRunAt: T0 + 11 * MIN, lastFiredAt: T0 + 10 * MIN });
    expect(await w.tasks()).toHaveLength(4);
  });

  it('fires nothing while paused; resumed, it goes on from the next slot', async () => {
    const w = world();
    const s = await w.add({ tenant: 'acme' });
    const sch = w.scheduler();
    w.at(T0 + 100);
    expect(await sch.tick()).toBe(1);
    await w.schedules.setPaused(s.id, 'acme', true, null, T0 + 200);
    for (let i = 1; i <= 5; i++) {
      w.at(T0 + i * MIN + 100);
      expect(await sch.tick()).toBe(0);
    }
    w.at(T0 + 5 * MIN + 30_000);
    await w.schedules.setPaused(s.id, 'acme', false, slotAfter(minutely, T0 + 5 * MIN + 30_000), T0 + 5 * MIN + 30_000);
    w.at(T0 + 6 * MIN + 100);
    expect(await sch.tick()).toBe(1);
    expect(w.firedSlots(s.id)).toEqual([T0, T0 + 6 * MIN]);
    // Deleted: never again.
    await w.schedules.delete(s.id, 'acme');
    w.at(T0 + 7 * MIN + 100);
    expect(await sch.tick()).toBe(0);
    expect(await w.tasks('acme')).toHaveLength(2);
  });

  it('a slot the tenant’s quota cannot pay for is skipped, with the reason, and the next one fires', async () => {
    const w = world();
    await w.store.setTenantLimits('poor', { quotaUnits: 1 });
    const s = await w.add({ tenant: 'poor' });
    const sch = w.scheduler();
    w.at(T0 + 100);
    expect(await sch.tick()).toBe(1);
    w.at(T0 + MIN + 100);
    expect(await sch.tick()).toBe(0);
    const rec = await w.schedules.get(s.id);
    expect(rec).toMatchObject({ fired: 1, skipped: 1, nextRunAt: T0 + 2 * MIN, lastError: { code: 'quota_exceeded', slotAt: T0 + MIN } });
    expect(rec?.lastError?.message).toMatch(/quota units/);
    await w.store.setTenantLimits('poor', { quotaUnits: null });
    w.at(T0 + 2 * MIN + 100);
    expect(await sch.tick()).toBe(1);
    expect(await w.schedules.get(s.id)).toMatchObject({ fired: 2, lastError: null });
  });

  it('a slot whose task cannot be published is tried again, and creates one live task', async () => {
    let down = true;
    const w = world({ failPublish: () => down });
    const s = await w.add();
    const sch = w.scheduler({ retryMs: 2000 });
    w.at(T0 + 100);
    expect(await sch.tick()).toBe(0);
    expect(await w.schedules.get(s.id)).toMatchObject({ fired: 0, nextRunAt: T0 });
    // Not before the retry pause.
    w.at(T0 + 1000);
    expect(await sch.tick()).toBe(0);
    expect(sch.stats.retried).toBe(1);
    down = false;
    w.at(T0 + 2200);
    expect(await sch.tick()).toBe(1);
    const tasks = await w.tasks();
    // The first attempt's task failed (broker_unavailable) and released the key; the retry made the one that runs.
    expect(tasks.map((t) => t.status).sort()).toEqual(['failed', 'queued']);
    expect((await w.schedules.get(s.id))?.lastTaskId).toBe(tasks.find((t) => t.status === 'queued')?.id);
    expect(w.published).toHaveLength(1);
  });

  it('a task input its type no longer takes is refused, naming the field, and the schedule goes on', async () => {
    const w = world();
    const s = await w.add({ task: { type: 'agent', input: { content: 42 }, userId: null, priority: 'normal', maxAttempts: null } });
    const gone = await w.add({ task: { type: 'no_such_type', input: {}, userId: null, priority: 'normal', maxAttempts: null } });
    w.at(T0 + 100);
    expect(await w.scheduler().tick()).toBe(0);
    expect(await w.schedules.get(s.id)).toMatchObject({ skipped: 1, nextRunAt: T0 + MIN, lastError: { code: 'validation_failed' } });
    expect((await w.schedules.get(s.id))?.lastError?.message).toMatch(/^input\.content:/);
    expect(await w.schedules.get(gone.id)).toMatchObject({ skipped: 1, lastError: { code: 'unknown_type' } });
  });

  it('takes every due schedule in one tick, batch after batch', async () => {
    const w = world();
    const ids: string[] = [];
    for (let i = 0; i < 25; i++) ids.push((await w.add({ catchUp: 'none' })).id);
    w.at(T0 + 100);
    expect(await w.scheduler({ batch: 10 }).tick()).toBe(25);
    for (const id of ids) expect(w.firedSlots(id)).toEqual([T0]);
  });

  it('ticks on its own and stops cleanly (real time, a slot every second)', async () => {
    const w = world();
    const now = Date.now();
    const everySecond = cronOf('* * * * * *', 'UTC');
    const first = slotAfter(everySecond, now) ?? 0;
    const s = newSchedule({ cron: '* * * * * *', nextRunAt: first });
    await w.schedules.create(s);
    const replicas = [w.scheduler({ now: Date.now, tickMs: 100 }).start(), w.scheduler({ now: Date.now, tickMs: 100 }).start()];
    await new Promise((r) => setTimeout(r, 2600));
    await Promise.all(replicas.map((r) => r.stop()));
    const stoppedAt = Date.now();
    const slots = w.firedSlots(s.id);
    expect(slots.length).toBeGreaterThanOrEqual(2);
    expect(new Set(slots).size).toBe(slots.length);
    expect(slots).toEqual(slots.map((_, i) => first + i * 1000));
    await new Promise((r) => setTimeout(r, 1200));
    expect(w.firedSlots(s.id)).toHaveLength(slots.length);
    expect(slots.every((t) => t <= stoppedAt)).toBe(true);
  });
});
