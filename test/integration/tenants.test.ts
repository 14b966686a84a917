/**
 * Tenants on the real stack (API and workers as processes, Kafka, Redis, AUTH=keys, keys made
 * with `npm run keys`): every route across two tenants finds nothing of the other's; a
 * tenant at its cap of running tasks does not hold back another; and a task whose worker is
 * SIGKILLed on every attempt ends `failed` with worker_lost after max_attempts, never run more.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import type { Delivery } from '../../common/broker/port.ts';
import type { KafkaBroker } from '../../common/broker/kafka.ts';
import type { RedisTaskStore } from '../../common/store/redis.ts';
import type { ResultMessage } from '../../common/task.ts';
import { REPO_ROOT } from '../../infra/lib.ts';
import { killAll, startApi, startEntry, type Child } from '../support/processes.ts';
import { isolatedRun, kafkaBroker, redisStore } from '../support/services.ts';
import { waitFor } from '../support/wait.ts';

const run = promisify(execFile);

describe('tenants on kafka', () => {
  const { prefix, names, env } = isolatedRun('tenants', 'kafka', {
    AUTH: 'keys',
    KAFKA_SESSION_TIMEOUT_MS: '2000',
    LEASE_MS: '2000',
    MAX_ATTEMPTS: '2',
    RELAY_AFTER_MS: '2000',
    TENANT_THROTTLE_MS: '200',
    WORKER_CONCURRENCY: '3',
  });
  let store: RedisTaskStore | undefined;
  let broker: KafkaBroker | undefined;
  afterAll(async () => {
    await broker?.close({ graceMs: 0 });
    await store?.close();
    await killAll();
  });

  /** `npm run keys -- …`, as an operator runs it: answers stdout. */
  const keys = async (...args: string[]): Promise<string> => {
    const { stdout } = await run(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'run-keys.ts'), ...args], {
      cwd: REPO_ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env, STORE: 'redis' },
    });
    return stdout;
  };

  const get = (id: string) => {
    if (!store) throw new Error('no store');
    return store.get(id);
  };
  let api: { child: Child; url: string };
  const workers: Child[] = [];
  const results: ResultMessage[] = [];
  const dead: Delivery[] = [];
  let acme = '';
  let rival = '';
  const call = (key: string, method: string, path: string, body?: unknown) =>
    fetch(`${api.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  const submit = async (key: string, input: Record<string, unknown>): Promise<string> => {
    const res = await call(key, 'POST', '/tasks', { type: 'agent', input, user_id: 'shared-user' });
    expect(res.status).toBe(202);
    return ((await res.json()) as { task_id: string }).task_id;
  };

  it('starts with keys made by the CLI (printed alone on stdout)', { timeout: 120_000 }, async () => {
    store = await redisStore({ keyPrefix: prefix });
    broker = kafkaBroker();
    await broker.ensureTopics([...names.requests, names.result, names.deadLetter]);
    await broker.subscribe(names.result, `results-${prefix}`, (d) => {
      results.push(JSON.parse(d.body) as ResultMessage);
      return Promise.resolve();
    });
    await broker.subscribe(names.deadLetter, `dlq-${prefix}`, (d) => {
      dead.push(d);
      return Promise.resolve();
    });
    acme = (await keys('create', '--tenant', 'acme', '--scopes', 'tasks:write,tasks:read')).trim();
    rival = (await keys('create', '--tenant', 'rival', '--scopes', 'tasks:write,tasks:read')).trim();
    expect(acme).toMatch(/^atq_[A-Za-z0-9_-]{43}$/);
    expect(rival).toMatch(/^atq_[A-Za-z0-9_-]{43}$/);
    api = await startApi(env);
    workers.push(startEntry('worker-1', 'run-worker.ts', { ...env, WORKER_ID: 'tenants-w1' }));
    await workers[0]?.waitForLine(/worker started/);
    // Keys never reach the logs.
    expect(api.child.lines.join('\n')).not.toContain(acme);
  });

  it('tries every route across two tenants and finds nothing of the other', { timeout: 60_000 }, async () => {
    const id = await submit(acme, { content: 'acme quarterly plans' });
    const done = await call(acme, 'GET', `/tasks/${id}?wait=30`);
    expect(await done.json()).toMatchObject({ task_id: id, tenant: 'acme', status: 'done' });
    const notFound = [
      ['GET', `/tasks/${id}`],
      ['GET', `/tasks/${id}?wait=1`],
      ['GET', `/tasks/${id}?history=true`],
      ['GET', `/tasks/${id}/events`],
      ['DELETE', `/tasks/${id}`],
    ];
    for (const [method = '', path = ''] of notFound) {
      const res = await call(rival, method, path);
      expect(res.status, `${method} ${path}`).toBe(404);
      expect(await res.text()).not.toContain('acme quarterly');
    }
    for (const path of ['/tasks', '/tasks?user_id=shared-user', '/tasks?status=done', '/tasks?type=agent']) {
      expect(await (await call(rival, 'GET', path)).json(), path).toEqual({ tasks: [], next_cursor: null });
    }
    const own = (await (await call(acme, 'GET', '/tasks?user_id=shared-user')).json()) as { tasks: { task_id: string }[] };
    expect(own.tasks.map((t) => t.task_id)).toEqual([id]);
    expect(await (await call(rival, 'GET', '/quota')).json()).toMatchObject({ tenant: 'rival', spent: 0 });
    // The result message carries the tenant.
    await waitFor('the result message', () => results.some((r) => r.task_id === id));
    expect(results.find((r) => r.task_id === id)).toMatchObject({ tenant: 'acme', status: 'done' });
    // A revoked key stops working within 5 s.
    const temp = (await keys('create', '--tenant', 'rival', '--scopes', 'tasks:read')).trim();
    expect((await call(temp, 'GET', '/tasks')).status).toBe(200);
    const [keyId] =
      (await keys('list', '--tenant', 'rival'))
        .split('\n')
        .filter((l) => l !== '')
        .at(-1)
        ?.split('\t') ?? [];
    await keys('revoke', keyId ?? '');
    await waitFor('the revoked key refused', async () => (await call(temp, 'GET', '/tasks')).status === 401, { timeoutMs: 5000 });
  });

  it("a tenant at its cap of running tasks does not hold back another's", { timeout: 90_000 }, async () => {
    await keys('tenant', 'acme', '--max-running', '1');
    const slow = { content: 'backlog', simulate_ms: 250 };
    const backlog: string[] = [];
    for (let i = 0; i < 4; i++) backlog.push(await submit(acme, slow));
    await waitFor('the first acme task running', async () => (await get(backlog[0] ?? ''))?.status === 'running');
    const other = [await submit(rival, slow), await submit(rival, slow)];
    await waitFor('every task done', async () => (await Promise.all([...backlog, ...other].map((t) => get(t)))).every((r) => r?.status === 'done'), {
      timeoutMs: 60_000,
    }).catch(async (e: unknown) => {
      console.log(JSON.stringify(await Promise.all([...backlog, ...other].map((t) => get(t))), null, 1));
      console.log(workers[0]?.lines.slice(-30).join('\n'));
      throw e;
    });
    const recs = await Promise.all([...backlog, ...other].map(async (t) => (await get(t)) ?? undefined));
    const acmeRecs = recs.slice(0, 4);
    const rivalRecs = recs.slice(4);
    // Rival's tasks started while acme still had a backlog...
    const lastAcmeStart = Math.max(...acmeRecs.map((r) => r?.startedAt ?? 0));
    for (const r of rivalRecs) expect(r?.startedAt ?? Infinity).toBeLessThan(lastAcmeStart);
    // ...and never two of acme's ran at once.
    const spans = acmeRecs.map((r) => [r?.startedAt ?? 0, r?.finishedAt ?? 0] as const).sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < spans.length; i++) expect(spans[i]?.[0]).toBeGreaterThanOrEqual(spans[i - 1]?.[1] ?? 0);
    await keys('tenant', 'acme', '--max-running', 'default');
  });

  it('a task whose worker is SIGKILLed on every attempt ends failed (worker_lost) after max_attempts, never run more', { timeout: 120_000 }, async () => {
    // Long enough to kill it mid-run: 4 steps of 5 s.
    const id = await submit(acme, { content: 'poison pill', simulate_ms: 5000 });
    const started = (w: Child) => w.records().filter((r) => r.msg === 'task started' && r.task_id === id).length;
    for (let attempt = 1; attempt <= 2; attempt++) {
      const w = workers.at(-1);
      if (!w) throw new Error('no worker');
      await waitFor(`attempt ${attempt} running`, () => started(w) === 1, { timeoutMs: 30_000 });
      expect((await get(id))?.attempt).toBe(attempt);
      await w.stop('SIGKILL');
      const next = startEntry(`worker-${workers.length + 1}`, 'run-worker.ts', { ...env, WORKER_ID: `tenants-w${workers.length + 1}` });
      workers.push(next);
      await next.waitForLine(/worker started/);
    }
    await waitFor('the task failed', async () => (await get(id))?.status === 'failed', { timeoutMs: 40_000 });
    const rec = await get(id);
    expect(rec).toMatchObject({ status: 'failed', attempt: 2, maxAttempts: 2, error: { code: 'worker_lost', retriable: false } });
    // Run twice in all (once per killed worker), never by the last one.
    expect(workers.reduce((n, w) => n + started(w), 0)).toBe(2);
    await waitFor('the failure result and the dead letter', () => results.some((r) => r.task_id === id) && dead.some((d) => d.key === id));
    expect(results.find((r) => r.task_id === id)).toMatchObject({ status: 'failed', tenant: 'acme', error: { code: 'worker_lost' } });
    expect(dead.find((d) => d.key === id)?.headers['dlq-code']).toBe('worker_lost');
    const view = (await (await call(acme, 'GET', `/tasks/${id}?history=true`)).json()) as { history: { event: string; data: Record<string, unknown> }[] };
    expect(view.history.filter((e) => e.event === 'status' && e.data.status === 'running').map((e) => e.data.after_lost_lease ?? false)).toEqual([false, true]);
  });
});
