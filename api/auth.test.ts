/** API keys, tenants, quotas and rate limits, through the app with the in-process store. */
import { describe, expect, it } from 'vitest';
import { newApiKey } from '../common/api-keys.ts';
import { MemoryBroker } from '../common/broker/memory.ts';
import type { Broker, OutgoingMessage } from '../common/broker/port.ts';
import { silentLogger } from '../common/logger.ts';
import { MemoryTaskStore } from '../common/store/memory.ts';
import type { Scope } from '../common/store/port.ts';
import { defaultRegistry } from '../worker/task-types.ts';
import { createApp, type DefaultLimits } from './app.ts';

const TOPIC = 'requests';
const JSON_HEADERS = { 'content-type': 'application/json' };

function setup(opts: { limits?: Partial<DefaultLimits>; cacheMs?: number; broker?: Broker } = {}) {
  const store = new MemoryTaskStore();
  const broker = opts.broker ?? new MemoryBroker();
  const published: string[] = [];
  void broker.subscribe(TOPIC, 'spy', (d) => {
    published.push(d.key);
    return Promise.resolve();
  });
  const app = createApp({
    store,
    broker,
    registry: defaultRegistry(),
    logger: silentLogger,
    options: {
      requestTopic: TOPIC,
      resultTopic: 'results',
      bodyLimit: 1024 * 1024,
      requestTimeoutMs: 300,
      relayAfterMs: 5000,
      maxAttempts: 3,
      auth: { mode: 'keys', cacheMs: opts.cacheMs ?? 3000 },
      ...(opts.limits ? { limits: opts.limits } : {}),
    },
  });
  const keyFor = async (tenant: string, scopes: Scope[] = ['tasks:write', 'tasks:read']) => {
    const { secret, hash, key } = newApiKey(tenant, scopes, null);
    await store.createKey(key, hash);
    return { secret, id: key.id };
  };
  const call = (key: string | null, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
    app.request(`http://localhost${path}`, {
      method,
      headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...(body !== undefined ? JSON_HEADERS : {}), ...headers },
      ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
    });
  const submit = (key: string, body: unknown = { user_id: 'u1', content: 'hello' }, headers: Record<string, string> = {}) =>
    call(key, 'POST', '/tasks', body, headers);
  return { app, store, broker, published, keyFor, call, submit };
}

interface ErrorJson {
  error: { code: string; message: string; retry_after?: number };
}

