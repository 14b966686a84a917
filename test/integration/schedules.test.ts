/**
 * Cron schedules on a real Redis: the schedule store conformance cases (on Redis and on the
 * Redis Cluster), two schedulers with their own connections (as two processes would be)
 * firing a schedule every second with exactly one task per slot, and each catch-up policy
 * after both were stopped for a while.
 */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createApp } from '../../api/app.ts';
import { MemoryBroker } from '../../common/broker/memory.ts';
import { silentLogger } from '../../common/logger.ts';
import type { CatchUpPolicy, ScheduleStore } from '../../common/schedules/port.ts';
import { RedisScheduleStore } from '../../common/schedules/redis.ts';
import { scheduleConformance } from '../../common/schedules/schedules.case.ts';
import { Scheduler } from '../../common/schedules/scheduler.ts';
import type { ScheduleView } from '../../common/schedules/views.ts';
import type { CreateOptions, CreateResult } from '../../common/store/port.ts';
import { RedisTaskStore } from '../../common/store/redis.ts';
import type { NewTask } from '../../common/task.ts';
import { defaultRegistry } from '../../worker/task-types.ts';
import { services } from '../support/services.ts';
import { sleep } from '../support/wait.ts';

async function scheduleStore(opts: { prefix?: string; cluster?: boolean } = {}): Promise<RedisScheduleStore> {
  const s = services();
  const store = opts.cluster
    ? new RedisScheduleStore({ url: s.REDIS_CLUSTER_URL, cluster: true, keyPrefix: opts.prefix ?? `{s${randomUUID().slice(0, 8)}}:` })
    : new RedisScheduleStore({ host: s.REDIS_HOST, port: Number(s.REDIS_PORT), keyPrefix: opts.prefix ?? `s${randomUUID().slice(0, 8)}:` });
  if (!(await store.connect(10_000))) throw new Error(`could not connect the schedule store to the test Redis${opts.cluster ? ' Cluster' : ''}`);
  return store;
}

scheduleConformance('redis', () => scheduleStore());
scheduleConformance('redis cluster', () => scheduleStore({ cluster: true }));

/** Every task a schedule's firing created (not replayed): its slot and when it was created. */
interface Created {
  scheduleId: string;
  slot: number;
  at: number;
}

/** A Redis task store that notes the tasks created under a schedule's Idempotency-Key. */
class NotingStore extends RedisTaskStore {
  constructor(
    opts: ConstructorParameters<typeof RedisTaskStore>[0],
    private readonly created: Created[],
  ) {
    super(opts);
  }
  override async create(task: NewTask, publishDueAt: number, opts: CreateOptions = {}): Promise<CreateResult> {
    const r = await super.create(task, publishDueAt, opts);
    const m = /^schedule:(sch_[0-9a-f]{24}):(\d+)$/.exec(opts.idempotency?.key ?? '');
    if (m && r.outcome === 'created') this.created.push({ scheduleId: m[1] ?? '', slot: Number(m[2]), at: Date.now() });
    return r;
  }
}

