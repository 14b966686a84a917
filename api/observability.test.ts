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
import type { StatsView } from '../common/views.ts';
import { waitFor } from '../test/support/wait.ts';
import { defaultRegistry } from '../worker/task-types.ts';
import { Worker } from '../worker/worker.ts';
import { createApp } from './app.ts';

const TOPIC = 'requests';
const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(opts: { worker?: boolean } = {}) {
  const registry = defaultRegistry();
  const metrics = new Metrics({ types: registry.names() });
  const store = new MemoryTaskStore();
  const inner = new MemoryBroker();
  const broker = instrumentBroker(inner, metrics, topicKinds(allRequestTopics(TOPIC), 'results', inner.deadLetterTopic('workers')));
  const backlog = backlogProbe(broker, { topic: TOPIC, group: 'workers', cacheMs: 0 });
  metrics.trackBacklog(backlog);
  const worker =
    opts.worker === false
      ? undefined
      : new Worker({
          broker,
          store,
          registry,
          logger: silentLogger,
          metrics,
          options: {
            id: 'w-test',
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
          },
        });
  await worker?.start();
  cleanups.push(
    () => inner.close({ graceMs: 0 }),
    async () => worker?.shutdown(),
  );
  const app = createApp({
    store,
    broker,
    registry,
    logger: silentLogger,
    metrics,
    backlog,
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
  return { app, store, metrics, keyFor, call };
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
