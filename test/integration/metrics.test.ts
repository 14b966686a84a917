/**
 * Metrics and statistics on the real stack (Kafka, Redis, AUTH=keys; the API and one worker
 * as processes): a few tasks run, one failing its only attempt; the API's /metrics and the
 * worker's METRICS_PORT count exactly them (and the children a handler's ctx.spawn starts, on
 * the worker's); /stats counts them and lists the live worker, which leaves the list within
 * two heartbeats of a SIGKILL; with no worker left, the Kafka lag of a priority is its queued tasks.
 */
import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import type { StatsView } from '../../common/views.ts';
import { REPO_ROOT } from '../../infra/lib.ts';
import { killAll, startApi, startEntry, type Child } from '../support/processes.ts';
import { isolatedRun } from '../support/services.ts';
import { waitFor } from '../support/wait.ts';

const run = promisify(execFile);
const HEARTBEAT_MS = 1000;

/** A port free now, for the worker's METRICS_PORT. */
const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      s.close(() => resolve(port));
    });
  });

/** The value of a sample in Prometheus text (undefined when absent); labels must match exactly those given, in any order. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const got = new Map([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l): [string, string] => [l[1] ?? '', l[2] ?? '']));
    if (got.size === Object.keys(labels).length && Object.entries(labels).every(([k, v]) => got.get(k) === v)) return Number(m[3]);
  }
  return undefined;
}

describe('metrics and statistics on kafka', () => {
  const { env } = isolatedRun('metrics', 'kafka', {
    AUTH: 'keys',
    MAX_ATTEMPTS: '1',
    WORKER_CONCURRENCY: '2',
    WORKER_HEARTBEAT_MS: String(HEARTBEAT_MS),
    KAFKA_SESSION_TIMEOUT_MS: '2000',
  });
  afterAll(killAll);
  let api: { child: Child; url: string };
  let worker: Child;
  let workerPort = 0;
  let key = '';
  const call = (method: string, path: string, body?: unknown) =>
    fetch(`${api.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });

  it('runs tasks and counts exactly them on both /metrics, and /stats lists the worker', { timeout: 120_000 }, async () => {
    const { stdout } = await run(
      process.execPath,
      ['--import', 'tsx', join(REPO_ROOT, 'run-keys.ts'), 'create', '--tenant', 'acme', '--scopes', 'tasks:write,tasks:read'],
      {
        cwd: REPO_ROOT,
        env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env, STORE: 'redis' },
      },
    );
    key = stdout.trim();
    workerPort = await freePort();
    api = await startApi(env);
    worker = startEntry('worker-1', 'run-worker.ts', { ...env, WORKER_ID: 'metrics-w1', METRICS_PORT: String(workerPort) });
    await worker.waitForLine(/worker started/);

    const inputs = [{ content: 'great keyboard' }, { content: 'fine mouse' }, { content: 'bad screen' }, { content: 'boom', fail_times: 1 }];
    const ids: string[] = [];
    for (const input of inputs) {
      const res = await call('POST', '/tasks', { type: 'agent', input });
      expect(res.status).toBe(202);
      ids.push(((await res.json()) as { task_id: string }).task_id);
    }
    expect((await call('POST', '/tasks', { type: 'agent', input: { nope: true } })).status).toBe(400);
    const ended = await Promise.all(ids.map(async (id) => ((await (await call('GET', `/tasks/${id}?wait=30`)).json()) as { status: string }).status));
    expect(ended).toEqual(['done', 'done', 'done', 'failed']);

    // The API: submissions, HTTP requests by route pattern, request publishes, backlog.
    const apiMetrics = await (await fetch(`${api.url}/metrics`)).text();
    expect(sample(apiMetrics, 'atq_tasks_submitted_total', { type: 'agent', outcome: 'accepted', source: 'http' })).toBe(4);
    expect(sample(apiMetrics, 'atq_tasks_submitted_total', { type: 'other', outcome: 'rejected', source: 'http' })).toBe(1);
    expect(sample(apiMetrics, 'atq_http_requests_total', { method: 'POST', route: '/tasks', status: '202' })).toBe(4);
    expect(sample(apiMetrics, 'atq_http_requests_total', { method: 'GET', route: '/tasks/:id', status: '200' })).toBe(4);
    expect(sample(apiMetrics, 'atq_broker_publish_duration_seconds_count', { kind: 'request', outcome: 'ok' })).toBe(4);
    expect(sample(apiMetrics, 'atq_backlog_messages', { priority: 'normal' })).toBeGreaterThanOrEqual(0);
    expect(sample(apiMetrics, 'atq_process_cpu_user_seconds_total')).toBeGreaterThan(0);
    for (const id of ids) expect(apiMetrics).not.toContain(id);
    expect(apiMetrics).not.toContain('acme');

    // The worker: what it ran.
    const scrapeWorker = async () => (await fetch(`http://127.0.0.1:${workerPort}/metrics`)).text();
    await waitFor('the dead letter counted', async () => sample(await scrapeWorker(), 'atq_dead_letters_total', { code: 'handler_error' }) === 1, {
      timeoutMs: 10_000,
    });
    const w = await scrapeWorker();
    expect(sample(w, 'atq_tasks_finished_total', { type: 'agent', outcome: 'done' })).toBe(3);
    expect(sample(w, 'atq_tasks_finished_total', { type: 'agent', outcome: 'failed' })).toBe(1);
    expect(sample(w, 'atq_task_retries_total', { type: 'agent' })).toBeUndefined();
    expect(sample(w, 'atq_task_run_seconds_count', { type: 'agent', outcome: 'done' })).toBe(3);
    expect(sample(w, 'atq_task_queue_wait_seconds_count', { type: 'agent' })).toBe(4);
    expect(sample(w, 'atq_broker_publish_duration_seconds_count', { kind: 'result', outcome: 'ok' })).toBe(4);
    expect(sample(w, 'atq_broker_publish_duration_seconds_count', { kind: 'dead_letter', outcome: 'ok' })).toBe(1);
    expect(sample(w, 'atq_tasks_running')).toBe(0);
    expect(sample(w, 'atq_worker_free_slots')).toBe(2);
    expect(sample(w, 'atq_lease_lost_claims_total', { type: 'agent', outcome: 'rerun' })).toBeUndefined();

    // Statistics.
    const stats = (await (await call('GET', '/stats')).json()) as StatsView;
    expect(stats.tasks).toEqual({
      by_status: { scheduled: 0, waiting: 0, queued: 0, running: 0, done: 3, failed: 1, cancelled: 0 },
      by_type: { agent: 4 },
      scanned: 4,
      truncated: false,
    });
    expect(stats.workers.map((x) => x.id)).toEqual(['metrics-w1']);
    expect(stats.workers[0]).toMatchObject({ concurrency: 2, version: '0.1.0' });
    expect(stats.backlog.normal).toEqual(expect.any(Number));

    // A handler's ctx.spawn runs in the worker: its children count on the worker's METRICS_PORT.
    expect((await call('POST', '/tasks', { type: 'report_coordinator', input: { topic: 'keyboards', parts: 1 } })).status).toBe(202);
    await waitFor(
      'the spawned steps counted',
      async () => sample(await scrapeWorker(), 'atq_tasks_submitted_total', { type: 'report_writer', outcome: 'accepted', source: 'spawn' }) === 1,
      {
        timeoutMs: 10_000,
      },
    );
    expect(sample(await scrapeWorker(), 'atq_tasks_submitted_total', { type: 'report_analyst', outcome: 'accepted', source: 'spawn' })).toBe(1);
  });

  it('drops a SIGKILLed worker from /stats within two heartbeats', { timeout: 30_000 }, async () => {
    const killedAt = Date.now();
    await worker.stop('SIGKILL');
    await waitFor(
      'the dead worker gone from /stats',
      async () => ((await (await call('GET', '/stats')).json()) as StatsView).workers.every((x) => x.id !== 'metrics-w1'),
      { timeoutMs: 10_000, intervalMs: 100 },
    );
    expect(Date.now() - killedAt).toBeLessThanOrEqual(2 * HEARTBEAT_MS + 500);
  });

  it('with no worker consuming, the backlog of a priority is the tasks queued on it (Kafka consumer lag)', { timeout: 30_000 }, async () => {
    // The only worker is dead (above): nothing commits offsets. High priority had no task yet.
    const n = 3;
    for (let i = 0; i < n; i++) expect((await call('POST', '/tasks', { type: 'agent', priority: 'high', input: { content: `queued ${i}` } })).status).toBe(202);
    // The API caches the backlog for 5 s.
    const backlog = await waitFor(
      'the backlog of high to be the queued tasks',
      async () => {
        const text = await (await fetch(`${api.url}/metrics`)).text();
        const high = sample(text, 'atq_backlog_messages', { priority: 'high' });
        return high === n && text;
      },
      { timeoutMs: 8000, intervalMs: 200 },
    );
    expect(sample(backlog, 'atq_backlog_messages', { priority: 'low' })).toBe(0);
    expect(((await (await call('GET', '/stats')).json()) as StatsView).backlog.high).toBe(n);
  });
});
