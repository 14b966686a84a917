/**
 * Store conformance cases: every TaskStore adapter runs these (memory in unit tests, Redis
 * in integration tests). Each case uses fresh random task ids.
 */
import { sleep } from '../backoff.ts';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NewTask } from '../task.ts';
import type { Admission, ListCursor, TaskStore, TaskStoreOptions } from './port.ts';

export function newTask(over: Partial<NewTask> = {}): NewTask {
  return { id: randomUUID(), type: 'agent', input: { content: 'hi' }, userId: 'u1', priority: 'normal', maxAttempts: 3, createdAt: Date.now(), ...over };
}

const err = { code: 'boom', message: 'boom', retriable: true };

/** `make` must honour the options: the cases rely on a short takeover delay. */
export function storeConformance(name: string, make: (opts: TaskStoreOptions) => Promise<TaskStore>): void {
  describe(`TaskStore conformance: ${name}`, () => {
    let store: TaskStore;
    beforeAll(async () => {
      store = await make({ takeoverDelayMs: 50, resultTtlSeconds: 600 });
    });
    afterAll(async () => {
      await store.close();
    });

    it('creates a queued record and reads it back', async () => {
      const t = newTask({ input: { content: '机械键盘降价了', n: [1, 2] }, userId: null });
      expect(await store.create(t, Date.now() + 60_000)).toEqual({ outcome: 'created', downgraded: false });
      const rec = await store.get(t.id);
      expect(rec).toMatchObject({ id: t.id, status: 'queued', type: 'agent', input: t.input, userId: null, attempt: 0, maxAttempts: 3, progress: 0 });
      expect(rec?.createdAt).toBe(t.createdAt);
      expect(await store.create(t, Date.now())).toEqual({ outcome: 'exists' });
    });

    it('binds an idempotency key to the first task only, and expires the binding', async () => {
      const key = `idem-${randomUUID()}`;
      const first = newTask();
      expect(await store.create(first, Date.now() + 60_000, { idempotency: { key, fingerprint: 'fp1', ttlSeconds: 1 } })).toEqual({
        outcome: 'created',
        downgraded: false,
      });
      const second = newTask();
      expect(await store.create(second, Date.now() + 60_000, { idempotency: { key, fingerprint: 'fp2', ttlSeconds: 1 } })).toEqual({
        outcome: 'replay',
        taskId: first.id,
        fingerprint: 'fp1',
      });
      expect(await store.get(second.id)).toBeNull();
      await sleep(1100);
      expect(await store.create(second, Date.now() + 60_000, { idempotency: { key, fingerprint: 'fp2', ttlSeconds: 1 } })).toEqual({
        outcome: 'created',
        downgraded: false,
      });
    });

    it('answers null and missing for an unknown id', async () => {
      const id = randomUUID();
      expect(await store.get(id)).toBeNull();
      expect(await store.claim(id, 'w1', 1000)).toEqual({ outcome: 'missing' });
      expect((await store.complete(id, 'w1', 1)).code).toBe('missing');
    });

    it('claims once: a second claim while the lease lives is busy', async () => {
      const t = newTask();
      await store.create(t, Date.now() + 60_000);
      const first = await store.claim(t.id, 'w1', 10_000);
      expect(first.outcome).toBe('claimed');
      if (first.outcome !== 'claimed') return;
      expect(first.task).toMatchObject({ status: 'running', worker: 'w1', attempt: 1 });
      expect(first.task.leaseUntil).toBeGreaterThan(Date.now());
      expect((await store.claim(t.id, 'w2', 10_000)).outcome).toBe('busy');
      // Even the same worker may not run it twice at once.
      expect((await store.claim(t.id, 'w1', 10_000)).outcome).toBe('busy');
    });

    it('lets another worker take over once the lease expires, and the first loses it', async () => {
      const t = newTask();
      await store.create(t, Date.now() + 60_000);
      expect((await store.claim(t.id, 'w1', 200)).outcome).toBe('claimed');
      await sleep(300);
      const second = await store.claim(t.id, 'w2', 10_000);
      expect(second.outcome).toBe('claimed');
      if (second.outcome === 'claimed') expect(second.task).toMatchObject({ worker: 'w2', attempt: 2 });
      expect(await store.renewLease(t.id, 'w1', 10_000)).toBe('not_owner');
      expect((await store.complete(t.id, 'w1', 'stale')).code).toBe('not_owner');
      expect((await store.complete(t.id, 'w2', { ok: true })).code).toBe('ok');
      expect((await store.get(t.id))?.result).toEqual({ ok: true });
    });

    it('renews a lease so the task stays busy past the first lease', async () => {
      const t = newTask();
      await store.create(t, Date.now() + 60_000);
      await store.claim(t.id, 'w1', 300);
      await sleep(150);
      expect(await store.renewLease(t.id, 'w1', 1000)).toBe('ok');
      await sleep(250);
      expect((await store.claim(t.id, 'w2', 1000)).outcome).toBe('busy');
    });

    it('records progress for the owner only', async () => {
      const t = newTask();
      await store.create(t, Date.now() + 60_000);
      await store.claim(t.id, 'w1', 10_000);
      expect(await store.report(t.id, 'w1', [{ type: 'progress', data: { percent: 40, message: 'phase 2' } }])).toBe('ok');
      expect(await store.report(t.id, 'w2', [{ type: 'progress', data: { percent: 90, message: 'nope' } }])).toBe('not_owner');
      expect(await store.get(t.id)).toMatchObject({ progress: 40, message: 'phase 2' });
    });

    it('completes: done is terminal, stamps times, and a later claim is a duplicate', async () => {
      const t = newTask();
      await store.create(t, Date.now() + 60_000);
      await store.claim(t.id, 'w1', 10_000);
      expect((await store.complete(t.id, 'w1', { answer: 42 })).code).toBe('ok');
      const rec = await store.get(t.id);
      expect(rec).toMatchObject({ status: 'done', progress: 100, result: { answer: 42 }, resultPublished: false });
      expect(rec?.finishedAt).toBeGreaterThanOrEqual(rec?.startedAt ?? Infinity);
      const again = await store.claim(t.id, 'w2', 10_000);
      expect(again.outcome).toBe('terminal');
      expect((await store.complete(t.id, 'w1', 'twice')).code).toBe('terminal');
      expect((await store.fail(t.id, 'w1', err)).code).toBe('terminal');
      await store.markResultPublished(t.id);
      expect((await store.get(t.id))?.resultPublished).toBe(true);
    });

    it('schedules a retry: queued with retry_at, busy until due, then claimable with attempt 2', async () => {
      const t = newTask();
      await store.create(t, Date.now() + 60_000);
      await store.claim(t.id, 'w1', 10_000);
      const retryAt = Date.now() + 300;
      expect((await store.retryLater(t.id, 'w1', err, retryAt)).code).toBe('ok');
      expect(await store.get(t.id)).toMatchObject({ status: 'queued', retryAt, error: err, worker: null });
      expect((await store.claim(t.id, 'w2', 10_000)).outcome).toBe('busy');
      await sleep(350);
      const c = await store.claim(t.id, 'w2', 10_000);
      expect(c.outcome).toBe('claimed');
      if (c.outcome === 'claimed') expect(c.task.attempt).toBe(2);
    });

    it('fails a running task for its owner', async () => {
      const t = newTask();
      await store.create(t, Date.now() + 60_000);
      await store.claim(t.id, 'w1', 10_000);
      expect((await store.fail(t.id, 'w2', err)).code).toBe('not_owner');
      expect((await store.fail(t.id, 'w1', { ...err, retriable: false })).code).toBe('ok');
      expect(await store.get(t.id)).toMatchObject({ status: 'failed', error: { code: 'boom', retriable: false } });
    });

    it('fails a queued task whose message could not be published, with no result due', async () => {
      const t = newTask();
      await store.create(t, Date.now() + 60_000);
      expect(await store.failQueued(t.id, err)).toBe('ok');
      expect(await store.get(t.id)).toMatchObject({ status: 'failed', resultPublished: true });
      expect((await store.claim(t.id, 'w1', 1000)).outcome).toBe('terminal');
      const running = newTask();
      await store.create(running, Date.now() + 60_000);
      await store.claim(running.id, 'w1', 10_000);
      expect(await store.failQueued(running.id, err)).toBe('conflict');
    });

    it('releases the idempotency key of a submission that failed to publish, so a retry creates a task', async () => {
      const key = `idem-${randomUUID()}`;
      const t = newTask();
      await store.create(t, Date.now() + 60_000, { idempotency: { key, fingerprint: 'fp', ttlSeconds: 60 } });
      expect(await store.failQueued(t.id, err, key)).toBe('ok');
      const retry = newTask();
      expect(await store.create(retry, Date.now() + 60_000, { idempotency: { key, fingerprint: 'fp', ttlSeconds: 60 } })).toEqual({
        outcome: 'created',
        downgraded: false,
      });
      // A key bound to another task is left alone.
      expect(await store.failQueued(newTask().id, err, key)).toBe('missing');
      expect((await store.create(newTask(), Date.now() + 60_000, { idempotency: { key, fingerprint: 'fp', ttlSeconds: 60 } })).outcome).toBe('replay');
    });

    it('outbox: a new task is due after its delay, published entries leave, takers hold them', async () => {
      const t = newTask();
      await store.create(t, Date.now() + 150);
      expect(await store.outboxDue(1000, 10_000)).not.toContain(t.id);
      await sleep(200);
      expect(await store.outboxDue(1000, 10_000)).toContain(t.id);
      // Held by the first taker: a second scan does not see it.
      expect(await store.outboxDue(1000, 10_000)).not.toContain(t.id);
      await store.disarmOutbox(t.id, 0);
      const u = newTask();
      await store.create(u, Date.now());
      await store.disarmOutbox(u.id, 0);
      await sleep(20);
      expect(await store.outboxDue(1000, 10_000)).not.toContain(u.id);
    });

    it('outbox: a claimed task is due again once its lease expires; done clears it', async () => {
      const t = newTask();
      await store.create(t, Date.now() + 60_000);
      await store.claim(t.id, 'w1', 100);
      // Disarming after publish must not drop the takeover watchdog of a running task.
      await store.disarmOutbox(t.id, 0);
      await sleep(250);
      expect(await store.outboxDue(1000, 10_000)).toContain(t.id);
      await store.claim(t.id, 'w2', 10_000);
      await store.complete(t.id, 'w2', null);
      await sleep(20);
      expect(await store.outboxDue(1000, 0)).not.toContain(t.id);
    });

    it('outbox: a publisher that disarms late does not drop a retry scheduled in between', async () => {
      const t = newTask();
      await store.create(t, Date.now() + 60_000);
      // The API published; before it disarms, a worker claims, fails and schedules a retry.
      await store.claim(t.id, 'w1', 10_000);
      await store.retryLater(t.id, 'w1', err, Date.now() + 100);
      await store.disarmOutbox(t.id, 0);
      await sleep(150);
      expect(await store.outboxDue(1000, 10_000)).toContain(t.id);
    });

    it('outbox: a retry becomes due at its retry time', async () => {
      const t = newTask();
      await store.create(t, Date.now() + 60_000);
      await store.claim(t.id, 'w1', 10_000);
      await store.retryLater(t.id, 'w1', err, Date.now() + 150);
      expect(await store.outboxDue(1000, 10_000)).not.toContain(t.id);
      await sleep(200);
      expect(await store.outboxDue(1000, 10_000)).toContain(t.id);
    });

    it('claims atomically under contention: exactly one of 20 racing claims wins', async () => {
      const t = newTask();
      await store.create(t, Date.now() + 60_000);
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => store.claim(t.id, `w${i}`, 10_000)));
      expect(results.filter((r) => r.outcome === 'claimed')).toHaveLength(1);
    });

    it('keeps the history of a task: every transition and handler event, in order, resumable after any id', async () => {
      const t = newTask();
      await store.create(t, Date.now() + 60_000);
      await store.claim(t.id, 'w1', 10_000);
      expect(await store.report(t.id, 'w1', [{ type: 'progress', data: { percent: 60, message: '[60%] Phase 2' } }])).toBe('ok');
      expect(await store.report(t.id, 'w1', [{ type: 'log', data: { level: 'info', message: 'looked it up', data: { hits: 3 } } }])).toBe('ok');
      expect(await store.report(t.id, 'w1', [{ type: 'partial', data: { chunk: 'Hello, ' } }])).toBe('ok');
      expect(await store.report(t.id, 'w1', [{ type: 'partial', data: { chunk: '世界' } }])).toBe('ok');
      expect(await store.report(t.id, 'w2', [{ type: 'partial', data: { chunk: 'not mine' } }])).toBe('not_owner');
      await store.complete(t.id, 'w1', { answer: 42 });
      const events = await store.events(t.id, null, 100);
      expect(events.map((e) => e.type)).toEqual(['status', 'status', 'progress', 'log', 'partial', 'partial', 'done']);
      expect(events[0]?.data).toMatchObject({ status: 'queued' });
      expect(events[1]?.data).toMatchObject({ status: 'running', attempt: 1, worker: 'w1' });
      expect(events[2]?.data).toEqual({ percent: 60, message: '[60%] Phase 2' });
      expect(events[3]?.data).toEqual({ level: 'info', message: 'looked it up', data: { hits: 3 } });
      expect(events[6]?.data).toEqual({ result: { answer: 42 } });
      expect((await store.get(t.id))?.output).toBe('Hello, 世界');
      // Ids grow, and reading after any id gives exactly the rest.
      const ids = events.map((e) => e.id);
      expect(new Set(ids).size).toBe(ids.length);
      for (let i = 0; i < events.length; i++) {
        expect((await store.events(t.id, ids[i] ?? '', 100)).map((e) => e.id)).toEqual(ids.slice(i + 1));
      }
      expect((await store.events(t.id, null, 2)).map((e) => e.id)).toEqual(ids.slice(0, 2));
    });

    it('ends an attempt in one step with the pending handler events first, and answers the record', async () => {
      const t = newTask();
      await store.create(t, Date.now() + 60_000);
      await store.claim(t.id, 'w1', 10_000);
      const r = await store.complete(t.id, 'w1', { answer: 7 }, [
        { type: 'progress', data: { percent: 50, message: 'half' } },
        { type: 'partial', data: { chunk: 'ab' } },
        { type: 'log', data: { level: 'info', message: 'late line' } },
        { type: 'partial', data: { chunk: 'cd' } },
      ]);
      expect(r.code).toBe('ok');
      if (r.code !== 'ok') return;
      expect(r.task).toMatchObject({ id: t.id, status: 'done', result: { answer: 7 }, progress: 100, attempt: 1, worker: 'w1', resultPublished: false });
      expect(r.task.finishedAt).toBeGreaterThan(0);
      const events = await store.events(t.id, null, 100);
      expect(events.map((e) => e.type)).toEqual(['status', 'status', 'progress', 'partial', 'log', 'partial', 'done']);
      expect((await store.get(t.id))?.output).toBe('abcd');

      const u = newTask();
      await store.create(u, Date.now() + 60_000);
      await store.claim(u.id, 'w1', 10_000);
      const retried = await store.retryLater(u.id, 'w1', err, Date.now() + 60_000, [{ type: 'log', data: { level: 'warn', message: 'trying again' } }]);
      expect(retried.code === 'ok' && retried.task).toMatchObject({ status: 'queued', error: err, worker: null });
      await store.cancel(u.id, null);
      const v = newTask();
      await store.create(v, Date.now() + 60_000);
      await store.claim(v.id, 'w1', 10_000);
      const failed = await store.fail(v.id, 'w1', err, [{ type: 'progress', data: { percent: 10, message: null } }]);
      expect(failed.code === 'ok' && failed.task).toMatchObject({ status: 'failed', error: err, progress: 10, message: null });
      expect((await store.events(v.id, null, 100)).map((e) => e.type)).toEqual(['status', 'status', 'progress', 'failed']);
      // Not the owner: nothing is written, not even the events.
      expect((await store.complete(v.id, 'w1', 1, [{ type: 'log', data: { level: 'info', message: 'x' } }])).code).toBe('terminal');
      expect(await store.events(v.id, null, 100)).toHaveLength(4);
    });

    it('stores several handler events of one report in order', async () => {
      const t = newTask();
      await store.create(t, Date.now() + 60_000);
      await store.claim(t.id, 'w1', 10_000);
      const events = Array.from({ length: 30 }, (_, i) =>
        i % 3 === 0
          ? ({ type: 'progress', data: { percent: i, message: `step ${i}` } } as const)
          : ({ type: 'partial', data: { chunk: String(i % 10) } } as const),
      );
      expect(await store.report(t.id, 'w1', events)).toBe('ok');
      const stored = (await store.events(t.id, null, 100)).slice(2);
      expect(stored.map((e) => e.data)).toEqual(events.map((e) => e.data));
      const rec = await store.get(t.id);
      expect(rec).toMatchObject({ progress: 27, message: 'step 27' });
      expect(rec?.output).toBe(events.flatMap((e) => (e.type === 'partial' ? [e.data.chunk] : [])).join(''));
    });

    it('wakes the watches of a task when its history grows, and only those', async () => {
      const t = newTask();
      const other = newTask();
      await store.create(t, Date.now() + 60_000);
      await store.create(other, Date.now() + 60_000);
      const a = await store.watch(t.id);
      const b = await store.watch(t.id);
      const c = await store.watch(other.id);
      try {
        expect(await a.changed(30)).toBe(false);
        const heard = Promise.all([a.changed(5000), b.changed(5000)]);
        await store.claim(t.id, 'w1', 10_000);
        expect(await heard).toEqual([true, true]);
        // News that comes while nobody waits is kept for the next call.
        await store.report(t.id, 'w1', [{ type: 'log', data: { level: 'info', message: 'x' } }]);
        await sleep(50);
        expect(await a.changed(5000)).toBe(true);
        expect(await a.changed(30)).toBe(false);
        // Closing one watch leaves the other listening.
        b.close();
        const next = a.changed(5000);
        await store.cancel(t.id, 'done with it');
        expect(await next).toBe(true);
        expect(await c.changed(30)).toBe(false);
        const ac = new AbortController();
        const aborted = c.changed(60_000, ac.signal);
        ac.abort();
        expect(await aborted).toBe(false);
      } finally {
        a.close();
        b.close();
        c.close();
      }
    });

    it('takes result marks and outbox disarms made together', async () => {
      const tasks = Array.from({ length: 40 }, () => newTask());
      await Promise.all(tasks.map((t) => store.create(t, Date.now() + 60_000)));
      await Promise.all(tasks.map((t) => store.disarmOutbox(t.id, 0)));
      await sleep(80);
      expect(await store.outboxDue(100, 1000)).not.toEqual(expect.arrayContaining([tasks[0]?.id]));
      for (const t of tasks) {
        await store.claim(t.id, 'w1', 10_000);
        await store.complete(t.id, 'w1', null);
      }
      await Promise.all(tasks.map((t) => store.markResultPublished(t.id)));
      const recs = await Promise.all(tasks.map((t) => store.get(t.id)));
      expect(recs.every((r) => r?.resultPublished === true)).toBe(true);
    });

    it('records retries and failures in the history', async () => {
      const t = newTask();
      await store.create(t, Date.now() + 60_000);
      await store.claim(t.id, 'w1', 10_000);
      await store.retryLater(t.id, 'w1', err, Date.now() + 10);
      await sleep(20);
      await store.claim(t.id, 'w2', 10_000);
      await store.fail(t.id, 'w2', err);
      const events = await store.events(t.id, null, 100);
      expect(events.map((e) => [e.type, e.data.status])).toEqual([
        ['status', 'queued'],
        ['status', 'running'],
        ['status', 'queued'],
        ['status', 'running'],
        ['failed', undefined],
      ]);
      expect(events[2]?.data).toMatchObject({ attempt: 1, error: err });
      expect(events[4]?.data).toEqual({ error: err });
    });

    it('bounds the history and the partial output', async () => {
      const small = await make({ historyLimit: 5, outputLimitBytes: 10 });
      try {
        const t = newTask();
        await small.create(t, Date.now() + 60_000);
        await small.claim(t.id, 'w1', 10_000);
        for (let i = 0; i < 8; i++) await small.report(t.id, 'w1', [{ type: 'partial', data: { chunk: `ab${i}` } }]);
        const events = await small.events(t.id, null, 100);
        expect(events.map((e) => e.data.chunk)).toEqual(['ab3', 'ab4', 'ab5', 'ab6', 'ab7']);
        // Chunks that would pass the limit stay out of the output but not out of the history.
        expect((await small.get(t.id))?.output).toBe('ab0ab1ab2');
      } finally {
        await small.close();
      }
    });

    it('cancels a queued task: it never runs, and a second cancel is refused', async () => {
      const t = newTask();
      await store.create(t, Date.now() + 60_000);
      const c = await store.cancel(t.id, 'changed my mind');
      expect(c.outcome).toBe('cancelled');
      if (c.outcome === 'cancelled') expect(c).toMatchObject({ was: 'queued', task: { status: 'cancelled' } });
      expect((await store.claim(t.id, 'w1', 1000)).outcome).toBe('terminal');
      expect((await store.cancel(t.id, null)).outcome).toBe('terminal');
      expect((await store.events(t.id, null, 10)).at(-1)).toMatchObject({ type: 'cancelled', data: { reason: 'changed my mind' } });
      expect(await store.outboxDue(1000, 0)).not.toContain(t.id);
      expect(await store.cancel(randomUUID(), null)).toEqual({ outcome: 'missing' });
    });

    it('cancels a running task: its watchers hear of it and its worker loses it', async () => {
      const heard: string[] = [];
      const watch = await store.watchCancellations((id) => heard.push(id));
      try {
        const t = newTask();
        await store.create(t, Date.now() + 60_000);
        await store.claim(t.id, 'w1', 10_000);
        const c = await store.cancel(t.id, null);
        if (c.outcome !== 'cancelled') throw new Error(`expected cancelled, got ${c.outcome}`);
        expect(c.was).toBe('running');
        for (let i = 0; i < 50 && !heard.includes(t.id); i++) await sleep(20);
        expect(heard).toContain(t.id);
        expect(await store.renewLease(t.id, 'w1', 10_000)).toBe('terminal');
        expect((await store.complete(t.id, 'w1', 'late')).code).toBe('terminal');
        expect(await store.get(t.id)).toMatchObject({ status: 'cancelled', result: null });
        const done = newTask();
        await store.create(done, Date.now() + 60_000);
        await store.claim(done.id, 'w1', 10_000);
        await store.complete(done.id, 'w1', 1);
        expect((await store.cancel(done.id, null)).outcome).toBe('terminal');
      } finally {
        await watch.close();
      }
    });

    it('lists tasks newest first with filters, and pages through them with a cursor', async () => {
      const user = `lister-${randomUUID()}`;
      const base = Date.now() - 100_000;
      const made: string[] = [];
      for (let i = 0; i < 7; i++) {
        const t = newTask({ userId: user, createdAt: base + Math.floor(i / 2), type: i % 3 === 0 ? 'other' : 'agent' });
        await store.create(t, Date.now() + 60_000);
        made.push(t.id);
      }
      await store.claim(made[6] ?? '', 'w1', 10_000);
      await store.complete(made[6] ?? '', 'w1', 'ok');
      // Two per millisecond on purpose: the cursor must not lose or repeat ties.
      const seen: string[] = [];
      let after: ListCursor | undefined;
      for (let pages = 0; pages < 10; pages++) {
        const page = await store.list({ userId: user, limit: 3, ...(after ? { after } : {}) });
        expect(page.tasks.length).toBeLessThanOrEqual(3);
        seen.push(...page.tasks.map((t) => t.id));
        if (!page.next) break;
        after = page.next;
      }
      expect(seen).toHaveLength(7);
      expect(new Set(seen)).toEqual(new Set(made));
      const times = (await Promise.all(seen.map((id) => store.get(id)))).map((r) => r?.createdAt ?? 0);
      expect([...times].sort((a, b) => b - a)).toEqual(times);
      expect((await store.list({ userId: user, status: 'done', limit: 10 })).tasks.map((t) => t.id)).toEqual([made[6]]);
      expect((await store.list({ userId: user, type: 'other', limit: 10 })).tasks.map((t) => t.id).sort()).toEqual([made[0], made[3], made[6]].sort());
      expect((await store.list({ userId: `nobody-${randomUUID()}`, limit: 10 })).tasks).toEqual([]);
    });

    it('expires a finished task with its history after the ttl, and the sweeper drops it from the listing', async () => {
      const short = await make({ resultTtlSeconds: 1 });
      try {
        const user = `ttl-${randomUUID()}`;
        const t = newTask({ userId: user });
        const open = newTask({ userId: user });
        await short.create(t, Date.now() + 60_000);
        await short.create(open, Date.now() + 60_000);
        await short.claim(t.id, 'w1', 10_000);
        await short.report(t.id, 'w1', [{ type: 'partial', data: { chunk: 'x' } }]);
        await short.complete(t.id, 'w1', 'ok');
        expect((await short.list({ userId: user, limit: 10 })).tasks).toHaveLength(2);
        await sleep(1200);
        expect(await short.sweep(1000)).toBeGreaterThanOrEqual(1);
        expect(await short.get(t.id)).toBeNull();
        expect(await short.events(t.id, null, 10)).toEqual([]);
        // The unfinished task never expires.
        expect((await short.list({ userId: user, limit: 10 })).tasks.map((r) => r.id)).toEqual([open.id]);
      } finally {
        await short.close();
      }
    });

    // --- tenants, quotas, rate limits, running caps, lost workers ---

    const tenant = () => `t-${randomUUID().slice(0, 8)}`;
    const admission = (over: Partial<Admission> = {}): Admission => ({ submitsPerSecond: 0, quotaUnits: 0, quotaWindowSeconds: 86_400, cost: 1, ...over });

    it('keeps tenants apart: listing, cancel and idempotency keys are per tenant', async () => {
      const [a, b] = [tenant(), tenant()];
      const ta = newTask({ tenant: a, userId: 'same-user' });
      const tb = newTask({ tenant: b, userId: 'same-user' });
      const key = `idem-${randomUUID()}`;
      expect((await store.create(ta, Date.now() + 60_000, { idempotency: { key, fingerprint: 'fp', ttlSeconds: 60 } })).outcome).toBe('created');
      // The same Idempotency-Key in another tenant is another key.
      expect((await store.create(tb, Date.now() + 60_000, { idempotency: { key, fingerprint: 'fp', ttlSeconds: 60 } })).outcome).toBe('created');
      expect((await store.get(ta.id))?.tenant).toBe(a);
      expect((await store.list({ tenant: a, limit: 10 })).tasks.map((t) => t.id)).toEqual([ta.id]);
      expect((await store.list({ tenant: b, userId: 'same-user', limit: 10 })).tasks.map((t) => t.id)).toEqual([tb.id]);
      expect((await store.cancel(ta.id, null, b)).outcome).toBe('missing');
      expect((await store.get(ta.id))?.status).toBe('queued');
      expect((await store.cancel(ta.id, null, a)).outcome).toBe('cancelled');
    });

    it('rate-limits submits per tenant per second, writing nothing for a refused one', async () => {
      const t = tenant();
      const adm = admission({ submitsPerSecond: 2 });
      const first = await store.create(newTask({ tenant: t }), Date.now() + 60_000, { admission: adm });
      expect(first).toMatchObject({ outcome: 'created', rate: { limit: 2, remaining: 1 } });
      expect((await store.create(newTask({ tenant: t }), Date.now() + 60_000, { admission: adm })).outcome).toBe('created');
      const refused = newTask({ tenant: t });
      const third = await store.create(refused, Date.now() + 60_000, { admission: adm });
      expect(third.outcome).toBe('rate_limited');
      if (third.outcome === 'rate_limited') expect(third.rate.resetMs).toBeGreaterThan(0);
      expect(await store.get(refused.id)).toBeNull();
      // Another tenant has its own budget; a tenant's own limit wins over the default.
      expect((await store.create(newTask({ tenant: tenant() }), Date.now() + 60_000, { admission: adm })).outcome).toBe('created');
      const own = tenant();
      await store.setTenantLimits(own, { submitsPerSecond: 1 });
      expect((await store.create(newTask({ tenant: own }), Date.now() + 60_000, { admission: adm })).outcome).toBe('created');
      expect((await store.create(newTask({ tenant: own }), Date.now() + 60_000, { admission: adm })).outcome).toBe('rate_limited');
      await sleep(1100);
      expect((await store.create(newTask({ tenant: own }), Date.now() + 60_000, { admission: adm })).outcome).toBe('created');
    });

    it('spends quota units atomically: 100 concurrent submits never spend past the budget', async () => {
      const t = tenant();
      const adm = admission({ quotaUnits: 50, cost: 3 });
      const results = await Promise.all(Array.from({ length: 100 }, () => store.create(newTask({ tenant: t }), Date.now() + 60_000, { admission: adm })));
      expect(results.filter((r) => r.outcome === 'created')).toHaveLength(16); // 16 × 3 = 48 of 50
      const refused = results.find((r) => r.outcome === 'quota_exceeded');
      expect(refused).toMatchObject({ usage: { tenant: t, units: 50, spent: 48, windowSeconds: 86_400 } });
      if (refused?.outcome === 'quota_exceeded') {
        expect(refused.retryAfterMs).toBeGreaterThan(0);
        expect(refused.retryAfterMs).toBeLessThanOrEqual(86_400_000);
        expect(refused.usage.resetsAt % 86_400_000).toBe(0); // a day window resets at 00:00 UTC
      }
      expect(await store.quotaUsage(t, { quotaUnits: 50, quotaWindowSeconds: 86_400 })).toMatchObject({ spent: 48, units: 50 });
      expect((await store.list({ tenant: t, limit: 100 })).tasks).toHaveLength(16);
    });

    it('downgrades when the full cost does not fit, and a task cancelled or failed before it starts gives its units back', async () => {
      const t = tenant();
      const adm = admission({ quotaUnits: 7, cost: 5, downgrade: { input: { mode: 'single' }, cost: 1 } });
      const full = newTask({ tenant: t, input: { mode: 'multi' } });
      expect(await store.create(full, Date.now() + 60_000, { admission: adm })).toEqual({ outcome: 'created', downgraded: false });
      const cheap = newTask({ tenant: t, input: { mode: 'multi' } });
      expect(await store.create(cheap, Date.now() + 60_000, { admission: adm })).toEqual({ outcome: 'created', downgraded: true });
      expect(await store.get(cheap.id)).toMatchObject({ input: { mode: 'single' }, downgraded: true, cost: 1 });
      expect(await store.get(full.id)).toMatchObject({ input: { mode: 'multi' }, downgraded: false, cost: 5 });
      expect((await store.quotaUsage(t, adm)).spent).toBe(6);
      // Cancelled while queued: 5 back. Failed to publish: 1 back.
      expect((await store.cancel(full.id, null, t)).outcome).toBe('cancelled');
      expect((await store.quotaUsage(t, adm)).spent).toBe(1);
      expect(await store.failQueued(cheap.id, err, undefined, t)).toBe('ok');
      expect((await store.quotaUsage(t, adm)).spent).toBe(0);
      // A task that started keeps its units when cancelled.
      const ran = newTask({ tenant: t });
      await store.create(ran, Date.now() + 60_000, { admission: admission({ quotaUnits: 7, cost: 2 }) });
      await store.claim(ran.id, 'w1', 10_000);
      await store.cancel(ran.id, null, t);
      expect((await store.quotaUsage(t, adm)).spent).toBe(2);
      // Over the budget with no downgrade: refused, nothing written.
      const big = newTask({ tenant: t });
      expect((await store.create(big, Date.now() + 60_000, { admission: admission({ quotaUnits: 7, cost: 6 }) })).outcome).toBe('quota_exceeded');
      expect(await store.get(big.id)).toBeNull();
      // A tenant's own budget wins over the default.
      await store.setTenantLimits(t, { quotaUnits: 100 });
      expect((await store.create(newTask({ tenant: t }), Date.now() + 60_000, { admission: admission({ quotaUnits: 7, cost: 6 }) })).outcome).toBe('created');
    });

    it("caps a tenant's running tasks: a claim over the cap defers the task, others run", async () => {
      const [busy, other] = [tenant(), tenant()];
      const tasks = [newTask({ tenant: busy }), newTask({ tenant: busy }), newTask({ tenant: other })];
      for (const t of tasks) await store.create(t, Date.now() + 60_000);
      const [a1, a2, b1] = tasks.map((t) => t.id) as [string, string, string];
      const opts = { maxRunning: 1, throttleMs: 200 };
      expect((await store.claim(a1, 'w1', 10_000, opts)).outcome).toBe('claimed');
      const deferred = await store.claim(a2, 'w2', 10_000, opts);
      expect(deferred.outcome).toBe('throttled');
      if (deferred.outcome === 'throttled') {
        expect(deferred.task).toMatchObject({ status: 'queued', attempt: 0 });
        expect(deferred.task.retryAt).toBeGreaterThan(Date.now());
      }
      // The API's disarm for the first publish may land after the deferral: the entry must stay.
      await store.disarmOutbox(a2, 0);
      expect((await store.claim(b1, 'w2', 10_000, opts)).outcome).toBe('claimed');
      // Not due yet, then due (the outbox has it at retry_at); still over the cap until a1 ends.
      expect((await store.claim(a2, 'w2', 10_000, opts)).outcome).toBe('busy');
      await sleep(250);
      expect(await store.outboxDue(100, 10_000)).toContain(a2);
      expect((await store.claim(a2, 'w2', 10_000, opts)).outcome).toBe('throttled');
      await store.complete(a1, 'w1', 'ok');
      await sleep(450); // the second deferral is twice as long
      expect((await store.claim(a2, 'w2', 10_000, opts)).outcome).toBe('claimed');
      // The tenant's own cap wins: 2 lets a third one run next to a2.
      await store.setTenantLimits(busy, { maxRunning: 2 });
      const a3 = newTask({ tenant: busy });
      await store.create(a3, Date.now() + 60_000);
      expect((await store.claim(a3.id, 'w3', 10_000, opts)).outcome).toBe('claimed');
    });

    it('counts a claim after a lost lease as an attempt: with none left the task fails with worker_lost', async () => {
      const t = newTask({ maxAttempts: 2 });
      await store.create(t, Date.now() + 60_000);
      expect((await store.claim(t.id, 'w1', 100)).outcome).toBe('claimed');
      await sleep(150);
      const second = await store.claim(t.id, 'w2', 100);
      expect(second).toMatchObject({ outcome: 'claimed', task: { attempt: 2 } });
      await sleep(150);
      const third = await store.claim(t.id, 'w3', 100);
      expect(third.outcome).toBe('exhausted');
      expect(await store.get(t.id)).toMatchObject({ status: 'failed', attempt: 2, error: { code: 'worker_lost', retriable: false } });
      expect((await store.claim(t.id, 'w4', 100)).outcome).toBe('terminal');
      const history = await store.events(t.id, null, 100);
      expect(history.filter((e) => e.type === 'status' && e.data.status === 'running').map((e) => e.data.after_lost_lease ?? false)).toEqual([false, true]);
      expect(history.at(-1)).toMatchObject({ type: 'failed', data: { error: { code: 'worker_lost' } } });
    });

    it('notes when the request message is out (a replay waits for it)', async () => {
      const t = newTask();
      await store.create(t, Date.now() + 60_000);
      expect((await store.get(t.id))?.requestPublished).toBe(false);
      await store.disarmOutbox(t.id, 0);
      expect((await store.get(t.id))?.requestPublished).toBe(true);
    });

    it('stores API keys by hash, lists and revokes them; tenant limits set and clear', async () => {
      const t = tenant();
      const hash = randomUUID().replace(/-/g, '').padEnd(64, '0');
      const key = { id: `key_${randomUUID().slice(0, 12).replace(/-/g, '0')}`, tenant: t, scopes: ['tasks:read' as const], name: 'ci', createdAt: Date.now() };
      await store.createKey(key, hash);
      expect(await store.findKey(hash)).toEqual(key);
      expect(await store.listKeys(t)).toEqual([key]);
      expect(await store.listKeys(tenant())).toEqual([]);
      expect(await store.revokeKey(key.id)).toBe(true);
      expect(await store.revokeKey(key.id)).toBe(false);
      expect(await store.findKey(hash)).toBeNull();
      expect(await store.setTenantLimits(t, { quotaUnits: 10, maxRunning: 2 })).toEqual({ quotaUnits: 10, maxRunning: 2 });
      expect(await store.setTenantLimits(t, { quotaUnits: null, readsPerSecond: 5 })).toEqual({ maxRunning: 2, readsPerSecond: 5 });
      expect(await store.tenantLimits(t)).toEqual({ maxRunning: 2, readsPerSecond: 5 });
      expect(await store.tenantLimits(tenant())).toEqual({});
    });

    it('counts reads against a per-second limit', async () => {
      const t = tenant();
      expect(await store.hit(t, 'reads', 0)).toBeNull();
      expect(await store.hit(t, 'reads', 2)).toMatchObject({ allowed: true, limit: 2, remaining: 1 });
      expect(await store.hit(t, 'reads', 2)).toMatchObject({ allowed: true, remaining: 0 });
      const refused = await store.hit(t, 'reads', 2);
      expect(refused).toMatchObject({ allowed: false, remaining: 0 });
      expect(refused?.resetMs).toBeGreaterThan(0);
      expect(refused?.resetMs).toBeLessThanOrEqual(1000);
      // Submits count apart from reads.
      expect(await store.hit(t, 'submits', 2)).toMatchObject({ allowed: true, remaining: 1 });
    });

    it('lists live workers by heartbeat: a dead one leaves within two heartbeats, a removed one at once', async () => {
      const beatMs = 300;
      const info = (id: string, running = 0) => ({ id, host: 'h1', concurrency: 4, running, startedAt: Date.now(), version: '0.1.0' });
      const [a, b] = [`w-a-${randomUUID()}`, `w-b-${randomUUID()}`];
      await store.heartbeat(info(a), 2 * beatMs);
      await store.heartbeat(info(b, 2), 2 * beatMs);
      const mine = async () => (await store.workers()).filter((w) => w.id === a || w.id === b);
      expect((await mine()).map((w) => w.id).sort()).toEqual([a, b].sort());
      expect((await mine()).find((w) => w.id === b)).toMatchObject({ host: 'h1', concurrency: 4, running: 2, version: '0.1.0' });
      expect((await mine())[0]?.seenAt).toBeGreaterThan(Date.now() - 5000);
      // a keeps beating, b stops (a dead worker).
      for (let i = 0; i < 3; i++) {
        await sleep(beatMs);
        await store.heartbeat(info(a, 1), 2 * beatMs);
      }
      expect((await mine()).map((w) => w.id)).toEqual([a]);
      expect((await mine())[0]?.running).toBe(1);
      // b comes back (a paused process): listed again with its next beat, and reads racing beats never drop a live one.
      await store.heartbeat(info(b, 3), 2 * beatMs);
      const reads = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? store.heartbeat(info(b, 3), 2 * beatMs) : mine())));
      for (const r of reads.filter((x) => Array.isArray(x))) expect(r.map((w) => w.id).sort()).toEqual([a, b].sort());
      expect((await mine()).find((w) => w.id === b)).toMatchObject({ running: 3, startedAt: expect.any(Number) as number });
      await store.removeWorker(a);
      await store.removeWorker(b);
      expect(await mine()).toEqual([]);
    });

    it("counts a tenant's tasks by status and by type, bounded with a truncated flag", async () => {
      const tenant = `stats-${randomUUID().slice(0, 8)}`;
      const tasks = [newTask({ tenant }), newTask({ tenant }), newTask({ tenant, type: 'report' })];
      for (const [i, t] of tasks.entries()) await store.create({ ...t, createdAt: Date.now() + i }, Date.now() + 60_000);
      await store.create(newTask({ tenant: `other-${tenant}` }), Date.now() + 60_000);
      const first = tasks[0];
      if (!first) throw new Error('no task');
      expect((await store.claim(first.id, 'w1', 30_000)).outcome).toBe('claimed');
      expect((await store.complete(first.id, 'w1', { ok: true })).code).toBe('ok');
      const all = await store.countTasks(tenant);
      expect(all).toEqual({
        byStatus: { scheduled: 0, waiting: 0, queued: 2, running: 0, done: 1, failed: 0, cancelled: 0 },
        byType: { agent: 2, report: 1 },
        scanned: 3,
        truncated: false,
      });
      const newest = await store.countTasks(tenant, 2);
      expect(newest.scanned).toBe(2);
      expect(newest.truncated).toBe(true);
      expect(newest.byType).toEqual({ report: 1, agent: 1 });
    });

    it('says when a claim re-runs a task whose worker died', async () => {
      const t = newTask();
      await store.create(t, Date.now() + 60_000);
      const first = await store.claim(t.id, 'w1', 100);
      expect(first.outcome === 'claimed' && first.afterLostLease).toBeFalsy();
      await sleep(150);
      const again = await store.claim(t.id, 'w2', 30_000);
      expect(again).toMatchObject({ outcome: 'claimed', afterLostLease: true });
    });

    it('holds a delayed task as scheduled until run_at: busy before, due in the outbox then, claimable after', async () => {
      const runAt = Date.now() + 400;
      const t = newTask({ runAt });
      await store.create(t, Date.now());
      expect(await store.get(t.id)).toMatchObject({ status: 'scheduled', runAt, retryAt: runAt });
      expect((await store.events(t.id, null, 10))[0]?.data).toMatchObject({ status: 'scheduled', run_at: runAt });
      expect((await store.claim(t.id, 'w1', 10_000)).outcome).toBe('busy');
      expect(await store.outboxDue(1000, 10)).not.toContain(t.id);
      // A publish before it is due leaves its entry armed.
      await store.disarmOutbox(t.id, 0);
      await sleep(450);
      expect(await store.outboxDue(1000, 60_000)).toContain(t.id);
      await store.disarmOutbox(t.id, 0);
      expect(await store.outboxDue(1000, 60_000)).not.toContain(t.id);
      expect(await store.claim(t.id, 'w1', 10_000)).toMatchObject({ outcome: 'claimed', task: { status: 'running', attempt: 1 } });
    });

    it('cancels a scheduled task before it is due, giving its units back', async () => {
      const tenant = `t${randomUUID().slice(0, 8)}`;
      const t = newTask({ tenant, runAt: Date.now() + 60_000 });
      await store.create(t, Date.now(), { admission: admission({ quotaUnits: 10, cost: 4 }) });
      expect((await store.quotaUsage(tenant, { quotaUnits: 10, quotaWindowSeconds: 86_400 })).spent).toBe(4);
      expect(await store.cancel(t.id, null, tenant)).toMatchObject({ outcome: 'cancelled', was: 'scheduled' });
      expect((await store.quotaUsage(tenant, { quotaUnits: 10, quotaWindowSeconds: 86_400 })).spent).toBe(0);
    });

    /** research → (a, b) → writer, of `tenant`. */
    const diamond = (tenant: string) => {
      const now = Date.now();
      const ids = { research: randomUUID(), a: randomUUID(), b: randomUUID(), writer: randomUUID() };
      const step = (name: keyof typeof ids, needs: string[]) => ({
        step: name,
        needs,
        task: newTask({ id: ids[name], tenant, type: `t_${name}`, createdAt: now }),
      });
      return {
        ids,
        wf: {
          id: randomUUID(),
          tenant,
          name: 'diamond',
          userId: 'u1',
          parentTaskId: null,
          createdAt: now,
          steps: [step('research', []), step('a', ['research']), step('b', ['research']), step('writer', ['a', 'b'])],
        },
      };
    };
    const run = async (id: string, worker: string, result: unknown) => {
      const c = await store.claim(id, worker, 10_000);
      expect(c.outcome, `claim of ${id}`).toBe('claimed');
      return store.complete(id, worker, result);
    };

    it('workflows: a step is queued when the last of its needs is done, once, and the workflow ends done', async () => {
      const tenant = `t${randomUUID().slice(0, 8)}`;
      const { ids, wf } = diamond(tenant);
      expect(await store.createWorkflow(wf, Date.now() + 60_000)).toEqual({ outcome: 'created' });
      expect(await store.createWorkflow(wf, Date.now() + 60_000)).toEqual({ outcome: 'exists' });
      const got = await store.getWorkflow(wf.id);
      expect(got).toMatchObject({ id: wf.id, tenant, name: 'diamond', status: 'running', steps: wf.steps.map((s) => ({ step: s.step, taskId: s.task.id })) });
      expect(await store.get(ids.research)).toMatchObject({ status: 'queued', workflowId: wf.id, step: 'research', needs: [] });
      expect(await store.get(ids.writer)).toMatchObject({ status: 'waiting', needs: [ids.a, ids.b] });
      // A stray message of a waiting step is dropped.
      expect((await store.claim(ids.writer, 'w1', 10_000)).outcome).toBe('busy');
      const due = await store.outboxDue(1000, 10);
      expect(due).not.toContain(ids.a);
      expect(due).not.toContain(ids.writer);

      const r1 = await run(ids.research, 'w1', { found: 1 });
      expect(r1.code === 'ok' && [...(r1.ready ?? [])].sort()).toEqual([ids.a, ids.b].sort());
      expect(await store.get(ids.a)).toMatchObject({ status: 'queued' });
      // Both needs of the writer end at once: it is readied by exactly one of them.
      await store.claim(ids.a, 'w1', 10_000);
      await store.claim(ids.b, 'w2', 10_000);
      const [ra, rb] = await Promise.all([store.complete(ids.a, 'w1', 'A'), store.complete(ids.b, 'w2', 'B')]);
      const readied = [ra, rb].flatMap((r) => (r.code === 'ok' ? (r.ready ?? []) : []));
      expect(readied).toEqual([ids.writer]);
      expect(await store.get(ids.writer)).toMatchObject({ status: 'queued' });
      expect((await store.getWorkflow(wf.id))?.status).toBe('running');
      const rw = await run(ids.writer, 'w1', 'report');
      expect(rw.code === 'ok' && rw.ready).toBeFalsy();
      expect(await store.getWorkflow(wf.id)).toMatchObject({ status: 'done', error: null });
      expect((await store.getWorkflow(wf.id))?.finishedAt).toBeGreaterThan(0);

      // The workflow's stream holds every step's events in order, and its own end, resumable after any id.
      const events = await store.workflowEvents(wf.id, null, 1000);
      expect(events.at(-1)).toMatchObject({ type: 'workflow', data: { status: 'done' }, step: '' });
      expect(events.filter((e) => e.type === 'done').map((e) => e.step)).toEqual(['research', expect.any(String), expect.any(String), 'writer']);
      expect(events.find((e) => e.type === 'done' && e.step === 'writer')).toMatchObject({ taskId: ids.writer, data: { result: 'report' } });
      const mid = events[3]?.id ?? '';
      expect(await store.workflowEvents(wf.id, mid, 1000)).toEqual(events.slice(4));
      const listed = await store.listWorkflows(tenant, 10);
      expect(listed.workflows.map((w) => w.id)).toEqual([wf.id]);
      expect(await store.listWorkflows('someone-else', 10)).toEqual({ workflows: [], next: null });
    });

    it('workflows: a step that fails fails the workflow and cancels the steps not run; cancel stops them all', async () => {
      const tenant = `t${randomUUID().slice(0, 8)}`;
      const { ids, wf } = diamond(tenant);
      await store.createWorkflow(wf, Date.now() + 60_000);
      await run(ids.research, 'w1', 1);
      await store.claim(ids.a, 'w1', 10_000);
      const cancelled: string[] = [];
      const watch = await store.watchCancellations((id) => cancelled.push(id));
      const watchWf = await store.watchWorkflow(wf.id);
      const woke = watchWf.changed(5000);
      await store.claim(ids.b, 'w2', 10_000);
      const boom = { code: 'boom', message: 'b broke', retriable: false };
      expect((await store.fail(ids.b, 'w2', boom)).code).toBe('ok');
      expect(await woke).toBe(true);
      watchWf.close();
      expect(await store.getWorkflow(wf.id)).toMatchObject({ status: 'failed', error: boom });
      // The running step is cancelled (its worker hears of it), the waiting one never runs.
      expect(await store.get(ids.a)).toMatchObject({ status: 'cancelled' });
      expect(await store.get(ids.writer)).toMatchObject({ status: 'cancelled' });
      await sleep(200);
      expect(cancelled).toContain(ids.a);
      await watch.close();
      expect((await store.complete(ids.a, 'w1', 'late')).code).toBe('terminal');
      const wfEvents = await store.workflowEvents(wf.id, null, 1000);
      expect(wfEvents.at(-1)).toMatchObject({ type: 'workflow', data: { status: 'failed', error: boom } });
      // A failed step is a dead letter; its workflow steps are not rerun one by one.
      expect((await store.deadLetters({ tenant, limit: 10 })).tasks.map((t) => t.id)).toEqual([ids.b]);
      expect((await store.rerun(ids.b, Date.now(), tenant)).outcome).toBe('conflict');

      const second = diamond(tenant);
      await store.createWorkflow(second.wf, Date.now() + 60_000);
      expect(await store.cancelWorkflow(second.wf.id, null, 'someone-else')).toEqual({ outcome: 'missing' });
      expect(await store.cancelWorkflow(second.wf.id, 'stop', tenant)).toMatchObject({ outcome: 'cancelled', workflow: { status: 'cancelled' } });
      for (const id of Object.values(second.ids)) expect((await store.get(id))?.status).toBe('cancelled');
      expect((await store.cancelWorkflow(second.wf.id, null, tenant)).outcome).toBe('terminal');
      // Cancelling one step cancels its workflow.
      const third = diamond(tenant);
      await store.createWorkflow(third.wf, Date.now() + 60_000);
      expect(await store.cancel(third.ids.writer, null, tenant)).toMatchObject({ outcome: 'cancelled', was: 'waiting' });
      expect(await store.getWorkflow(third.wf.id)).toMatchObject({ status: 'cancelled' });
      expect((await store.get(third.ids.research))?.status).toBe('cancelled');
    });

    it('workflows: spend the sum of their steps on the quota, refused whole when it does not fit', async () => {
      const tenant = `t${randomUUID().slice(0, 8)}`;
      const adm = admission({ quotaUnits: 10, cost: 8 });
      expect((await store.createWorkflow(diamond(tenant).wf, Date.now() + 60_000, { admission: adm })).outcome).toBe('created');
      const refused = diamond(tenant);
      expect(await store.createWorkflow(refused.wf, Date.now() + 60_000, { admission: adm })).toMatchObject({ outcome: 'quota_exceeded' });
      expect(await store.getWorkflow(refused.wf.id)).toBeNull();
      expect(await store.get(refused.ids.research)).toBeNull();
      expect((await store.quotaUsage(tenant, { quotaUnits: 10, quotaWindowSeconds: 86_400 })).spent).toBe(8);
    });

    it('workflows: an idempotency key binds to the first workflow only, per tenant, apart from task keys; a cancel with it frees it', async () => {
      const [a, b] = [`t${randomUUID().slice(0, 8)}`, `t${randomUUID().slice(0, 8)}`];
      const key = `idem-${randomUUID()}`;
      const claim = (fingerprint: string, ttlSeconds = 60) => ({
        idempotency: { key, fingerprint, ttlSeconds },
        admission: admission({ quotaUnits: 100, cost: 4 }),
      });
      const first = diamond(a);
      expect(await store.createWorkflow(first.wf, Date.now() + 60_000, claim('fp1'))).toEqual({ outcome: 'created' });
      // The same key again, for any body: the first workflow, nothing written or spent.
      const second = diamond(a);
      expect(await store.createWorkflow(second.wf, Date.now() + 60_000, claim('fp2'))).toEqual({
        outcome: 'replay',
        workflowId: first.wf.id,
        fingerprint: 'fp1',
      });
      expect(await store.getWorkflow(second.wf.id)).toBeNull();
      expect(await store.get(second.ids.research)).toBeNull();
      expect((await store.quotaUsage(a, { quotaUnits: 100, quotaWindowSeconds: 86_400 })).spent).toBe(4);
      expect((await store.listWorkflows(a, 10)).workflows.map((w) => w.id)).toEqual([first.wf.id]);
      // Another tenant's same key is another key.
      expect((await store.createWorkflow(diamond(b).wf, Date.now() + 60_000, claim('fp1'))).outcome).toBe('created');
      // A task key of the same value is a binding of its own, either way round.
      const task = newTask({ tenant: a });
      expect(await store.create(task, Date.now() + 60_000, claim('fp1'))).toMatchObject({ outcome: 'created' });
      expect(await store.create(newTask({ tenant: a }), Date.now() + 60_000, claim('fp1'))).toMatchObject({ outcome: 'replay', taskId: task.id });
      const taskFirst = `idem-${randomUUID()}`;
      expect(
        (await store.create(newTask({ tenant: a }), Date.now() + 60_000, { idempotency: { key: taskFirst, fingerprint: 'f', ttlSeconds: 60 } })).outcome,
      ).toBe('created');
      const afterTask = diamond(a);
      expect(
        (await store.createWorkflow(afterTask.wf, Date.now() + 60_000, { idempotency: { key: taskFirst, fingerprint: 'f', ttlSeconds: 60 } })).outcome,
      ).toBe('created');
      // Releasing a task key leaves the workflow key of the same value alone.
      expect(await store.failQueued(task.id, err, key, a)).toBe('ok');
      expect((await store.createWorkflow(diamond(a).wf, Date.now() + 60_000, claim('fp1'))).outcome).toBe('replay');

      // A cancel with the key frees it only when the key names the workflow cancelled ...
      const other = diamond(a);
      await store.createWorkflow(other.wf, Date.now() + 60_000);
      expect((await store.cancelWorkflow(other.wf.id, 'x', a, key)).outcome).toBe('cancelled');
      expect(await store.createWorkflow(diamond(a).wf, Date.now() + 60_000, claim('fp1'))).toMatchObject({ outcome: 'replay', workflowId: first.wf.id });
      // ... as when a start whose first steps were not published cancels its workflow: the retry creates one ...
      expect((await store.cancelWorkflow(first.wf.id, 'its first steps could not be published', a, key)).outcome).toBe('cancelled');
      const third = diamond(a);
      expect(await store.createWorkflow(third.wf, Date.now() + 60_000, claim('fp3'))).toEqual({ outcome: 'created' });
      expect(await store.createWorkflow(diamond(a).wf, Date.now() + 60_000, claim('fp3'))).toMatchObject({ outcome: 'replay', workflowId: third.wf.id });
      // ... while a cancel without the key keeps it.
      expect((await store.cancelWorkflow(third.wf.id, null, a)).outcome).toBe('cancelled');
      expect(await store.createWorkflow(diamond(a).wf, Date.now() + 60_000, claim('fp3'))).toMatchObject({ outcome: 'replay', workflowId: third.wf.id });

      // The binding expires after its ttl.
      const brief = `idem-${randomUUID()}`;
      const once = { idempotency: { key: brief, fingerprint: 'fp', ttlSeconds: 1 } };
      expect((await store.createWorkflow(diamond(a).wf, Date.now() + 60_000, once)).outcome).toBe('created');
      expect((await store.createWorkflow(diamond(a).wf, Date.now() + 60_000, once)).outcome).toBe('replay');
      await sleep(1100);
      expect((await store.createWorkflow(diamond(a).wf, Date.now() + 60_000, once)).outcome).toBe('created');
    });

    it('reruns a failed or cancelled task with a fresh set of attempts, history kept; dead letters list and leave', async () => {
      const tenant = `t${randomUUID().slice(0, 8)}`;
      const t = newTask({ tenant, maxAttempts: 1, type: 'flaky' });
      await store.create(t, Date.now() + 60_000);
      await store.claim(t.id, 'w1', 10_000);
      await store.fail(t.id, 'w1', { code: 'boom', message: 'broke', retriable: true });
      await sleep(5); // dead letters are ordered by when they failed
      const other = newTask({ tenant, type: 'other' });
      await store.create(other, Date.now() + 60_000);
      await store.claim(other.id, 'w1', 10_000);
      await store.fail(other.id, 'w1', { code: 'bad_input', message: 'no', retriable: false });
      expect((await store.deadLetters({ tenant, limit: 10 })).tasks.map((r) => r.id)).toEqual([other.id, t.id]);
      expect((await store.deadLetters({ tenant, limit: 10, type: 'flaky' })).tasks.map((r) => r.id)).toEqual([t.id]);
      expect((await store.deadLetters({ tenant, limit: 10, code: 'bad_input' })).tasks.map((r) => r.id)).toEqual([other.id]);
      const page1 = await store.deadLetters({ tenant, limit: 1 });
      expect(page1.tasks.map((r) => r.id)).toEqual([other.id]);
      expect((await store.deadLetters({ tenant, limit: 1, ...(page1.next ? { after: page1.next } : {}) })).tasks.map((r) => r.id)).toEqual([t.id]);
      expect((await store.deadLetters({ tenant: 'someone-else', limit: 10 })).tasks).toEqual([]);

      expect(await store.rerun(t.id, Date.now() + 60_000, 'someone-else')).toEqual({ outcome: 'missing' });
      const r = await store.rerun(t.id, Date.now(), tenant);
      expect(r).toMatchObject({ outcome: 'rerun', task: { status: 'queued', attempt: 0, error: null, reruns: 1, finishedAt: null } });
      expect((await store.rerun(t.id, Date.now(), tenant)).outcome).toBe('conflict');
      expect((await store.deadLetters({ tenant, limit: 10 })).tasks.map((x) => x.id)).toEqual([other.id]);
      expect(await store.outboxDue(1000, 60_000)).toContain(t.id);
      const c = await store.claim(t.id, 'w2', 10_000);
      expect(c).toMatchObject({ outcome: 'claimed', task: { attempt: 1 } });
      expect((await store.complete(t.id, 'w2', 'ok')).code).toBe('ok');
      const history = await store.events(t.id, null, 100);
      expect(history.map((e) => e.type)).toEqual(['status', 'status', 'failed', 'status', 'status', 'done']);
      expect(history[3]?.data).toMatchObject({ status: 'queued', attempt: 0, rerun: 1 });
      // A cancelled one too.
      const q = newTask({ tenant });
      await store.create(q, Date.now() + 60_000);
      await store.cancel(q.id, null, tenant);
      expect((await store.rerun(q.id, Date.now(), tenant)).outcome).toBe('rerun');
    });

    it('charges a rerun the task’s cost again, refuses it whole when the quota is short, and refunds the rerun’s spend, not the first run’s', async () => {
      const t = tenant();
      const charge = { quotaUnits: 12, quotaWindowSeconds: 86_400, cost: 5 };
      const adm = admission(charge);
      // Cancelled while queued: its 5 units come back; the rerun spends them again.
      const q = newTask({ tenant: t });
      await store.create(q, Date.now() + 60_000, { admission: adm });
      await store.cancel(q.id, null, t);
      expect((await store.quotaUsage(t, adm)).spent).toBe(0);
      expect(await store.rerun(q.id, Date.now() + 60_000, t, charge)).toMatchObject({ outcome: 'rerun', task: { cost: 5 } });
      expect((await store.quotaUsage(t, adm)).spent).toBe(5);
      // Ran and failed: the first run keeps its units; the rerun spends 5 more, and a cancel of the rerun gives back only those.
      const f = newTask({ tenant: t, maxAttempts: 1 });
      await store.create(f, Date.now() + 60_000, { admission: adm });
      await store.claim(f.id, 'w1', 10_000);
      await store.fail(f.id, 'w1', { code: 'boom', message: 'broke', retriable: false });
      expect((await store.quotaUsage(t, adm)).spent).toBe(10);
      // 2 units left: a rerun of 5 is refused, nothing changed.
      const refused = await store.rerun(f.id, Date.now() + 60_000, t, charge);
      expect(refused).toMatchObject({ outcome: 'quota_exceeded', usage: { tenant: t, units: 12, spent: 10, windowSeconds: 86_400 } });
      expect(refused.outcome === 'quota_exceeded' && refused.retryAfterMs).toBeGreaterThan(0);
      expect(await store.get(f.id)).toMatchObject({ status: 'failed', reruns: 0 });
      await store.setTenantLimits(t, { quotaUnits: 20 });
      expect((await store.rerun(f.id, Date.now() + 60_000, t, charge)).outcome).toBe('rerun');
      expect((await store.quotaUsage(t, adm)).spent).toBe(15);
      await store.cancel(f.id, null, t);
      expect((await store.quotaUsage(t, adm)).spent).toBe(10);
      // Without a charge a rerun is free, and its cancel refunds nothing.
      expect((await store.rerun(f.id, Date.now() + 60_000, t)).outcome).toBe('rerun');
      await store.cancel(f.id, null, t);
      expect((await store.quotaUsage(t, adm)).spent).toBe(10);
    });

    it('pings', async () => {
      await expect(store.ping()).resolves.toBeUndefined();
    });
  });
}
