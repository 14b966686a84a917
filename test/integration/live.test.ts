/**
 * What a caller sees while a task runs, on real Redis and a real broker, with the API and
 * the worker as separate processes: the typed client streaming events over HTTP with a
 * reconnect (to another API replica) in the middle of a task, cancellation reaching the
 * worker process, priorities under a backlog, downstream results without duplicates, and
 * Redis emptied of finished tasks after their TTL.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TaskClient, type TaskEvent } from '../../client/index.ts';
import { createResultBroker, subscribeResults } from '../../client/results.ts';
import type { Broker, Subscription } from '../../common/broker/port.ts';
import type { RedisTaskStore } from '../../common/store/redis.ts';
import type { ResultMessage } from '../../common/task.ts';
import { killAll, startApi, startEntry, type Child } from '../support/processes.ts';
import { createRocketTopics, isolatedRun, redisKeys, redisStore, services } from '../support/services.ts';
import { waitFor } from '../support/wait.ts';

describe.each(['kafka', 'rocketmq'] as const)('live tasks on %s', (broker) => {
  const { prefix, names, env } = isolatedRun('live', broker, {
    WORKER_CONCURRENCY: '2',
    LEASE_MS: '5000',
    MQ_INVISIBLE_MS: '10000',
    KAFKA_SESSION_TIMEOUT_MS: '6000',
  });
  const downstreamGroup = `${names.group}-downstream`;
  let apiA: { child: Child; url: string };
  let apiB: { child: Child; url: string };
  let worker: Child | undefined;
  let store: RedisTaskStore;
  let resultBroker: Broker;
  let results: Subscription;
  const received: ResultMessage[] = [];

  const startWorker = async (name: string, extra: Record<string, string> = {}) => {
    const w = startEntry(name, 'run-worker.ts', { ...env, WORKER_ID: name, ...extra });
    await w.waitForLine(/worker started/);
    return w;
  };

  beforeAll(async () => {
    if (broker === 'rocketmq') await createRocketTopics([...names.requests, names.result, names.deadLetter], [...names.groups, downstreamGroup]);
    store = await redisStore({ keyPrefix: prefix });
    // Two API replicas: an event stream may resume on either.
    apiA = await startApi(env);
    apiB = await startApi(env);
    worker = await startWorker('live-worker-1');
    const s = services();
    resultBroker = await createResultBroker(
      broker === 'kafka' ? { kind: 'kafka', brokers: s.KAFKA_BROKERS.split(',') } : { kind: 'rocketmq', endpoint: s.MQ_ENDPOINT },
    );
    results = await subscribeResults(resultBroker, { topic: names.result, group: downstreamGroup, onResult: (m) => void received.push(m) });
  });

  afterAll(async (ctx) => {
    if (ctx.tasks.some((t) => t.result?.state === 'fail')) {
      for (const c of [apiA?.child, apiB?.child, worker]) if (c) process.stderr.write(`--- ${c.name} (last lines)\n${c.lines.slice(-15).join('\n')}\n`);
    }
    await results?.close({ graceMs: 1000 });
    await resultBroker?.close({ graceMs: 1000 });
    await store?.close();
    await killAll();
  });

  it('streams a task with the typed client, resuming on another API replica after Last-Event-ID mid-task', async () => {
    const a = new TaskClient({ baseUrl: apiA.url });
    const b = new TaskClient({ baseUrl: apiB.url });
    const submitted = await a.submit({
      type: 'agent',
      input: { content: 'one two three four five six seven eight nine ten eleven twelve', simulate_ms: 300 },
      user_id: 'streamer',
    });
    if (submitted.finished) throw new Error('the task should not have finished yet');
    const id = submitted.task_id;

    const first: TaskEvent[] = [];
    const ac = new AbortController();
    try {
      for await (const e of a.stream(id, { signal: ac.signal })) {
        first.push(e);
        if (e.event === 'progress') break; // drop the connection mid-task
      }
    } finally {
      ac.abort();
    }
    expect((await a.get(id)).status).toBe('running');
    const last = first.at(-1);
    if (!last) throw new Error('no events before the reconnect');

    const rest: TaskEvent[] = [];
    for await (const e of b.stream(id, { lastEventId: last.id })) rest.push(e);
    const all = [...first, ...rest];
    const ids = all.map((e) => e.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(all.at(-1)?.event).toBe('done');
    // Nothing lost: exactly the stored history, in order.
    const history = (await b.get(id, { history: true })).history ?? [];
    expect(ids).toEqual(history.map((e) => e.id));
    const kinds = new Set(all.map((e) => e.event));
    for (const k of ['status', 'progress', 'partial', 'log', 'done'] as const) expect(kinds).toContain(k);
    const output = all.flatMap((e) => (e.event === 'partial' ? [e.data.chunk] : [])).join('');
    const view = await a.wait(id);
    expect(view.output).toBe(output);
    expect(view.result).toMatchObject({ summary: output });
    // Downstream: its result, once, through the deduplicating subscriber.
    await waitFor('the result downstream', () => received.some((m) => m.task_id === id), { timeoutMs: 30_000 });
    expect(received.filter((m) => m.task_id === id)).toHaveLength(1);
  });

  it('cancels a running task: the worker process aborts the handler within 1 s and publishes a cancelled result', async () => {
    const client = new TaskClient({ baseUrl: apiB.url });
    const submitted = await client.submit({ type: 'agent', input: { content: 'a long one', simulate_ms: 20_000 } });
    const id = submitted.task_id;
    await waitFor('the task to run', async () => (await client.get(id)).status === 'running', { timeoutMs: 30_000 });
    const sentAt = Date.now();
    const cancelled = await client.cancel(id);
    expect(cancelled.status).toBe('cancelled');
    const w = worker;
    if (!w) throw new Error('no worker');
    const abortLine = await waitFor(
      'the worker to abort the handler',
      () => w.records().find((r) => r.msg === 'cancel requested; aborting the handler' && r.task_id === id),
      { timeoutMs: 5000 },
    );
    const abortMs = Date.parse(String(abortLine.time)) - sentAt;
    process.stderr.write(`[live ${broker}] cancel reached the handler ${abortMs} ms after DELETE\n`);
    expect(abortMs).toBeLessThan(1000);
    await waitFor('the cancelled result downstream', () => received.some((m) => m.task_id === id), { timeoutMs: 30_000 });
    expect(received.filter((m) => m.task_id === id).map((m) => m.status)).toEqual(['cancelled']);
    const again = await fetch(`${apiA.url}/tasks/${id}`, { method: 'DELETE' });
    expect(again.status).toBe(409);
    expect((await client.get(id)).status).toBe('cancelled');
  });

  it('under a backlog, a worker starts high-priority tasks first, then normal, then low', async () => {
    const w = worker;
    await w?.stop('SIGTERM');
    worker = undefined;
    const client = new TaskClient({ baseUrl: apiA.url });
    const lane = new Map<string, string>();
    const PER_LANE = 6;
    for (const priority of ['low', 'normal', 'high'] as const) {
      for (let i = 0; i < PER_LANE; i++) {
        const s = await client.submit({ type: 'agent', input: { content: `${priority} ${i}`, simulate_ms: 50 }, priority });
        lane.set(s.task_id, priority);
      }
    }
    const solo = await startWorker('live-worker-solo', { WORKER_CONCURRENCY: '1' });
    worker = solo;
    await waitFor('the backlog to finish', async () => (await Promise.all([...lane.keys()].map((id) => client.get(id)))).every((t) => t.status === 'done'), {
      timeoutMs: 90_000,
      intervalMs: 500,
    });
    const order = solo
      .records()
      .filter((r) => r.msg === 'task started' && lane.has(String(r.task_id)))
      .map((r) => lane.get(String(r.task_id)) ?? '?');
    process.stderr.write(`[live ${broker}] start order: ${order.map((p) => p[0]).join('')}\n`);
    expect(order).toHaveLength(3 * PER_LANE);
    const meanRank = (p: string) => order.reduce((sum, q, i) => sum + (q === p ? i : 0), 0) / PER_LANE;
    expect(meanRank('high')).toBeLessThan(meanRank('normal'));
    expect(meanRank('normal')).toBeLessThan(meanRank('low'));
    // The high tasks are the first to start and the low ones the last, give or take the first
    // start or two: they go to whichever lane's consumer joined its group first.
    expect(order.lastIndexOf('high')).toBeLessThanOrEqual(PER_LANE + 1);
    expect(order.slice(2).indexOf('low') + 2).toBeGreaterThanOrEqual(2 * PER_LANE - 2);
  });

  it('lists the tasks of a user across replicas with a cursor', async () => {
    const a = new TaskClient({ baseUrl: apiA.url });
    const b = new TaskClient({ baseUrl: apiB.url });
    const user = `lister-${Date.now()}`;
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await a.submit({ user_id: user, content: `list me ${i}` })).task_id);
    const first = await a.list({ user_id: user, limit: 2 });
    expect(first.tasks).toHaveLength(2);
    const seen = first.tasks.map((t) => t.task_id);
    for await (const t of b.listAll({ user_id: user, limit: 2, ...(first.next_cursor ? { cursor: first.next_cursor } : {}) })) seen.push(t.task_id);
    expect([...seen].sort()).toEqual([...ids].sort());
  });
});

describe('retention', () => {
  it('leaves no key of a finished task in Redis once its TTL has passed', async () => {
    const { prefix, env } = isolatedRun('ttl', 'kafka', { RESULT_TTL_SECONDS: '3', WORKER_CONCURRENCY: '8', KAFKA_SESSION_TIMEOUT_MS: '6000' });
    try {
      const api = await startApi(env);
      const w = startEntry('ttl-worker', 'run-worker.ts', { ...env, WORKER_ID: 'ttl-worker' });
      await w.waitForLine(/worker started/);
      const client = new TaskClient({ baseUrl: api.url });
      const ids = await Promise.all(Array.from({ length: 100 }, (_, i) => client.submit({ user_id: `u${i % 5}`, content: `ttl ${i}` }).then((s) => s.task_id)));
      // Only a finished task expires, so a 404 here means it finished and its TTL passed.
      const seen = new Map<string, string>();
      let busy: string[] = [];
      // The live-worker registry (workers, workers:beats) belongs to the running worker, not to a task.
      const registry = new Set([`${prefix}workers`, `${prefix}workers:beats`]);
      const keys = async () => (await redisKeys(`${prefix}*`)).filter((k) => !registry.has(k));
      await waitFor(
        'all finished',
        async () => {
          busy = busy.length > 0 ? busy : await keys();
          const states = await Promise.all(
            ids.map((id) =>
              fetch(`${api.url}/tasks/${id}`).then(async (r) => (r.status === 404 ? 'expired' : ((await r.json()) as { status: string }).status)),
            ),
          );
          states.forEach((st, i) => seen.set(ids[i] ?? '', st === 'expired' ? (seen.get(ids[i] ?? '') ?? 'expired') : st));
          return states.every((st) => st === 'done' || st === 'expired');
        },
        { timeoutMs: 60_000, intervalMs: 300 },
      );
      expect([...seen.values()].filter((st) => st !== 'done' && st !== 'expired')).toEqual([]);
      expect(busy.length).toBeGreaterThan(100);
      // The hashes, histories and outputs expire; the relays' sweeper empties the indexes.
      await waitFor('redis to hold nothing of the run', async () => (await keys()).length === 0, { timeoutMs: 15_000, intervalMs: 500 });
      const list = await client.list({ limit: 100 });
      expect(list.tasks).toEqual([]);
      process.stderr.write(`[retention] ${ids.length} tasks: ${busy.length} keys while live, 0 after the 3 s TTL\n`);
    } finally {
      await killAll();
    }
  });
});