describe('API keys', () => {
  it('answers 401 with WWW-Authenticate for a missing, malformed, huge or unknown key, and writes nothing', async () => {
    const { call, store, published } = setup();
    const bad: [string | undefined, string][] = [
      [undefined, 'Bearer realm="agent-task-queue"'],
      ['Basic dXNlcjpwYXNz', 'Bearer realm="agent-task-queue", error="invalid_request"'],
      ['Bearer ', 'Bearer realm="agent-task-queue", error="invalid_request"'],
      [`Bearer atq_${'x'.repeat(5000)}`, 'Bearer realm="agent-task-queue", error="invalid_request"'],
      ['Bearer atq_short', 'Bearer realm="agent-task-queue", error="invalid_token"'],
      [`Bearer atq_${'A'.repeat(43)}`, 'Bearer realm="agent-task-queue", error="invalid_token"'],
    ];
    for (const [header, challenge] of bad) {
      const res = await call(null, 'POST', '/tasks', { user_id: 'u1', content: 'hi' }, header === undefined ? {} : { authorization: header });
      expect(res.status, String(header).slice(0, 40)).toBe(401);
      expect(res.headers.get('www-authenticate')).toBe(challenge);
      expect(((await res.json()) as ErrorJson).error.code).toBe('unauthorized');
    }
    expect((await store.list({ limit: 10 })).tasks).toEqual([]);
    expect(published).toEqual([]);
    // The probes need no key.
    expect((await call(null, 'GET', '/healthz')).status).toBe(200);
  });

  it('answers 403 for a missing scope, and never echoes the key', async () => {
    const { keyFor, submit, call } = setup();
    const reader = await keyFor('acme', ['tasks:read']);
    const res = await submit(reader.secret);
    expect(res.status).toBe(403);
    const text = await res.text();
    expect(JSON.parse(text)).toMatchObject({ error: { code: 'forbidden', message: 'this API key lacks the scope tasks:write' } });
    expect(text).not.toContain(reader.secret);
    expect((await call(reader.secret, 'GET', '/tasks')).status).toBe(200);
    expect((await call(reader.secret, 'GET', '/admin/keys')).status).toBe(403);
  });

  it('stops honouring a revoked key within the cache time', async () => {
    const { keyFor, call, store } = setup({ cacheMs: 100 });
    const k = await keyFor('acme');
    expect((await call(k.secret, 'GET', '/tasks')).status).toBe(200);
    await store.revokeKey(k.id);
    await new Promise((r) => setTimeout(r, 150));
    expect((await call(k.secret, 'GET', '/tasks')).status).toBe(401);
  });

  it('admin: creates a key (shown once), lists, revokes, and sets a tenant limits', async () => {
    const { keyFor, call, submit } = setup({ cacheMs: 0 });
    const admin = await keyFor('ops', ['admin']);
    const created = await call(admin.secret, 'POST', '/admin/keys', { tenant: 'acme', scopes: ['tasks:write', 'tasks:read'], name: 'ci' });
    expect(created.status).toBe(201);
    const key = (await created.json()) as { id: string; key: string; tenant: string };
    expect(key).toMatchObject({ tenant: 'acme', scopes: ['tasks:write', 'tasks:read'], name: 'ci' });
    expect((await submit(key.key)).status).toBe(202);
    const list = (await (await call(admin.secret, 'GET', '/admin/keys?tenant=acme')).json()) as { keys: { id: string }[] };
    expect(list.keys.map((k) => k.id)).toEqual([key.id]);
    expect(JSON.stringify(list)).not.toContain(key.key);
    const limits = await call(admin.secret, 'PUT', '/admin/tenants/acme/limits', { quota_units: 10, max_running: 2 });
    expect(await limits.json()).toMatchObject({ tenant: 'acme', limits: { quota_units: 10, max_running: 2, submits_per_s: null }, quota: { units: 10 } });
    expect((await call(admin.secret, 'PUT', '/admin/tenants/acme/limits', { quota_units: -1 })).status).toBe(400);
    expect((await call(admin.secret, 'PUT', '/admin/tenants/Not%20A%20Tenant/limits', {})).status).toBe(400);
    expect((await call(admin.secret, 'POST', '/admin/keys', { tenant: 'acme', scopes: ['root'] })).status).toBe(400);
    // The admin bodies are read as strictly as a task's: another charset is a 415, a lone surrogate a 400.
    const named = JSON.stringify({ tenant: 'acme', scopes: ['tasks:read'], name: 'café' });
    expect((await call(admin.secret, 'POST', '/admin/keys', named, { 'content-type': 'application/json; charset=iso-8859-1' })).status).toBe(415);
    expect((await call(admin.secret, 'POST', '/admin/keys', named.replace('café', '\\udc00'))).status).toBe(400);
    expect((await call(admin.secret, 'PUT', '/admin/tenants/acme/limits', 'max_running=1', { 'content-type': 'text/plain' })).status).toBe(415);
    expect((await call(admin.secret, 'DELETE', `/admin/keys/${key.id}`)).status).toBe(200);
    expect((await call(admin.secret, 'DELETE', `/admin/keys/${key.id}`)).status).toBe(404);
    expect((await submit(key.key)).status).toBe(401);
  });
});

describe('tenant isolation', () => {
  it("finds nothing of another tenant's on any route, and idempotency keys are per tenant", async () => {
    const { keyFor, call, submit, store } = setup();
    const a = await keyFor('acme');
    const b = await keyFor('rival');
    const res = await submit(a.secret, { user_id: 'shared', content: 'secret plans' }, { 'idempotency-key': 'k1' });
    const { task_id: id } = (await res.json()) as { task_id: string };
    expect((await store.get(id))?.tenant).toBe('acme');
    for (const [method, path] of [
      ['GET', `/tasks/${id}`],
      ['GET', `/tasks/${id}?wait=1`],
      ['GET', `/tasks/${id}?history=true`],
      ['GET', `/tasks/${id}/events`],
      ['DELETE', `/tasks/${id}`],
    ] as const) {
      const r = await call(b.secret, method, path);
      expect(r.status, `${method} ${path}`).toBe(404);
      expect(await r.text()).not.toContain('secret plans');
    }
    expect(await (await call(b.secret, 'GET', '/tasks')).json()).toEqual({ tasks: [], next_cursor: null });
    expect(await (await call(b.secret, 'GET', '/tasks?user_id=shared')).json()).toEqual({ tasks: [], next_cursor: null });
    expect((await store.get(id))?.status).toBe('queued');
    // The same Idempotency-Key in another tenant makes another task; in the same, replays.
    const other = (await (await submit(b.secret, { user_id: 'shared', content: 'secret plans' }, { 'idempotency-key': 'k1' })).json()) as { task_id: string };
    expect(other.task_id).not.toBe(id);
    const again = await submit(a.secret, { user_id: 'shared', content: 'secret plans' }, { 'idempotency-key': 'k1' });
    expect(((await again.json()) as { task_id: string }).task_id).toBe(id);
    // The owner sees it everywhere.
    expect((await call(a.secret, 'GET', `/tasks/${id}`)).status).toBe(200);
    expect(((await (await call(a.secret, 'GET', '/tasks')).json()) as { tasks: unknown[] }).tasks).toHaveLength(1);
    expect((await call(a.secret, 'DELETE', `/tasks/${id}`)).status).toBe(200);
  });

  it('the request message carries the tenant', async () => {
    const broker = new MemoryBroker();
    const bodies: string[] = [];
    void broker.subscribe(TOPIC, 'peek', (d) => {
      bodies.push(d.body);
      expect(d.headers.tenant).toBe('acme');
      return Promise.resolve();
    });
    const { keyFor, submit } = setup({ broker });
    await submit((await keyFor('acme')).secret);
    await new Promise((r) => setTimeout(r, 50));
    expect(JSON.parse(bodies[0] ?? '{}')).toMatchObject({ tenant: 'acme', type: 'agent' });
  });
});

