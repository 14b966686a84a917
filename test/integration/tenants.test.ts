/**
 * Tenants on the real stack (API and workers as processes, Kafka, Redis, AUTH=keys, keys made
 * with `npm run keys`): every route across two tenants finds nothing of the other's; a
 * tenant at its cap of running tasks does not hold back another; and a task whose worker is
 * SIGKILLed on every attempt ends `failed` with worker_lost after max_attempts, never run more.
 *
 * Every operation of the API's own /openapi.json (which api/openapi.test.ts keeps equal to
 * the app's routes) must have been tried with the rival tenant's key on acme's objects, or be
 * one of the few public ones that hold no tenant's data: a new route without a cross-tenant
 * case fails the last test.
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
  let acmeKeyId = '';
  const call = (key: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
    fetch(`${api.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
  /** `METHOD /path` of every request made with the rival's key, and of acme's creations the rival then looked for. */
  const tried: string[] = [];
  const asRival = (method: string, path: string, body?: unknown, headers?: Record<string, string>) => {
    tried.push(`${method} ${new URL(path, 'http://x').pathname}`);
    return call(rival, method, path, body, headers);
  };
  const acmeCreates = async (path: string, body: unknown, status: number): Promise<Record<string, unknown>> => {
    tried.push(`POST ${path}`);
    const res = await call(acme, 'POST', path, body);
    expect(res.status, `POST ${path}`).toBe(status);
    return (await res.json()) as Record<string, unknown>;
  };
  /** A 404 for the rival, with nothing of acme's in the answer. */
  const rivalFinds404 = async (method: string, path: string, body?: unknown) => {
    const res = await asRival(method, path, body);
    const text = await res.text();
    expect(res.status, `${method} ${path}: ${text}`).toBe(404);
    expect(text, `${method} ${path}`).not.toMatch(/acme/);
  };
  /** One MCP tool call (JSON-RPC over stateless streamable HTTP); answers the tool's result. */
  const mcpTool = async (key: string, name: string, args: Record<string, unknown>) => {
    if (key === rival) tried.push('POST /mcp');
    const res = await fetch(`${api.url}/mcp`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: args } }),
    });
    const text = await res.text();
    expect(res.status, text).toBe(200);
    // An event stream (`data: {…}` lines) or a JSON body.
    const json = res.headers.get('content-type')?.startsWith('text/event-stream')
      ? (text
          .split('\n')
          .filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).trim())
          .at(-1) ?? '')
      : text;
    const msg = JSON.parse(json) as { result?: { isError?: boolean; structuredContent?: Record<string, unknown>; content: { text: string }[] } };
    if (!msg.result) throw new Error(`no result: ${text}`);
    return { isError: msg.result.isError ?? false, value: JSON.parse(msg.result.content[0]?.text ?? 'null') as Record<string, unknown>, text };
  };
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
    let listed: string;
    [api, listed] = await Promise.all([startApi(env), keys('list', '--tenant', 'acme')]);
    acmeKeyId = listed.split('\t')[0] ?? '';
    expect(acmeKeyId).not.toBe('');
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
      const res = await asRival(method, path);
      expect(res.status, `${method} ${path}`).toBe(404);
      expect(await res.text()).not.toContain('acme quarterly');
    }
    for (const path of ['/tasks', '/tasks?user_id=shared-user', '/tasks?status=done', '/tasks?type=agent']) {
      expect(await (await asRival('GET', path)).json(), path).toEqual({ tasks: [], next_cursor: null });
    }
    const own = (await (await call(acme, 'GET', '/tasks?user_id=shared-user')).json()) as { tasks: { task_id: string }[] };
    expect(own.tasks.map((t) => t.task_id)).toEqual([id]);
    expect(await (await asRival('GET', '/quota')).json()).toMatchObject({ tenant: 'rival', spent: 0 });
    // /stats: the task counts are the tenant's own (the backlog and the workers are the deployment's).
    const stats = (await (await asRival('GET', '/stats')).json()) as { tenant: string; tasks: { by_status: Record<string, number>; by_type: object } };
    expect(stats.tenant).toBe('rival');
    expect(
      Object.entries(stats.tasks.by_status).filter(([, n]) => n !== 0),
      'the rival counts tasks of its own only',
    ).toEqual([]);
    expect(stats.tasks.by_type).toEqual({});
    expect(JSON.stringify(stats)).not.toContain(id);
    expect(await (await call(acme, 'GET', '/stats')).json()).toMatchObject({ tenant: 'acme', tasks: { by_status: { done: 1 }, by_type: { agent: 1 } } });
    // The MCP tools run as the key: acme's task is not found through them either.
    expect(await mcpTool(acme, 'check_task', { task_id: id })).toMatchObject({ isError: false, value: { task_id: id, status: 'done' } });
    expect(Object.keys((await mcpTool(acme, 'get_task_results', { task_ids: [id] })).value)).toEqual([id]);
    for (const [tool, args] of [
      ['check_task', { task_id: id }],
      ['get_task_results', { task_ids: [id] }],
      ['wait_for_tasks', { task_ids: [id], max_wait_seconds: 1 }],
      ['cancel_task', { task_id: id }],
    ] as const) {
      const r = await mcpTool(rival, tool, args);
      expect(r, tool).toMatchObject({ isError: true, value: { error: { code: 'not_found', status: 404 } } });
      expect(r.text, tool).not.toContain('acme quarterly');
    }
    expect((await mcpTool(rival, 'list_tasks', {})).value).toEqual({ tasks: [], next_cursor: null });
    expect((await mcpTool(rival, 'get_statistics', {})).value).toMatchObject({ tenant: 'rival', tasks: { by_type: {} } });
    expect(await get(id)).toMatchObject({ status: 'done', tenant: 'acme' });
    // An Idempotency-Key is the tenant's own: the rival's same key and body make the rival's own task.
    const idem = { 'idempotency-key': `shared-${prefix}` };
    const body = { type: 'agent', input: { content: 'same body' }, user_id: 'shared-user' };
    const first = await call(acme, 'POST', '/tasks', body, idem);
    expect(first.status).toBe(202);
    const acmeTask = ((await first.json()) as { task_id: string }).task_id;
    const second = await asRival('POST', '/tasks', body, idem);
    expect(second.status).toBe(202);
    expect(second.headers.get('idempotent-replayed')).toBeNull();
    const rivalTask = ((await second.json()) as { task_id: string }).task_id;
    expect(rivalTask).not.toBe(acmeTask);
    expect(await get(rivalTask)).toMatchObject({ tenant: 'rival' });
    expect(await get(acmeTask)).toMatchObject({ tenant: 'acme' });
    // The admin routes need the admin scope, which neither tenant's key has: not even acme's limits or keys are shown to the rival.
    for (const [method, path, b] of [
      ['GET', '/admin/keys'],
      ['POST', '/admin/keys', { tenant: 'acme', scopes: ['tasks:read'] }],
      ['DELETE', `/admin/keys/${acmeKeyId}`],
      ['GET', '/admin/tenants/acme'],
      ['PUT', '/admin/tenants/acme/limits', { max_running: 100 }],
    ] as const) {
      const res = await asRival(method, path, b);
      expect(res.status, `${method} ${path}`).toBe(403);
      expect(await res.text()).not.toMatch(/atq_/);
    }
    expect((await call(acme, 'GET', '/tasks?limit=1')).status).toBe(200);
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

  it("finds nothing of the other's workflows and schedules, and changes none of them", { timeout: 60_000 }, async () => {
    // A workflow still running while the rival tries it: step a takes 4 s, b waits for it.
    const wf = await acmeCreates(
      '/workflows',
      {
        name: 'acme merger',
        user_id: 'shared-user',
        steps: [
          { id: 'a', type: 'agent', input: { content: 'acme merger a', simulate_ms: 1000 } },
          { id: 'b', type: 'agent', input: { content: 'acme merger b' }, needs: ['a'] },
        ],
      },
      202,
    );
    const wfId = String(wf.workflow_id);
    const steps = Object.values(wf.steps as Record<string, string>);
    for (const [method, path] of [
      ['GET', `/workflows/${wfId}`],
      ['GET', `/workflows/${wfId}/events`],
      ['DELETE', `/workflows/${wfId}`],
      ...steps.flatMap((t) => [
        ['GET', `/tasks/${t}`],
        ['DELETE', `/tasks/${t}`],
        ['POST', `/tasks/${t}/retry`],
      ]),
    ] as const)
      await rivalFinds404(method, path);
    expect(await (await asRival('GET', '/workflows')).json()).toEqual({ workflows: [], next_cursor: null });
    // Untouched: still running, every step of it acme's and not cancelled; acme lists it and can cancel it.
    expect(await (await call(acme, 'GET', `/workflows/${wfId}`)).json()).toMatchObject({ workflow_id: wfId, status: 'running' });
    for (const t of steps) expect((await get(t))?.status).toMatch(/^(queued|running|waiting)$/);
    const listed = (await (await call(acme, 'GET', '/workflows')).json()) as { workflows: { workflow_id: string }[] };
    expect(listed.workflows.map((w) => w.workflow_id)).toEqual([wfId]);
    const cancelled = await call(acme, 'DELETE', `/workflows/${wfId}`);
    expect(cancelled.status).toBe(200);
    expect(await cancelled.json()).toMatchObject({ status: 'cancelled' });
    // A POST /workflows Idempotency-Key is the tenant's own too: the rival's same key and body start the rival's own workflow.
    const idem = { 'idempotency-key': `shared-wf-${prefix}` };
    const flow = { steps: [{ id: 'a', type: 'agent', input: { content: 'same body' } }], user_id: 'shared-user' };
    const acmeFlow = await call(acme, 'POST', '/workflows', flow, idem);
    const rivalFlow = await asRival('POST', '/workflows', flow, idem);
    expect([acmeFlow.status, rivalFlow.status, rivalFlow.headers.get('idempotent-replayed')]).toEqual([202, 202, null]);
    const [acmeWf, rivalWf] = (await Promise.all([acmeFlow.json(), rivalFlow.json()])) as { workflow_id: string }[];
    expect(rivalWf?.workflow_id).not.toBe(acmeWf?.workflow_id);
    expect((await call(acme, 'POST', '/workflows', flow, idem)).headers.get('idempotent-replayed')).toBe('true');
    await waitFor('both workflows done', async () => {
      const ends = await Promise.all([
        call(acme, 'GET', `/workflows/${String(acmeWf?.workflow_id)}`),
        asRival('GET', `/workflows/${String(rivalWf?.workflow_id)}`),
      ]);
      return (await Promise.all(ends.map(async (r) => ((await r.json()) as { status: string }).status))).every((st) => st === 'done');
    });

    // A schedule (once a year: it does not fire during the test).
    const sch = await acmeCreates('/schedules', { name: 'acme yearly', cron: '0 3 1 1 *', task: { type: 'agent', input: { content: 'acme yearly' } } }, 201);
    const schId = String(sch.schedule_id);
    const schedule = async () => (await (await call(acme, 'GET', `/schedules/${schId}`)).json()) as { paused: boolean; next_run_at: string | null };
    const nextRun = sch.next_run_at;
    expect(nextRun).toEqual(expect.any(String));
    await rivalFinds404('GET', `/schedules/${schId}`);
    await rivalFinds404('POST', `/schedules/${schId}/pause`);
    expect(await schedule()).toMatchObject({ paused: false, next_run_at: nextRun });
    expect((await call(acme, 'POST', `/schedules/${schId}/pause`)).status).toBe(200);
    await rivalFinds404('POST', `/schedules/${schId}/resume`);
    expect(await schedule()).toMatchObject({ paused: true });
    expect((await call(acme, 'POST', `/schedules/${schId}/resume`)).status).toBe(200);
    await rivalFinds404('DELETE', `/schedules/${schId}`);
    expect(await (await asRival('GET', '/schedules')).json()).toEqual({ schedules: [], next_cursor: null });
    expect(await schedule()).toMatchObject({ paused: false, next_run_at: nextRun });
    expect((await call(acme, 'DELETE', `/schedules/${schId}`)).status).toBe(200);
    // The workflow's steps have ended before the next test counts acme's running tasks.
    await waitFor('the cancelled steps ended', async () => (await Promise.all(steps.map((t) => get(t)))).every((r) => r?.status === 'cancelled'));
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

  it("finds nothing of the other's dead letters, and redrives or reruns none of them", { timeout: 30_000 }, async () => {
    // The worker_lost task of the test above: a dead letter of acme's.
    const id = dead.find((d) => d.headers['dlq-code'] === 'worker_lost')?.key ?? '';
    expect(await get(id)).toMatchObject({ status: 'failed', tenant: 'acme', reruns: 0 });
    const acmeDead = (await (await call(acme, 'GET', '/dead-letters')).json()) as { dead_letters: { task_id: string }[] };
    expect(acmeDead.dead_letters.map((d) => d.task_id)).toContain(id);
    for (const path of ['/dead-letters', '/dead-letters?code=worker_lost', '/dead-letters?type=agent']) {
      expect(await (await asRival('GET', path)).json(), path).toEqual({ dead_letters: [], next_cursor: null });
    }
    await rivalFinds404('POST', `/tasks/${id}/retry`);
    for (const body of [{ task_ids: [id] }, {}, { code: 'worker_lost' }]) {
      const res = await asRival('POST', '/dead-letters/redrive', body);
      expect(res.status, JSON.stringify(body)).toBe(200);
      expect(await res.json(), JSON.stringify(body)).toEqual({ redriven: 0, task_ids: [] });
    }
    // Untouched: still failed, not rerun, still among acme's dead letters.
    expect(await get(id)).toMatchObject({ status: 'failed', attempt: 2, reruns: 0, error: { code: 'worker_lost' } });
    const after = (await (await call(acme, 'GET', '/dead-letters')).json()) as { dead_letters: { task_id: string }[] };
    expect(after.dead_letters.map((d) => d.task_id)).toContain(id);
  });

  it("has tried the rival's key on every route of the API but the public ones", async () => {
    const doc = (await (await fetch(`${api.url}/openapi.json`)).json()) as { paths: Record<string, Record<string, unknown>> };
    const METHODS = ['get', 'put', 'post', 'delete', 'patch'];
    const operations = Object.entries(doc.paths).flatMap(([path, item]) => METHODS.filter((m) => item[m]).map((m) => `${m.toUpperCase()} ${path}`));
    // Probes, metrics (no task id, user id or tenant in a label), the document and the dashboard's files: no key, nothing of a tenant's.
    const PUBLIC = ['GET /healthz', 'GET /readyz', 'GET /metrics', 'GET /openapi.json', 'GET /docs', 'GET /docs/{file}', 'GET /ui', 'GET /ui/{file}'];
    const matcher = (op: string) => {
      const [method = '', path = ''] = op.split(' ');
      const re = new RegExp(`^${method} ${path.replace(/\{[^}]+\}/g, '[^/]+')}$`);
      return (t: string) => re.test(t);
    };
    const untried = operations.filter((op) => !PUBLIC.includes(op) && !tried.some(matcher(op)));
    expect(untried, 'operations without a cross-tenant case').toEqual([]);
    // The document was read (its parameterised routes among the operations), and the public list names only real operations.
    expect(operations).toEqual(expect.arrayContaining(['GET /tasks/{id}', 'DELETE /workflows/{id}', 'POST /schedules/{id}/pause', 'POST /mcp']));
    for (const op of PUBLIC) expect(operations, op).toContain(op);
  });
});
