/** GET /metrics and GET /stats through the app, with a worker in process (the embedded default) and API keys on. */
import { afterEach, describe, expect, it } from 'vitest';
import { newApiKey } from '../common/api-keys.ts';
import { backlogProbe } from '../common/backlog.ts';
import { MemoryBroker } from '../common/broker/memory.ts';
import { silentLogger } from '../common/logger.ts';
import { Metrics, instrumentBroker, topicKinds } from '../common/metrics.ts';
import { allRequestTopics } from '../common/messages.ts';
import { MemoryTaskStore } from '../common/store/memory.ts';
import type { Scope } from '../common/store/port.ts';
import { loadConfig } from '../common/config.ts';
import { requestOutgoing, requestTopicFor } from '../common/messages.ts';
import { startRelay } from '../common/relay.ts';
import { MemoryScheduleStore } from '../common/schedules/memory.ts';
import { newSchedule } from '../common/schedules/schedules.case.ts';
import { startScheduler } from '../common/schedules/wiring.ts';
import type { StatsView } from '../common/views.ts';
import { waitFor } from '../test/support/wait.ts';
import { defaultRegistry } from '../worker/task-types.ts';
import { Worker, type WorkerOptions } from '../worker/worker.ts';
import { createApp } from './app.ts';

const TOPIC = 'requests';
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** `relay`: one republishing retries every 20 ms. The store's clock is `Date.now() + skew` (`ageStore` moves it on, to expire leases). */
async function setup(opts: { worker?: boolean; relay?: boolean } = {}) {
  const registry = defaultRegistry();
  const metrics = new Metrics({ types: registry.names() });
  let skew = 0;
  const store = new MemoryTaskStore({}, () => Date.now() + skew);
  const inner = new MemoryBroker();
  const broker = instrumentBroker(inner, metrics, topicKinds(allRequestTopics(TOPIC), 'results', inner.deadLetterTopic('workers')));
  const backlog = backlogProbe(broker, { topic: TOPIC, group: 'workers', cacheMs: 0 });
  metrics.trackBacklog(backlog);
  const schedules = new MemoryScheduleStore();
  const workerOptions = (id: string): WorkerOptions => ({
    id,
    requestTopic: TOPIC,
    resultTopic: 'results',
    group: 'workers',
    concurrency: 2,
    leaseMs: 5000,
    shutdownGraceMs: 1000,
    retryBaseMs: 10,
    retryMaxMs: 20,
    taskTimeoutMs: 5000,
    heartbeatMs: 1000,
  });
  const worker = opts.worker === false ? undefined : new Worker({ broker, store, registry, logger: silentLogger, metrics, options: workerOptions('w-test') });
  await worker?.start();
  cleanups.push(
    () => inner.close({ graceMs: 0 }),
    async () => worker?.shutdown(),
  );
  if (opts.relay) {
    const relay = startRelay({ store, broker, topic: TOPIC, logger: silentLogger, intervalMs: 20 });
    cleanups.push(() => relay.stop());
  }
  const app = createApp({
    store,
    broker,
    registry,
    logger: silentLogger,
    metrics,
    backlog,
    schedules,
    options: {
      requestTopic: TOPIC,
      resultTopic: 'results',
      bodyLimit: 1024 * 1024,
      requestTimeoutMs: 500,
      relayAfterMs: 5000,
      maxAttempts: 1,
      auth: { mode: 'keys' },
    },
  });
  const keyFor = async (tenant: string, scopes: Scope[] = ['tasks:write', 'tasks:read']) => {
    const { secret, hash, key } = newApiKey(tenant, scopes, null);
    await store.createKey(key, hash);
    return secret;
  };
  const call = (key: string | null, method: string, path: string, body?: unknown) =>
    app.request(`http://localhost${path}`, {
      method,
      headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  /** A second worker of the group, not subscribed: the test hands it deliveries (Worker.handle). */
  const secondWorker = () => new Worker({ broker, store, registry, logger: silentLogger, metrics, options: workerOptions('w-two') });
  const ageStore = (ms: number) => void (skew += ms);
  return { app, store, broker, registry, schedules, metrics, keyFor, call, secondWorker, ageStore };
}

/** Submits a task through POST /tasks and answers its id. */
async function submit(call: Awaited<ReturnType<typeof setup>>['call'], key: string, body: unknown): Promise<string> {
  const res = await call(key, 'POST', '/tasks', body);
  expect(res.status).toBe(202);
  return ((await res.json()) as { task_id: string }).task_id;
}

describe('GET /metrics', () => {
  it('answers without a key, in the Prometheus text format, with the process metrics', async () => {
    const { call } = await setup({ worker: false });
    const res = await call(null, 'GET', '/metrics');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    expect(text).toContain('atq_process_resident_memory_bytes');
    expect(text).toContain('# TYPE atq_tasks_submitted_total counter');
    expect((await call(null, 'POST', '/metrics')).status).toBe(405);
  });

  it('counts submissions by type and outcome, finished tasks, retries and dead letters, and requests by route pattern', async () => {
    const { call, keyFor, metrics, store } = await setup();
    const key = await keyFor('acme');
    const ok = (await (await call(key, 'POST', '/tasks', { type: 'agent', input: { content: 'great keyboard' } })).json()) as { task_id: string };
    const bad = (await (await call(key, 'POST', '/tasks', { type: 'agent', input: { content: 'x', fail_times: 5 } })).json()) as { task_id: string };
    expect((await call(key, 'POST', '/tasks', { type: 'agent', input: { nope: 1 } })).status).toBe(400);
    expect((await call(key, 'POST', '/tasks', { type: 'made_up', input: {} })).status).toBe(400);
    expect((await call(null, 'POST', '/tasks', { type: 'agent', input: { content: 'x' } })).status).toBe(401);
    await waitFor('the condition', async () => (await store.get(ok.task_id))?.status === 'done' && (await store.get(bad.task_id))?.status === 'failed', {
      timeoutMs: 5000,
    });
    expect((await call(key, 'GET', `/tasks/${ok.task_id}`)).status).toBe(200);
    expect((await call(key, 'GET', `/tasks/${bad.task_id}`)).status).toBe(200);

    expect(await metrics.value('atq_tasks_submitted_total', { type: 'agent', outcome: 'accepted' })).toBe(2);
    // A body refused before it was read as a task (bad input, an unknown type, no key) has no type: `other`.
    expect(await metrics.value('atq_tasks_submitted_total', { type: 'other', outcome: 'rejected' })).toBe(3);
    await waitFor('the condition', async () => (await metrics.value('atq_tasks_finished_total', { type: 'agent', outcome: 'failed' })) === 1, {
      timeoutMs: 2000,
    });
    expect(await metrics.value('atq_tasks_finished_total', { type: 'agent', outcome: 'done' })).toBe(1);
    expect(await metrics.value('atq_dead_letters_total', { code: 'handler_error' })).toBe(1);
    expect(await metrics.value('atq_task_run_seconds_count', { type: 'agent', outcome: 'done' })).toBe(1);
    expect(await metrics.value('atq_task_queue_wait_seconds_count', { type: 'agent' })).toBe(2);
    expect(await metrics.value('atq_submit_duration_seconds_count', { outcome: 'accepted' })).toBe(2);
    expect(await metrics.value('atq_broker_publish_duration_seconds_count', { kind: 'request', outcome: 'ok' })).toBe(2);
    await waitFor(
      'the condition',
      async () => (await metrics.value('atq_broker_publish_duration_seconds_count', { kind: 'dead_letter', outcome: 'ok' })) === 1,
      { timeoutMs: 2000 },
    );
    expect(await metrics.value('atq_broker_publish_duration_seconds_count', { kind: 'result', outcome: 'ok' })).toBe(2);

    const text = await (await call(null, 'GET', '/metrics')).text();
    expect(text).toContain('atq_http_requests_total{method="GET",route="/tasks/:id",status="200"} 2');
    expect(text).toContain('atq_http_requests_total{method="POST",route="/tasks",status="401"} 1');
    expect(text).not.toContain(ok.task_id);
    expect(text).not.toContain('acme');
    expect(text).toContain('atq_worker_free_slots 2');
    expect(text).toMatch(/atq_backlog_messages\{priority="normal"\} 0/);
  });
});

describe('GET /metrics: retries and lost leases', () => {
  it('counts a failed attempt put back for a retry, and its run time, before the task ends done', async () => {
    const { call, keyFor, metrics, store } = await setup({ relay: true });
    const key = await keyFor('acme');
    const id = await submit(call, key, { type: 'agent', input: { content: 'flaky', fail_times: 1 }, max_attempts: 2 });
    await waitFor('done', async () => (await store.get(id))?.status === 'done', { timeoutMs: 5000 });
    await waitFor('the end counted', async () => (await metrics.value('atq_tasks_finished_total', { type: 'agent', outcome: 'done' })) === 1);
    expect((await store.get(id))?.attempt).toBe(2);
    expect(await metrics.value('atq_task_retries_total', { type: 'agent' })).toBe(1);
    expect(await metrics.value('atq_task_run_seconds_count', { type: 'agent', outcome: 'retry' })).toBe(1);
    expect(await metrics.value('atq_task_run_seconds_count', { type: 'agent', outcome: 'done' })).toBe(1);
    expect(await metrics.value('atq_tasks_finished_total', { type: 'agent', outcome: 'failed' })).toBeUndefined();
    expect(await metrics.value('atq_dead_letters_total', { code: 'handler_error' })).toBeUndefined();
    // The wait before the retry is not queue wait: only the first attempt's.
    expect(await metrics.value('atq_task_queue_wait_seconds_count', { type: 'agent' })).toBe(1);
  });

  it('counts claims after a lost lease (a rerun, an exhausted task) and the run time of the attempt that lost it', async () => {
    const { call, keyFor, metrics, store, secondWorker, ageStore } = await setup();
    const key = await keyFor('acme');
    const w2 = secondWorker();
    const deliveryOf = async (id: string) => {
      const t = await store.get(id);
      if (!t) throw new Error(`no task ${id}`);
      return { topic: requestTopicFor(TOPIC, t.priority), attempt: 2, headers: {}, tag: t.type, ...requestOutgoing(t) };
    };
    // w-test runs the task; its lease runs out (the store's clock jumps a minute) and w-two claims it: a rerun, to done.
    const rerun = await submit(call, key, { type: 'agent', input: { content: 'slow', simulate_ms: 100 }, max_attempts: 2 });
    await waitFor('running on w-test', async () => (await store.get(rerun))?.worker === 'w-test');
    ageStore(60_000);
    expect(await w2.handle(await deliveryOf(rerun))).toBe('done');
    expect(await metrics.value('atq_lease_lost_claims_total', { type: 'agent', outcome: 'rerun' })).toBe(1);
    // w-test's attempt ends no longer its own: its run time counts as `lost`, its end is w-two's.
    await waitFor('the lost attempt counted', async () => (await metrics.value('atq_task_run_seconds_count', { type: 'agent', outcome: 'lost' })) === 1);
    expect(await metrics.value('atq_tasks_finished_total', { type: 'agent', outcome: 'done' })).toBe(1);
    expect(await metrics.value('atq_task_run_seconds_count', { type: 'agent', outcome: 'done' })).toBe(1);

    // On its last attempt: w-two's claim fails it worker_lost, without running it.
    const exhausted = await submit(call, key, { type: 'agent', input: { content: 'slow', simulate_ms: 100 } });
    await waitFor('running on w-test', async () => (await store.get(exhausted))?.worker === 'w-test');
    ageStore(60_000);
    expect(await w2.handle(await deliveryOf(exhausted))).toBe('failed');
    expect((await store.get(exhausted))?.error?.code).toBe('worker_lost');
    expect(await metrics.value('atq_lease_lost_claims_total', { type: 'agent', outcome: 'exhausted' })).toBe(1);
    expect(await metrics.value('atq_tasks_finished_total', { type: 'agent', outcome: 'failed' })).toBe(1);
    expect(await metrics.value('atq_dead_letters_total', { code: 'worker_lost' })).toBe(1);
    await waitFor('the lost attempt counted', async () => (await metrics.value('atq_task_run_seconds_count', { type: 'agent', outcome: 'lost' })) === 2);
    // Nothing counted twice: one end per task.
    expect(await metrics.value('atq_tasks_finished_total', { type: 'agent' })).toBe(2);
    expect(await metrics.value('atq_lease_lost_claims_total', { type: 'agent' })).toBe(2);
  });
});

describe('GET /metrics: submissions by source', () => {
  it('counts the steps of workflows and templates, ctx.spawn children, reruns and redrives, each by its source', async () => {
    const { call, keyFor, metrics, store } = await setup();
    const key = await keyFor('acme');
    const submitted = (labels: Record<string, string>) => metrics.value('atq_tasks_submitted_total', labels);
    const steps = [
      { id: 'a', type: 'agent', input: { content: 'a' } },
      { id: 'b', type: 'agent', input: { content: 'b' }, needs: ['a'] },
    ];
    expect((await call(key, 'POST', '/workflows', { steps })).status).toBe(202);
    expect((await call(key, 'POST', '/workflows', { template: 'seed_report', input: { topic: 'keyboards' } })).status).toBe(202);
    expect((await call(key, 'POST', '/workflows', { steps: [{ id: 'a', type: 'made_up', input: {} }] })).status).toBe(400);
    expect(await submitted({ type: 'agent', outcome: 'accepted', source: 'workflow' })).toBe(2);
    expect(await submitted({ type: 'report_research', outcome: 'accepted', source: 'workflow' })).toBe(1);
    expect(await submitted({ type: 'report_analyst', outcome: 'accepted', source: 'workflow' })).toBe(3);
    expect(await submitted({ type: 'report_writer', outcome: 'accepted', source: 'workflow' })).toBe(1);

    // A coordinator's ctx.spawn: two analysts and a writer, in the worker's metrics (the same registry here).
    await submit(call, key, { type: 'report_coordinator', input: { topic: 'mice', parts: 2 } });
    await waitFor('the children counted', async () => (await submitted({ source: 'spawn' })) === 3, { timeoutMs: 5000 });
    expect(await submitted({ type: 'report_analyst', outcome: 'accepted', source: 'spawn' })).toBe(2);
    expect(await submitted({ type: 'report_writer', outcome: 'accepted', source: 'spawn' })).toBe(1);
    expect(await submitted({ type: 'report_coordinator', outcome: 'accepted', source: 'http' })).toBe(1);

    // Reruns: POST /tasks/:id/retry of a failed task, one of a done task (refused), and a redrive.
    const failed = await submit(call, key, { type: 'agent', input: { content: 'x', fail_times: 9 } });
    const done = await submit(call, key, { type: 'agent', input: { content: 'y' } });
    const ended = async (id: string, status: string) => waitFor(status, async () => (await store.get(id))?.status === status, { timeoutMs: 5000 });
    await ended(failed, 'failed');
    await ended(done, 'done');
    expect((await call(key, 'POST', `/tasks/${failed}/retry`)).status).toBe(202);
    expect((await call(key, 'POST', `/tasks/${done}/retry`)).status).toBe(409);
    await ended(failed, 'failed');
    expect(await (await call(key, 'POST', '/dead-letters/redrive', { task_ids: [failed] })).json()).toMatchObject({ redriven: 1 });
    expect(await submitted({ type: 'agent', outcome: 'accepted', source: 'rerun' })).toBe(2);
    expect(await submitted({ type: 'agent', outcome: 'rejected', source: 'rerun' })).toBe(1);
    // POST /tasks itself: the coordinator and these two.
    expect(await submitted({ source: 'http' })).toBe(3);
  });

  it("counts a schedule's firings as source schedule, through the process wiring (startScheduler)", async () => {
    const { store, broker, registry, schedules, metrics } = await setup({ worker: false });
    const minute = Math.floor(Date.now() / 60_000) * 60_000;
    await schedules.create(newSchedule({ tenant: 'acme', nextRunAt: minute, createdAt: minute - 60_000 }));
    const scheduler = startScheduler(loadConfig({ SCHEDULER_TICK_MS: '50' }), { schedules, store, broker, registry, logger: silentLogger, metrics });
    cleanups.push(async () => scheduler?.stop());
    await waitFor('the firing counted', async () => (await metrics.value('atq_tasks_submitted_total', { source: 'schedule' })) !== undefined);
    await scheduler?.stop();
    expect(await metrics.value('atq_tasks_submitted_total', { type: 'agent', outcome: 'accepted', source: 'schedule' })).toBe(1);
    expect(await metrics.value('atq_tasks_submitted_total', { source: 'http' })).toBeUndefined();
    expect(await metrics.value('atq_submit_duration_seconds_count', { outcome: 'accepted' })).toBe(1);
  });
});

describe('GET /metrics: cancelled tasks', () => {
  const steps = [
    { id: 'a', type: 'agent', input: { content: 'slow', simulate_ms: 400 } },
    { id: 'b', type: 'agent', input: { content: 'b' }, needs: ['a'] },
    { id: 'c', type: 'agent', input: { content: 'c' }, needs: ['b'] },
  ];
  const cancelled = (m: Metrics) => m.value('atq_tasks_finished_total', { type: 'agent', outcome: 'cancelled' });

  it('counts every step a DELETE /workflows/:id cancels once: the waiting ones in the API, the running one in its worker', async () => {
    const { call, keyFor, metrics, store } = await setup();
    const key = await keyFor('acme');
    const wf = (await (await call(key, 'POST', '/workflows', { steps })).json()) as { workflow_id: string; steps: Record<string, string> };
    await waitFor('a running', async () => (await store.get(wf.steps.a ?? ''))?.status === 'running');
    expect((await call(key, 'DELETE', `/workflows/${wf.workflow_id}`)).status).toBe(200);
    await waitFor('the three ends counted', async () => (await cancelled(metrics)) === 3);
    await new Promise((r) => setTimeout(r, 100));
    expect(await cancelled(metrics)).toBe(3);
    expect(await metrics.value('atq_task_run_seconds_count', { type: 'agent', outcome: 'cancelled' })).toBe(1);
  });

  it("counts the steps a DELETE of one step cancels, and the steps a failing step's workflow cancels", async () => {
    const { call, keyFor, metrics, store } = await setup();
    const key = await keyFor('acme');
    const first = (await (await call(key, 'POST', '/workflows', { steps })).json()) as { steps: Record<string, string> };
    await waitFor('a running', async () => (await store.get(first.steps.a ?? ''))?.status === 'running');
    expect((await call(key, 'DELETE', `/tasks/${first.steps.a}`)).status).toBe(200);
    // b and c by the API, a by its worker.
    await waitFor('the three ends counted', async () => (await cancelled(metrics)) === 3);

    const failing = [{ id: 'a', type: 'agent', input: { content: 'boom', fail_times: 9 } }, ...steps.slice(1)];
    const second = (await (await call(key, 'POST', '/workflows', { steps: failing })).json()) as { workflow_id: string };
    await waitFor('the workflow failed', async () => (await store.getWorkflow(second.workflow_id))?.status === 'failed');
    await waitFor('its cancelled steps counted', async () => (await cancelled(metrics)) === 5);
    expect(await metrics.value('atq_tasks_finished_total', { type: 'agent', outcome: 'failed' })).toBe(1);
    await new Promise((r) => setTimeout(r, 100));
    expect(await cancelled(metrics)).toBe(5);
  });
});

describe('GET /stats', () => {
  it("needs tasks:read and answers the tenant's counts, the backlog and the live workers", async () => {
    const { call, keyFor, store } = await setup();
    const key = await keyFor('acme');
    const other = await keyFor('other');
    const writer = await keyFor('acme', ['tasks:write']);
    expect((await call(null, 'GET', '/stats')).status).toBe(401);
    expect((await call(writer, 'GET', '/stats')).status).toBe(403);
    const ids: string[] = [];
    for (const input of [{ content: 'a' }, { content: 'b' }, { content: 'c', fail_times: 3 }]) {
      ids.push(((await (await call(key, 'POST', '/tasks', { type: 'agent', input })).json()) as { task_id: string }).task_id);
    }
    await waitFor(
      'the condition',
      async () => (await Promise.all(ids.map((id) => store.get(id)))).every((t) => t && (t.status === 'done' || t.status === 'failed')),
      { timeoutMs: 5000 },
    );
    const res = await call(key, 'GET', '/stats');
    expect(res.status).toBe(200);
    const stats = (await res.json()) as StatsView;
    expect(stats.tenant).toBe('acme');
    expect(stats.tasks).toEqual({
      by_status: { scheduled: 0, waiting: 0, queued: 0, running: 0, done: 2, failed: 1, cancelled: 0 },
      by_type: { agent: 3 },
      scanned: 3,
      truncated: false,
    });
    expect(stats.backlog).toEqual({ high: 0, normal: 0, low: 0 });
    expect(stats.workers).toHaveLength(1);
    expect(stats.workers[0]).toMatchObject({ id: 'w-test', concurrency: 2, version: '0.1.0' });
    expect(typeof stats.workers[0]?.started_at).toBe('string');
    // Another tenant sees none of acme's tasks.
    const theirs = (await (await call(other, 'GET', '/stats')).json()) as StatsView;
    expect(theirs.tasks.scanned).toBe(0);
    expect((await call(key, 'POST', '/stats')).status).toBe(405);
  });
});
