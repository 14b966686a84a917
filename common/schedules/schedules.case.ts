/**
 * Schedule store conformance cases: every ScheduleStore adapter runs these (memory in unit
 * tests, Redis in integration tests). Each case uses fresh ids and its own tenant.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ScheduleRecord, ScheduleStore } from './port.ts';

export const newScheduleId = (): string => `sch_${randomBytes(12).toString('hex')}`;
const newTenant = (): string => `t-${randomBytes(4).toString('hex')}`;

export function newSchedule(over: Partial<ScheduleRecord> = {}): ScheduleRecord {
  const now = Date.now();
  return {
    id: newScheduleId(),
    tenant: 'default',
    name: 'every minute',
    cron: '* * * * *',
    timezone: 'UTC',
    task: { type: 'agent', input: { content: '机械键盘降价了' }, userId: 'u1', priority: 'normal', maxAttempts: null },
    catchUp: 'latest',
    paused: false,
    createdAt: now,
    updatedAt: now,
    nextRunAt: now + 60_000,
    lastFiredAt: null,
    lastTaskId: null,
    fired: 0,
    skipped: 0,
    lastError: null,
    ...over,
  };
}

export function scheduleConformance(name: string, make: () => Promise<ScheduleStore>): void {
  describe(`ScheduleStore conformance: ${name}`, () => {
    let store: ScheduleStore;
    beforeAll(async () => {
      store = await make();
    });
    afterAll(async () => {
      await store.close();
    });

    /** The ids of `mine` among those due at `now`. */
    const dueOf = async (now: number, mine: ScheduleRecord[]) => {
      const ids = new Set(mine.map((s) => s.id));
      return (await store.due(now, 10_000)).filter((id) => ids.has(id));
    };

    it('stores a schedule and reads it back as it was', async () => {
      const s = newSchedule({
        tenant: newTenant(),
        name: null,
        timezone: 'Europe/Berlin',
        task: { type: 'agent', input: { content: 'x', n: [1, 2], nested: { ok: true } }, userId: null, priority: 'high', maxAttempts: 5 },
        catchUp: 'all',
        lastError: { code: 'quota_exceeded', message: 'no units', slotAt: 1 },
      });
      await store.create(s);
      expect(await store.get(s.id)).toEqual(s);
      await expect(store.create(s)).rejects.toThrow();
      expect(await store.get(newScheduleId())).toBeNull();
    });

    it('lists a tenant’s schedules newest first, in pages, and no other tenant’s', async () => {
      const tenant = newTenant();
      const base = Date.now();
      const mine = [0, 1, 2, 3, 4].map((i) => newSchedule({ tenant, createdAt: base + (i < 2 ? 0 : i) }));
      for (const s of mine) await store.create(s);
      await store.create(newSchedule({ tenant: newTenant(), createdAt: base + 10 }));
      const seen: string[] = [];
      let page = await store.list(tenant, 2);
      for (let i = 0; i < 10; i++) {
        seen.push(...page.schedules.map((s) => s.id));
        expect(page.schedules.every((s) => s.tenant === tenant)).toBe(true);
        if (!page.next) break;
        page = await store.list(tenant, 2, page.next);
      }
      const expected = [...mine].sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : -1)).map((s) => s.id);
      expect(seen).toEqual(expected);
      expect((await store.list(tenant, 5)).next).toBeNull();
      expect((await store.list(newTenant(), 5)).schedules).toEqual([]);
    });

    it('answers the active schedules that are due, earliest first', async () => {
      const now = Date.now();
      const a = newSchedule({ nextRunAt: now - 2000 });
      const b = newSchedule({ nextRunAt: now - 1000 });
      const later = newSchedule({ nextRunAt: now + 60_000 });
      const paused = newSchedule({ nextRunAt: now - 3000, paused: true });
      const never = newSchedule({ nextRunAt: null });
      for (const s of [b, later, a, paused, never]) await store.create(s);
      expect(await dueOf(now, [a, b, later, paused, never])).toEqual([a.id, b.id]);
      expect(await dueOf(now + 60_000, [a, b, later, paused, never])).toEqual([a.id, b.id, later.id]);
    });

    it('leases a due schedule to exactly one of many racing replicas, until the lease ends', async () => {
      const now = Date.now();
      const s = newSchedule({ nextRunAt: now - 10 });
      await store.create(s);
      const got = await Promise.all(Array.from({ length: 10 }, () => store.lease(s.id, now, 5000)));
      expect(got.filter((r) => r !== null)).toHaveLength(1);
      expect(got.find((r) => r !== null)).toEqual(s);
      expect(await dueOf(now + 4000, [s])).toEqual([]);
      expect(await store.lease(s.id, now + 4000, 5000)).toBeNull();
      // The holder died: the lease runs out and another replica takes it.
      expect(await dueOf(now + 5000, [s])).toEqual([s.id]);
      expect(await store.lease(s.id, now + 5000, 5000)).not.toBeNull();
      // Not due yet, paused, or gone: no lease.
      const future = newSchedule({ nextRunAt: now + 60_000 });
      await store.create(future);
      expect(await store.lease(future.id, now, 5000)).toBeNull();
      expect(await store.lease(newScheduleId(), now, 5000)).toBeNull();
    });

    it('records a firing only when the next run is still the one expected (compare-and-set)', async () => {
      const now = Date.now();
      const s = newSchedule({ nextRunAt: now - 10 });
      await store.create(s);
      expect(await store.lease(s.id, now, 5000)).not.toBeNull();
      const commit = { nextRunAt: now + 60_000, dueAt: now + 60_000, updatedAt: now + 1, fired: { slotAt: now - 10, taskId: 'task-1' }, skipped: 2 };
      const results = await Promise.all([store.commit(s.id, now - 10, commit), store.commit(s.id, now - 10, commit), store.commit(s.id, now - 10, commit)]);
      expect(results.sort()).toEqual(['conflict', 'conflict', 'ok']);
      expect(await store.get(s.id)).toMatchObject({
        nextRunAt: now + 60_000,
        lastFiredAt: now - 10,
        lastTaskId: 'task-1',
        fired: 1,
        skipped: 2,
        updatedAt: now + 1,
      });
      expect(await store.commit(s.id, now - 10, commit)).toBe('conflict');
      expect(await dueOf(now + 59_999, [s])).toEqual([]);
      expect(await dueOf(now + 60_000, [s])).toEqual([s.id]);
      expect(await store.commit(newScheduleId(), now, commit)).toBe('conflict');
    });

    it('sets, keeps and clears the last error, and takes a due time apart from the next run', async () => {
      const now = Date.now();
      const s = newSchedule({ nextRunAt: now });
      await store.create(s);
      const error = { code: 'quota_exceeded', message: 'tenant acme has 0 units left', slotAt: now };
      expect(await store.commit(s.id, now, { nextRunAt: now + 1000, dueAt: now + 500, updatedAt: now, skipped: 1, error })).toBe('ok');
      expect(await store.get(s.id)).toMatchObject({ nextRunAt: now + 1000, skipped: 1, lastError: error, fired: 0 });
      expect(await dueOf(now + 500, [s])).toEqual([s.id]);
      expect(await store.commit(s.id, now + 1000, { nextRunAt: now + 2000, dueAt: now + 2000, updatedAt: now })).toBe('ok');
      expect((await store.get(s.id))?.lastError).toEqual(error);
      expect(
        await store.commit(s.id, now + 2000, { nextRunAt: null, dueAt: null, updatedAt: now, fired: { slotAt: now + 2000, taskId: 't' }, error: null }),
      ).toBe('ok');
      const after = await store.get(s.id);
      expect(after).toMatchObject({ nextRunAt: null, lastError: null, fired: 1 });
      expect(await dueOf(Number.MAX_SAFE_INTEGER, [s])).toEqual([]);
      // null is a value the compare-and-set matches too.
      expect(await store.commit(s.id, null, { nextRunAt: now + 5000, dueAt: now + 5000, updatedAt: now })).toBe('ok');
    });

    it('pauses and resumes a schedule of its tenant only; a paused one is never due', async () => {
      const now = Date.now();
      const tenant = newTenant();
      const s = newSchedule({ tenant, nextRunAt: now - 100 });
      await store.create(s);
      expect(await store.setPaused(s.id, newTenant(), true, null, now)).toBeNull();
      expect(await store.setPaused(newScheduleId(), tenant, true, null, now)).toBeNull();
      const paused = await store.setPaused(s.id, tenant, true, null, now + 1);
      expect(paused).toMatchObject({ paused: true, nextRunAt: now - 100, updatedAt: now + 1 });
      expect(await dueOf(now, [s])).toEqual([]);
      expect(await store.lease(s.id, now, 1000)).toBeNull();
      // Pausing again changes nothing.
      expect(await store.setPaused(s.id, tenant, true, null, now + 2)).toMatchObject({ paused: true, updatedAt: now + 1 });
      const resumed = await store.setPaused(s.id, tenant, false, now + 60_000, now + 3);
      expect(resumed).toMatchObject({ paused: false, nextRunAt: now + 60_000, updatedAt: now + 3 });
      expect(await dueOf(now + 60_000, [s])).toEqual([s.id]);
      // Resuming a running schedule changes nothing.
      expect(await store.setPaused(s.id, tenant, false, now + 999_999, now + 4)).toMatchObject({ nextRunAt: now + 60_000, updatedAt: now + 3 });
    });

    it('a firing that ends while its schedule is paused is recorded, and the schedule stays out of the due index', async () => {
      const now = Date.now();
      const tenant = newTenant();
      const s = newSchedule({ tenant, nextRunAt: now - 10 });
      await store.create(s);
      expect(await store.lease(s.id, now, 5000)).not.toBeNull();
      await store.setPaused(s.id, tenant, true, null, now);
      expect(await store.commit(s.id, now - 10, { nextRunAt: now + 1000, dueAt: now + 1000, updatedAt: now, fired: { slotAt: now - 10, taskId: 'x' } })).toBe(
        'paused',
      );
      expect(await store.get(s.id)).toMatchObject({ paused: true, fired: 1, lastTaskId: 'x' });
      expect(await dueOf(now + 10_000, [s])).toEqual([]);
    });

    it('deletes a schedule of its tenant only', async () => {
      const now = Date.now();
      const tenant = newTenant();
      const s = newSchedule({ tenant, nextRunAt: now - 10 });
      await store.create(s);
      expect(await store.delete(s.id, newTenant())).toBe(false);
      expect(await store.get(s.id)).not.toBeNull();
      expect(await store.delete(s.id, tenant)).toBe(true);
      expect(await store.delete(s.id, tenant)).toBe(false);
      expect(await store.get(s.id)).toBeNull();
      expect((await store.list(tenant, 10)).schedules).toEqual([]);
      expect(await dueOf(now, [s])).toEqual([]);
      expect(await store.commit(s.id, now - 10, { nextRunAt: now, dueAt: now, updatedAt: now })).toBe('conflict');
    });

    it('answers a ping', async () => {
      await expect(store.ping()).resolves.toBeUndefined();
    });
  });
}