describe('quotas', () => {
  const report = (multi: boolean) => ({
    type: 'multi_agent_report',
    input: { use_multi_agent: multi, strategy_summary: { symbol: 'SPY', underlying_price: 500 } },
  });

  it('downgrades a multi-agent report when the quota is short, then answers 429 quota_exceeded with Retry-After', async () => {
    const { keyFor, submit, call, store, published } = setup({ limits: { quotaUnits: 6 } });
    const k = await keyFor('acme');
    const full = await submit(k.secret, report(true));
    expect(full.status).toBe(202);
    expect(await full.json()).toMatchObject({ downgraded: false });
    const cheap = await submit(k.secret, report(true));
    const body = (await cheap.json()) as { task_id: string; downgraded: boolean };
    expect(body.downgraded).toBe(true);
    const rec = await store.get(body.task_id);
    expect(rec).toMatchObject({ downgraded: true, cost: 1, input: { use_multi_agent: false } });
    expect((await (await call(k.secret, 'GET', `/tasks/${body.task_id}`)).json()) as object).toMatchObject({ downgraded: true, tenant: 'acme' });
    const refused = await submit(k.secret, report(false));
    expect(refused.status).toBe(429);
    const retryAfter = Number(refused.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThan(0);
    expect(retryAfter).toBeLessThanOrEqual(86_400);
    expect(((await refused.json()) as ErrorJson).error).toMatchObject({ code: 'quota_exceeded', retry_after: retryAfter });
    expect(published).toHaveLength(2);
    expect(await (await call(k.secret, 'GET', '/quota')).json()).toMatchObject({ tenant: 'acme', units: 6, spent: 6, remaining: 0, window_seconds: 86_400 });
    // Cancelled before it starts: its units come back.
    await call(k.secret, 'DELETE', `/tasks/${body.task_id}`);
    expect(await (await call(k.secret, 'GET', '/quota')).json()).toMatchObject({ spent: 5, remaining: 1 });
    // The stock screening cost follows its limit: 2 + (limit * 2) // 10 → 2 for limit 3; 1 unit left is not enough.
    expect((await submit(k.secret, { type: 'stock_screening_workflow', input: { sector: 'Technology', limit: 3 } })).status).toBe(429);
  });
  it('charges a rerun its cost again: POST /tasks/:id/retry and a redrive answer 429 quota_exceeded when it does not fit', async () => {
    const { keyFor, submit, call, store } = setup({ limits: { quotaUnits: 5 } });
    const k = await keyFor('acme');
    const screening = { type: 'stock_screening_workflow', input: { sector: 'Technology', limit: 20 } }; // min(5, 2 + 40 // 10) = 5 units
    const idOf = async (res: Response) => ((await res.json()) as { task_id: string }).task_id;
    const a = await idOf(await submit(k.secret, screening));
    await call(k.secret, 'DELETE', `/tasks/${a}`);
    const b = await idOf(await submit(k.secret, screening));
    const refused = await call(k.secret, 'POST', `/tasks/${a}/retry`);
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    const refusal = ((await refused.json()) as ErrorJson).error;
    expect(refusal.code).toBe('quota_exceeded');
    expect(refusal.message).toMatch(/a rerun of this stock_screening_workflow task costs 5/);
    expect(await store.get(a)).toMatchObject({ status: 'cancelled', reruns: 0 });
    await call(k.secret, 'DELETE', `/tasks/${b}`);
    expect((await call(k.secret, 'POST', `/tasks/${a}/retry`)).status).toBe(202);
    expect(await (await call(k.secret, 'GET', '/quota')).json()).toMatchObject({ spent: 5, remaining: 0 });
    // A redrive that runs out of units reruns none: 429, and the task stays as it was.
    expect((await call(k.secret, 'POST', '/dead-letters/redrive', { task_ids: [b] })).status).toBe(429);
    expect(await store.get(b)).toMatchObject({ status: 'cancelled', reruns: 0 });
  });
});

describe('rate limits', () => {
  it('answers 429 rate_limited with Retry-After and the IETF RateLimit headers, per tenant', async () => {
    const { keyFor, submit, call } = setup({ limits: { submitsPerSecond: 2, readsPerSecond: 3 } });
    const a = await keyFor('acme');
    const b = await keyFor('rival');
    const first = await submit(a.secret);
    expect(first.headers.get('ratelimit-policy')).toBe('"submits";q=2;w=1');
    expect(first.headers.get('ratelimit')).toBe('"submits";r=1;t=1');
    expect((await submit(a.secret)).status).toBe(202);
    const refused = await submit(a.secret);
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(refused.headers.get('ratelimit')).toBe('"submits";r=0;t=1');
    expect(((await refused.json()) as ErrorJson).error.code).toBe('rate_limited');
    // Another tenant is not held back.
    expect((await submit(b.secret)).status).toBe(202);
    // Reads have their own, looser limit.
    const reads = await Promise.all([1, 2, 3, 4].map(async () => call(a.secret, 'GET', '/tasks')));
    expect(reads.map((r) => r.status).sort()).toEqual([200, 200, 200, 429]);
    expect(reads.find((r) => r.status === 200)?.headers.get('ratelimit-policy')).toBe('"reads";q=3;w=1');
  });
});

describe('idempotent replays', () => {
  it('a replay that arrives while the first request is publishing waits for its outcome: 503 when that publish fails', async () => {
    // A broker whose publish stalls until the API gives up (requestTimeoutMs), then fails.
    const broker = new MemoryBroker();
    const publish = broker.publish.bind(broker);
    let stall = true;
    broker.publish = (topic: string, m: OutgoingMessage) =>
      stall && topic === TOPIC ? new Promise((_, reject) => setTimeout(() => reject(new Error('broker stalled')), 400)) : publish(topic, m);
    const { keyFor, submit, store } = setup({ broker });
    const k = await keyFor('acme');
    const body = { user_id: 'u1', content: 'hello' };
    const firstP = submit(k.secret, body, { 'idempotency-key': 'same' });
    await new Promise((r) => setTimeout(r, 30));
    const replay = await submit(k.secret, body, { 'idempotency-key': 'same' });
    const first = await firstP;
    expect(first.status).toBe(503);
    expect(replay.status).toBe(503);
    const tasks = (await store.list({ tenant: 'acme', limit: 10 })).tasks;
    expect(tasks.map((t) => t.status)).toEqual(['failed']);
    // Once the broker is back, the client's retry under the same key creates the task.
    stall = false;
    const retry = await submit(k.secret, body, { 'idempotency-key': 'same' });
    expect(retry.status).toBe(202);
  });

  it('a replay never answers 202 for a task whose first publish failed and is not yet marked failed', async () => {
    // The publish fails after the timeout, and so does marking the task failed (Redis trouble): the task stays
    // queued and unpublished, and may yet end failed (the background retry) or run (the relay).
    const broker = new MemoryBroker();
    const publish = broker.publish.bind(broker);
    broker.publish = (topic: string, m: OutgoingMessage) =>
      topic === TOPIC ? new Promise((_, reject) => setTimeout(() => reject(new Error('broker stalled')), 400)) : publish(topic, m);
    const { keyFor, submit, store } = setup({ broker });
    store.failQueued = () => Promise.reject(new Error('redis timeout'));
    const k = await keyFor('acme');
    const firstP = submit(k.secret, undefined, { 'idempotency-key': 'stuck' });
    await new Promise((r) => setTimeout(r, 30));
    const replay = await submit(k.secret, undefined, { 'idempotency-key': 'stuck' });
    expect((await firstP).status).toBe(503);
    expect(replay.status).toBe(503);
    expect(((await replay.json()) as ErrorJson).error.message).toMatch(/has not published task .* yet; retry with the same key/);
    expect((await store.list({ tenant: 'acme', limit: 10 })).tasks.map((t) => [t.status, t.requestPublished])).toEqual([['queued', false]]);
  });

  it('a replay while the first publish is slow but succeeds answers 202 only after it is out', async () => {
    const broker = new MemoryBroker();
    const publish = broker.publish.bind(broker);
    let out = 0;
    broker.publish = async (topic: string, m: OutgoingMessage) => {
      if (topic === TOPIC) await new Promise((r) => setTimeout(r, 150));
      await publish(topic, m);
      out++;
    };
    const { keyFor, submit } = setup({ broker });
    const k = await keyFor('acme');
    const firstP = submit(k.secret, undefined, { 'idempotency-key': 'slow' });
    await new Promise((r) => setTimeout(r, 20));
    const replay = await submit(k.secret, undefined, { 'idempotency-key': 'slow' });
    expect(replay.status).toBe(202);
    expect(out).toBe(1);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect((await firstP).status).toBe(202);
  });
});