/** One replica: its own Redis connections, broker and scheduler, as an API or a worker process has. */
async function replica(prefix: string, created: Created[], over: { onTimeMs?: number; catchUpMs?: number } = {}) {
  const env = services();
  const store = new NotingStore({ host: env.REDIS_HOST, port: Number(env.REDIS_PORT), keyPrefix: prefix }, created);
  if (!(await store.connect(10_000))) throw new Error('could not connect to the test Redis');
  const schedules = await scheduleStore({ prefix });
  const broker = new MemoryBroker();
  const registry = defaultRegistry();
  const make = () =>
    new Scheduler({
      schedules,
      logger: silentLogger,
      defaultMaxAttempts: 3,
      tickMs: 100,
      ...over,
      submit: {
        store,
        broker,
        registry,
        logger: silentLogger,
        requestTopic: 'req',
        publishTimeoutMs: 2000,
        relayAfterMs: 5000,
        idempotencyTtlSeconds: 3600,
        limits: { submitsPerSecond: 0, quotaUnits: 0, quotaWindowSeconds: 86_400 },
      },
    });
  const app = createApp({
    store,
    broker,
    registry,
    schedules,
    logger: silentLogger,
    options: { requestTopic: 'req', bodyLimit: 65_536, requestTimeoutMs: 2000, relayAfterMs: 5000, maxAttempts: 3 },
  });
  return {
    store,
    schedules: schedules as ScheduleStore,
    make,
    create: async (body: unknown) => {
      const res = await app.request('http://localhost/schedules', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      expect(res.status).toBe(201);
      return (await res.json()) as ScheduleView;
    },
    close: async () => {
      await store.close();
      await schedules.close();
      await broker.close({ graceMs: 0 });
    },
  };
}

const everySecond = (name: string, catchUp: CatchUpPolicy = 'latest') => ({
  name,
  cron: '* * * * * *',
  catch_up: catchUp,
  task: { type: 'agent', input: { content: name } },
});

/** The slots of one schedule, in order. */
const slotsOf = (created: Created[], id: string) =>
  created
    .filter((c) => c.scheduleId === id)
    .map((c) => c.slot)
    .sort((a, b) => a - b);

describe('cron schedules across replicas sharing one Redis', () => {
  it('two schedulers fire a schedule every second: exactly one task per slot, none missed', async () => {
    const prefix = `sch-${randomUUID().slice(0, 8)}:`;
    const created: Created[] = [];
    const [a, b] = await Promise.all([replica(prefix, created), replica(prefix, created)]);
    try {
      const s = await a.create(everySecond('race'));
      const schedulers = [a.make().start(), b.make().start()];
      await sleep(6000);
      await Promise.all(schedulers.map((x) => x.stop()));
      const slots = slotsOf(created, s.schedule_id);
      expect(slots.length).toBeGreaterThanOrEqual(4);
      expect(new Set(slots).size).toBe(slots.length);
      // Every second from the first slot on, none twice, none left out.
      const first = new Date(s.next_run_at ?? '').getTime();
      expect(slots).toEqual(slots.map((_, i) => first + i * 1000));
      // The replicas' firings add up to the tasks, and so does the record.
      expect(schedulers.reduce((n, x) => n + x.stats.fired, 0)).toBe(slots.length);
      const rec = await a.schedules.get(s.schedule_id);
      expect(rec).toMatchObject({ fired: slots.length, skipped: 0, lastFiredAt: slots.at(-1) });
      const tasks = (await a.store.list({ tenant: 'default', limit: 100 })).tasks;
      expect(tasks).toHaveLength(slots.length);
      expect(tasks.map((t) => t.id)).toContain(rec?.lastTaskId);
      expect(new Set(tasks.map((t) => JSON.stringify(t.input)))).toEqual(new Set([JSON.stringify({ content: 'race' })]));
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  it('after both schedulers were stopped for a while, each schedule follows its catch-up policy', async () => {
    const prefix = `sch-${randomUUID().slice(0, 8)}:`;
    const created: Created[] = [];
    const onTimeMs = 1000;
    const over = { onTimeMs, catchUpMs: 60_000 };
    const [a, b] = await Promise.all([replica(prefix, created, over), replica(prefix, created, over)]);
    try {
      const latest = await a.create(everySecond('latest', 'latest'));
      const none = await a.create(everySecond('none', 'none'));
      const all = await a.create(everySecond('all', 'all'));
      let schedulers = [a.make().start(), b.make().start()];
      await sleep(2500);
      await Promise.all(schedulers.map((x) => x.stop()));
      await sleep(6000); // the outage: about six slots of each schedule go by
      const restart = Date.now();
      schedulers = [a.make().start(), b.make().start()];
      await sleep(2500);
      await Promise.all(schedulers.map((x) => x.stop()));

      /** The slots the outage left out, and the first slot fired after them. */
      const hole = (id: string) => {
        const slots = slotsOf(created, id);
        expect(new Set(slots).size, 'no slot twice').toBe(slots.length);
        const gaps = slots.flatMap((t, i) => (i > 0 && t - (slots[i - 1] ?? 0) > 1000 ? [{ missing: (t - (slots[i - 1] ?? 0)) / 1000 - 1, after: t }] : []));
        expect(gaps.length, `${id}: at most one run of left-out slots`).toBeLessThanOrEqual(1);
        return { slots, missing: gaps[0]?.missing ?? 0, after: gaps[0]?.after ?? null };
      };

      // all: every slot of the outage fired after it, each once, oldest first.
      const h = hole(all.schedule_id);
      expect(h.missing).toBe(0);
      expect(created.filter((c) => c.scheduleId === all.schedule_id && c.at >= restart && c.at - c.slot > onTimeMs).length).toBeGreaterThanOrEqual(4);
      expect(await a.schedules.get(all.schedule_id)).toMatchObject({ skipped: 0, fired: h.slots.length });

      // none: the slots of the outage were skipped, and counted.
      const n = hole(none.schedule_id);
      expect(n.missing).toBeGreaterThanOrEqual(4);
      expect(await a.schedules.get(none.schedule_id)).toMatchObject({ skipped: n.missing, fired: n.slots.length });
      const lateNone = created.filter((c) => c.scheduleId === none.schedule_id && c.at >= restart).map((c) => c.at - c.slot);
      expect(Math.max(...lateNone)).toBeLessThan(onTimeMs + 500);

      // latest: one task for the most recent missed slot, fired late, the older ones skipped.
      const l = hole(latest.schedule_id);
      expect(l.missing).toBeGreaterThanOrEqual(3);
      expect(await a.schedules.get(latest.schedule_id)).toMatchObject({ skipped: l.missing, fired: l.slots.length });
      const caughtUp = created.find((c) => c.scheduleId === latest.schedule_id && c.slot === l.after);
      expect(caughtUp && caughtUp.at - caughtUp.slot).toBeGreaterThan(onTimeMs);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });
});
