/**
 * The OpenAPI document: valid OpenAPI 3.1, in step with the routes the app registers, and
 * true to the app: real answers (and the document's own examples) match the schemas it
 * declares. Plus the Swagger UI at /docs and its fixed list of assets.
 *
 * Every answer of every app made here is checked against the document (test/support/openapi.ts
 * wraps the app's fetch): its status declared for its operation, its body and events valid,
 * its headers declared. The last test asserts each operation was answered with a 2xx.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { Validator } from '@seriousme/openapi-schema-validator';
import type { Hono } from 'hono';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { newApiKey } from '../common/api-keys.ts';
import { MemoryBroker } from '../common/broker/memory.ts';
import { NonRetryableError, UnavailableError } from '../common/errors.ts';
import { silentLogger } from '../common/logger.ts';
import { Metrics } from '../common/metrics.ts';
import { defineTaskType } from '../common/registry.ts';
import { MemoryTaskStore } from '../common/store/memory.ts';
import type { Scope, TaskStore } from '../common/store/port.ts';
import type { HandlerEvent } from '../common/task.ts';
import { runAgent } from '../worker/agent-logic.ts';
import { defaultRegistry } from '../worker/task-types.ts';
import { embeddedStack } from '../test/support/embedded.ts';
import { Conformance, Coverage, METHODS, Spec, loadSpec, specPath, type Json } from '../test/support/openapi.ts';
import { createApp, type DefaultLimits } from './app.ts';
import type { AppEnv } from './auth.ts';
import { SEED_RESULT } from './openapi.ts';
import { UI_FILES } from './ui.ts';
import { waitFor } from '../test/support/wait.ts';

const TOPIC = 'requests';
const BODY_LIMIT = 64 * 1024;

/** Every operation answered with a 2xx, across all the apps of this file (checked at its end). */
const coverage = new Coverage();
/** The apps of the running test: every answer of theirs is checked against the document (test/support/openapi.ts). */
const watched: Conformance[] = [];
const cleanups: (() => Promise<unknown>)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  const failures: string[] = [];
  for (const c of watched.splice(0)) {
    await c.settle();
    failures.push(...c.drain());
  }
  expect(failures, 'answers that do not conform to the OpenAPI document').toEqual([]);
});

/** Checks every answer of `app` from now on. */
async function watch(app: Hono<AppEnv>): Promise<Conformance> {
  const c = await Conformance.watch(app, coverage);
  watched.push(c);
  return c;
}

async function setup(opts: { limits?: Partial<DefaultLimits>; metrics?: Metrics } = {}) {
  const store = new MemoryTaskStore();
  const broker = new MemoryBroker();
  void broker.subscribe(TOPIC, 'spy', () => Promise.resolve());
  const app = createApp({
    store,
    broker,
    registry: defaultRegistry(),
    logger: silentLogger,
    ...(opts.metrics ? { metrics: opts.metrics } : {}),
    options: {
      requestTopic: TOPIC,
      resultTopic: 'results',
      bodyLimit: BODY_LIMIT,
      requestTimeoutMs: 300,
      relayAfterMs: 5000,
      maxAttempts: 3,
      auth: { mode: 'keys', cacheMs: 0 },
      ...(opts.limits ? { limits: opts.limits } : {}),
    },
  });
  await watch(app);
  return { app, store, broker, ...caller(app, store) };
}

/** `keyFor` makes an API key; `call` sends a request with one (or none). */
function caller(app: Hono<AppEnv>, store: TaskStore) {
  const keyFor = async (tenant: string, scopes: Scope[] = ['tasks:write', 'tasks:read']) => {
    const { secret, hash, key } = newApiKey(tenant, scopes, null);
    await store.createKey(key, hash);
    return secret;
  };
  const call = (key: string | null, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
    app.request(`http://localhost${path}`, {
      method,
      headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
    });
  return { keyFor, call };
}

let spec: Spec;
let doc: Json;

beforeAll(async () => {
  spec = await loadSpec((await setup()).app);
  doc = spec.doc;
});

const deref = <T = Json>(v: unknown): T => spec.deref<T>(v);
const validatorOf = (schema: Json) => spec.validatorOf(schema);
const expectValid = (schema: Json, value: unknown, what: string) => spec.expectValid(schema, value, what);
const declared = (method: string, path: string, status: number) => spec.declared(method, path, status);

/**
 * A real answer: of this status, and checked (by the watch) as the answer of this operation.
 * Returns its JSON body.
 */
async function conforms(res: Response, method: string, path: string, status: number): Promise<Json> {
  expect(res.status, `${method} ${path}`).toBe(status);
  const checked = watched.map((c) => c.find(res)).find((c) => c !== undefined);
  expect(checked, `${method} ${path}: an answer of a watched app`).toBeDefined();
  expect(checked?.operation).toBe(`${method} ${specPath(path)}`);
  const text = await res.text();
  return (text === '' ? {} : JSON.parse(text)) as Json;
}

describe('GET /openapi.json', () => {
  it('is a valid OpenAPI 3.1 document', async () => {
    const v = new Validator();
    const r = await v.validate(doc);
    expect(r.errors).toBeUndefined();
    expect(r.valid).toBe(true);
    expect(v.version).toBe('3.1');
  });

  it('describes every route the app registers, and no other', async () => {
    const { app: probeApp } = await setup();
    const { app: withMetrics } = await setup({ metrics: new Metrics({ defaultMetrics: false }) });
    const metricsDoc = (await loadSpec(withMetrics)).doc;
    for (const [app, spec] of [
      [probeApp, doc],
      [withMetrics, metricsDoc],
    ] as const) {
      const routes = new Set(app.routes.filter((r) => r.method !== 'ALL').map((r) => `${r.method} ${specPath(r.path)}`));
      const documented = new Set(new Spec(spec).operations());
      expect([...documented].sort()).toEqual([...routes].sort());
      // Every path the app answers 405 on is a documented path (as run-api.ts runs it: with metrics).
      if (app !== withMetrics) continue;
      const paths = new Set([...documented].map((d) => d.slice(d.indexOf(' ') + 1)));
      for (const r of app.routes.filter((r) => r.method === 'ALL' && r.path !== '/*')) expect(paths, r.path).toContain(specPath(r.path));
    }
    expect(Object.keys(metricsDoc.paths as Json)).toContain('/metrics');
    expect(Object.keys(doc.paths as Json)).not.toContain('/metrics');
    const res = await withMetrics.request('http://localhost/metrics');
    expect(res.status).toBe(200);
    expect(
      Object.keys((((metricsDoc.paths as Json)['/metrics'] as Json).get as { responses: Record<string, Json> }).responses['200']?.content as Json),
    ).toContain((res.headers.get('content-type') ?? '').split(';')[0]);
  });

  it('declares the parameters, headers and security the routes read', () => {
    const params = (method: string, path: string) => {
      const item = (doc.paths as Record<string, Json>)[path] ?? {};
      const op = (item[method] ?? {}) as { parameters?: unknown[] };
      return [...((item.parameters as unknown[]) ?? []), ...(op.parameters ?? [])]
        .map((p) => deref<{ name: string; in: string }>(p))
        .map((p) => `${p.in}:${p.name}`);
    };
    const paramsBut = (method: string, path: string) => {
      const all = params(method, path);
      expect(all, `${method} ${path}`).toContain('header:X-Request-Id');
      return all.filter((p) => p !== 'header:X-Request-Id');
    };
    expect(paramsBut('post', '/tasks')).toEqual(['query:wait', 'header:Idempotency-Key']);
    expect(paramsBut('post', '/workflows')).toEqual(['header:Idempotency-Key']);
    expect(paramsBut('get', '/tasks').sort()).toEqual(['query:cursor', 'query:limit', 'query:status', 'query:type', 'query:user_id']);
    expect(paramsBut('get', '/tasks/{id}')).toEqual(['path:id', 'query:wait', 'query:history']);
    expect(paramsBut('delete', '/tasks/{id}')).toEqual(['path:id', 'query:reason']);
    expect(paramsBut('get', '/tasks/{id}/events')).toEqual(['path:id', 'header:Last-Event-ID', 'query:last_event_id']);
    expect(paramsBut('get', '/admin/keys')).toEqual(['query:tenant']);
    expect(paramsBut('get', '/workflows/{id}/events')).toEqual(['path:id', 'header:Last-Event-ID', 'query:last_event_id']);
    const ops = Object.values(doc.paths as Record<string, Json>).flatMap((item) => METHODS.flatMap((m) => (item[m] ? [item[m] as Json] : [])));
    for (const op of ops) expect(op.security, String(op.operationId)).toBeDefined();
    const scheme = (doc.components as { securitySchemes: Record<string, Json> }).securitySchemes.bearerAuth;
    expect(scheme).toMatchObject({ type: 'http', scheme: 'bearer' });
    for (const s of ['tasks:write', 'tasks:read', 'admin']) expect(scheme?.description).toContain(s);
  });

  it('describes the general form as one schema per registered task type, from its zod schema', () => {
    const general = deref<{ oneOf: Json[]; discriminator: { propertyName: string; mapping: Record<string, string> } }>({
      $ref: '#/components/schemas/GeneralSubmission',
    });
    expect(general.discriminator.propertyName).toBe('type');
    expect(Object.keys(general.discriminator.mapping).sort()).toEqual(defaultRegistry().names().sort());
    const submission = { $ref: '#/components/schemas/Submission' };
    expectValid(submission, { user_id: 'user123', content: '机械键盘降价了' }, 'seed form');
    expectValid(submission, { type: 'stock_screening_workflow', input: { sector: 'Technology', limit: 5 }, priority: 'high' }, 'general form');
    for (const bad of [
      { user_id: 'user123', content: '机械键盘降价了', extra: 1 },
      { type: 'agent', input: { content: 'x', temperature: 1 } },
      { type: 'stock_screening_workflow', input: { sector: 'Technology' } },
      { type: 'no_such_type', input: {} },
    ]) {
      expect(validatorOf(submission)(bad), JSON.stringify(bad)).toBe(false);
    }
  });

  it('has examples that match their schemas, and seed 004’s example result is what the agent answers', async () => {
    let checked = 0;
    const visit = (node: unknown, where: string): void => {
      if (typeof node !== 'object' || node === null) return;
      if (Array.isArray(node)) return node.forEach((n, i) => visit(n, `${where}/${i}`));
      const o = node as Json;
      // A media type, parameter or header with a schema and examples.
      if (o.schema && typeof o.schema === 'object' && (o.examples || o.example !== undefined) && !where.includes('event-stream')) {
        const examples = o.examples ? Object.values(o.examples as Record<string, { value: unknown }>).map((e) => e.value) : [o.example];
        for (const value of examples) {
          expectValid(o.schema as Json, value, where);
          checked++;
        }
      }
      for (const [k, v] of Object.entries(o)) if (k !== 'schema') visit(v, `${where}/${k}`);
    };
    visit(doc.paths, '#/paths');
    visit((doc.components as Json).responses, '#/components/responses');
    visit((doc.components as Json).parameters, '#/components/parameters');
    for (const [name, schema] of Object.entries((doc.components as { schemas: Record<string, Json> }).schemas)) {
      for (const value of (schema.examples as unknown[] | undefined) ?? []) {
        expectValid({ $ref: `#/components/schemas/${name}` }, value, name);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(30);
    const ctx = {
      taskId: 't',
      tenant: 'acme',
      attempt: 1,
      userId: 'user123',
      signal: new AbortController().signal,
      progress: async () => {},
      log: () => {},
      partial: async () => {},
      needs: {},
      spawn: () => Promise.reject(new Error('ctx.spawn is not available here')),
    };
    expect(await runAgent(ctx, { content: '机械键盘降价了' })).toEqual(SEED_RESULT);
  });
});

describe('real answers match the declared schemas', () => {
  it('submit, read, list, stream, cancel, quota and the errors', async () => {
    const { call, keyFor, store } = await setup();
    await store.setTenantLimits('acme', { quotaUnits: 100 });
    const key = await keyFor('acme');

    // 202, then 200 queued.
    const accepted = await conforms(await call(key, 'POST', '/tasks', { user_id: 'user123', content: '机械键盘降价了' }), 'POST', '/tasks', 202);
    const id = String(accepted.task_id);
    expect((await conforms(await call(key, 'GET', `/tasks/${id}`), 'GET', '/tasks/:id', 200)).status).toBe('queued');

    // Run it as a worker does, then 200 done, with the history, and the event stream.
    expect((await store.claim(id, 'w1', 30_000)).outcome).toBe('claimed');
    const events: HandlerEvent[] = [];
    const result = await runAgent(
      {
        taskId: id,
        tenant: 'acme',
        attempt: 1,
        userId: 'user123',
        signal: new AbortController().signal,
        progress: (percent, message) => Promise.resolve(void events.push({ type: 'progress', data: { percent, message: message ?? null } })),
        log: (level, message, data) => void events.push({ type: 'log', data: { level, message, ...(data ? { data } : {}) } }),
        partial: (chunk) => Promise.resolve(void events.push({ type: 'partial', data: { chunk } })),
        needs: {},
        spawn: () => Promise.reject(new Error('ctx.spawn is not available here')),
      },
      { content: '机械键盘降价了' },
    );
    await store.complete(id, 'w1', result, events);
    const done = await conforms(await call(key, 'GET', `/tasks/${id}?history=true`), 'GET', '/tasks/:id', 200);
    expect(done).toMatchObject({ status: 'done', result: SEED_RESULT });
    expect((done.history as unknown[]).length).toBeGreaterThan(5);

    const stream = await call(key, 'GET', `/tasks/${id}/events`);
    expect(stream.status).toBe(200);
    expect(stream.headers.get('content-type')).toMatch(/^text\/event-stream/);
    const sse = deref<{ content: Record<string, Json> }>(declared('GET', '/tasks/:id/events', 200)).content['text/event-stream'];
    const itemSchema = sse?.['x-itemSchema'] as Json;
    const frames = (await stream.text()).split('\n\n').filter((f) => f.trim() !== '' && !f.startsWith(':'));
    expect(frames.length).toBe((done.history as unknown[]).length);
    for (const frame of frames) {
      const fields = Object.fromEntries(frame.split('\n').map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()]));
      expectValid(itemSchema, { id: fields.id, event: fields.event, data: JSON.parse(fields.data ?? 'null') as unknown }, `SSE ${fields.event}`);
    }

    await conforms(await call(key, 'GET', '/tasks?limit=5'), 'GET', '/tasks', 200);
    expect((await conforms(await call(key, 'GET', '/quota'), 'GET', '/quota', 200)).remaining).toBe(99);
    expect((await conforms(await call(key, 'GET', '/stats'), 'GET', '/stats', 200)).tasks).toMatchObject({ by_status: { done: 1 } });

    // 200 cancelled, then 409.
    const queued = await conforms(
      await call(key, 'POST', '/tasks', { type: 'agent', input: { content: 'hello', simulate_ms: 5 }, priority: 'high' }),
      'POST',
      '/tasks',
      202,
    );
    expect((await conforms(await call(key, 'DELETE', `/tasks/${String(queued.task_id)}?reason=test`), 'DELETE', '/tasks/:id', 200)).status).toBe('cancelled');
    expect((await conforms(await call(key, 'DELETE', `/tasks/${id}`), 'DELETE', '/tasks/:id', 409)).error).toMatchObject({
      code: 'task_finished',
      status: 'done',
    });

    // 400s: a body, a query and a path that do not match.
    const bad = await conforms(await call(key, 'POST', '/tasks', { type: 'agent', input: { content: 'x', temperature: 1 } }), 'POST', '/tasks', 400);
    expect(bad.error).toMatchObject({ issues: [{ path: 'input.temperature' }] });
    await conforms(await call(key, 'GET', '/tasks?limit=500'), 'GET', '/tasks', 400);
    await conforms(await call(key, 'GET', '/tasks/not-a-uuid'), 'GET', '/tasks/:id', 400);
    await conforms(await call(key, 'GET', `/tasks/${id}/events`, undefined, { 'last-event-id': 'nope' }), 'GET', '/tasks/:id/events', 400);
    // 401, 403, 404.
    await conforms(await call(null, 'GET', '/tasks'), 'GET', '/tasks', 401);
    await conforms(await call('atq_short', 'POST', '/tasks', { user_id: 'u', content: 'x' }), 'POST', '/tasks', 401);
    await conforms(await call(await keyFor('acme', ['tasks:read']), 'POST', '/tasks', { user_id: 'u', content: 'x' }), 'POST', '/tasks', 403);
    await conforms(await call(await keyFor('other'), 'GET', `/tasks/${id}`), 'GET', '/tasks/:id', 404);
    // 405, on a path that declares it in its description.
    await conforms(await call(key, 'PATCH', '/tasks'), 'PATCH', '/tasks', 405);
    // 413, 415, 422.
    await conforms(await call(key, 'POST', '/tasks', { user_id: 'u', content: 'x'.repeat(BODY_LIMIT) }), 'POST', '/tasks', 413);
    await conforms(await call(key, 'POST', '/tasks', 'user_id=u', { 'content-type': 'text/plain' }), 'POST', '/tasks', 415);
    const idem = { 'idempotency-key': 'order-4711' };
    const first = await call(key, 'POST', '/tasks', { user_id: 'u', content: 'one' }, idem);
    expect(first.status).toBe(202);
    const replay = await call(key, 'POST', '/tasks', { user_id: 'u', content: 'one' }, idem);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    await conforms(replay, 'POST', '/tasks', 202);
    await conforms(await call(key, 'POST', '/tasks', { user_id: 'u', content: 'two' }, idem), 'POST', '/tasks', 422);
  });

  it('429: quota exceeded and rate limited, with their headers', async () => {
    const { call, keyFor, store } = await setup();
    await store.setTenantLimits('poor', { quotaUnits: 2 });
    const poor = await keyFor('poor');
    const options = { type: 'options_analysis_workflow', input: { strategy_summary: { symbol: 'SPY', underlying_price: 500 } } };
    const quota = await conforms(await call(poor, 'POST', '/tasks', options), 'POST', '/tasks', 429);
    expect(quota.error).toMatchObject({ code: 'quota_exceeded' });

    await store.setTenantLimits('busy', { submitsPerSecond: 1, readsPerSecond: 1 });
    const busy = await keyFor('busy');
    const ok = await call(busy, 'POST', '/tasks', { user_id: 'u', content: 'x' });
    expect(ok.headers.get('ratelimit-policy')).toBe('"submits";q=1;w=1');
    await conforms(ok, 'POST', '/tasks', 202);
    const limited = await call(busy, 'POST', '/tasks', { user_id: 'u', content: 'x' });
    expect(limited.headers.get('ratelimit')).not.toBeNull();
    expect((await conforms(limited, 'POST', '/tasks', 429)).error).toMatchObject({ code: 'rate_limited' });
    await conforms(await call(busy, 'GET', '/quota'), 'GET', '/quota', 200);
    await conforms(await call(busy, 'GET', '/quota'), 'GET', '/quota', 429);
  });

  it('503: a dependency down', async () => {
    const { call, keyFor, store, app } = await setup();
    const key = await keyFor('acme');
    store.create = () => Promise.reject(new UnavailableError('redis', 'redis is not connected'));
    const res = await conforms(await call(key, 'POST', '/tasks', { user_id: 'u', content: 'x' }), 'POST', '/tasks', 503);
    expect(res.error).toMatchObject({ code: 'redis_unavailable', dependency: 'redis' });
    await conforms(await app.request('http://localhost/healthz'), 'GET', '/healthz', 200);
    await conforms(await app.request('http://localhost/readyz'), 'GET', '/readyz', 200);
    store.ping = () => Promise.reject(new UnavailableError('redis', 'down'));
    await conforms(await app.request('http://localhost/readyz'), 'GET', '/readyz', 503);
  });

  it('the admin routes', async () => {
    const { call, keyFor } = await setup();
    const admin = await keyFor('ops', ['admin']);
    const created = await conforms(
      await call(admin, 'POST', '/admin/keys', { tenant: 'acme', scopes: ['tasks:read'], name: 'ci' }),
      'POST',
      '/admin/keys',
      201,
    );
    await conforms(await call(admin, 'POST', '/admin/keys', { tenant: 'Not A Tenant', scopes: ['tasks:read'] }), 'POST', '/admin/keys', 400);
    await conforms(await call(admin, 'GET', '/admin/keys?tenant=acme'), 'GET', '/admin/keys', 200);
    await conforms(await call(admin, 'GET', '/admin/tenants/acme'), 'GET', '/admin/tenants/:tenant', 200);
    await conforms(await call(admin, 'PUT', '/admin/tenants/acme/limits', { quota_units: 10, max_running: null }), 'PUT', '/admin/tenants/:tenant/limits', 200);
    await conforms(await call(String(created.key), 'GET', '/admin/keys'), 'GET', '/admin/keys', 403);
    await conforms(await call(admin, 'DELETE', `/admin/keys/${String(created.id)}`), 'DELETE', '/admin/keys/:keyId', 200);
    await conforms(await call(admin, 'DELETE', `/admin/keys/${String(created.id)}`), 'DELETE', '/admin/keys/:keyId', 404);
  });
});

/** Fails while `broken.on` (a dead letter after its one attempt), then succeeds. */
const broken = { on: true };
const flaky = defineTaskType({
  name: 'flaky',
  input: z.object({ n: z.number() }),
  maxAttempts: 1,
  handler: (_ctx, input) => (broken.on ? Promise.reject(new NonRetryableError('it broke', 'upstream_down')) : Promise.resolve({ n: input.n })),
});
/** Runs until it is cancelled. */
const hold = defineTaskType({
  name: 'hold',
  input: z.object({}),
  handler: (ctx) => new Promise((_, reject) => ctx.signal.addEventListener('abort', () => reject(new Error('cancelled')), { once: true })),
});

/** The embedded stack (a worker and a relay in process), with API keys, every answer checked. */
async function embedded() {
  const { app, store } = await embeddedStack(cleanups, {
    registry: defaultRegistry().register(flaky).register(hold),
    relay: true,
    app: { auth: { mode: 'keys', cacheMs: 0 }, bodyLimit: BODY_LIMIT, keepAliveMs: 50 },
  });
  const conformance = await watch(app);
  return { app, store, conformance, ...caller(app, store) };
}

describe('real answers match the declared schemas: workflows, reruns, dead letters, MCP (embedded stack)', () => {
  it('POST, GET, DELETE /workflows, the list and the event stream, and their errors', async () => {
    const { call, keyFor, store, conformance } = await embedded();
    const key = await keyFor('acme');
    const steps = {
      name: 'pair',
      steps: [
        { id: 'a', type: 'agent', input: { content: 'first' } },
        { id: 'b', type: 'agent', input: { content: 'second' }, needs: ['a'] },
      ],
    };
    const idem = { 'idempotency-key': 'wf-4711' };
    const started = await call(key, 'POST', '/workflows', steps, idem);
    const accepted = await conforms(started, 'POST', '/workflows', 202);
    expect(started.headers.get('location')).toBe(accepted.status_url);
    const id = String(accepted.workflow_id);
    // An Idempotency-Key replay (with its header), and the same key for another body: 422.
    const replay = await call(key, 'POST', '/workflows', steps, idem);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect((await conforms(replay, 'POST', '/workflows', 202)).workflow_id).toBe(id);
    const reused = await conforms(await call(key, 'POST', '/workflows', { ...steps, name: 'other' }, idem), 'POST', '/workflows', 422);
    expect(reused.error).toMatchObject({ code: 'idempotency_key_reused', workflow_id: id });
    await waitFor(
      'the workflow done',
      async () => (await conforms(await call(key, 'GET', `/workflows/${id}`), 'GET', '/workflows/:id', 200)).status === 'done',
    );

    // The stream of a finished workflow: every step's events, then its own `workflow` event.
    const stream = await call(key, 'GET', `/workflows/${id}/events`);
    expect(stream.status).toBe(200);
    const events = (await conformance.find(stream)?.events) ?? [];
    expect(events.map((e) => e.event)).toContain('done');
    expect(events.at(-1)).toMatchObject({ event: 'workflow', data: { status: 'done', task_id: null, step: null } });
    expect(events.find((e) => e.event === 'progress')?.data).toMatchObject({ step: 'a' });
    const resumed = await call(key, 'GET', `/workflows/${id}/events?last_event_id=${String(events.at(-2)?.id)}`);
    expect((await conformance.find(resumed)?.events)?.map((e) => e.event)).toEqual(['workflow']);

    // A second page, by the cursor; a template; a cancel, then 409.
    const template = await conforms(
      await call(key, 'POST', '/workflows', { template: 'seed_report', input: { topic: 'batteries' } }),
      'POST',
      '/workflows',
      202,
    );
    const first = await conforms(await call(key, 'GET', '/workflows?limit=1'), 'GET', '/workflows', 200);
    expect(first.next_cursor).toEqual(expect.any(String));
    await conforms(await call(key, 'GET', `/workflows?limit=1&cursor=${String(first.next_cursor)}`), 'GET', '/workflows', 200);
    await conforms(await call(key, 'DELETE', `/workflows/${String(template.workflow_id)}`), 'DELETE', '/workflows/:id', 200);
    const held = await conforms(await call(key, 'POST', '/workflows', { steps: [{ id: 'h', type: 'hold', input: {} }] }), 'POST', '/workflows', 202);
    const heldTask = String((held.steps as Json).h);
    await waitFor('the step running', async () => (await store.get(heldTask))?.status === 'running');
    expect((await conforms(await call(key, 'DELETE', `/workflows/${String(held.workflow_id)}?reason=test`), 'DELETE', '/workflows/:id', 200)).status).toBe(
      'cancelled',
    );
    expect((await conforms(await call(key, 'DELETE', `/workflows/${id}`), 'DELETE', '/workflows/:id', 409)).error).toMatchObject({ code: 'workflow_finished' });

    // 400, 401, 403, 404, 405, 413, 415.
    const bad = await conforms(await call(key, 'POST', '/workflows', { steps: [{ id: 'x', type: 'agent', input: {} }] }), 'POST', '/workflows', 400);
    expect(bad.error).toMatchObject({ code: 'validation_failed' });
    await conforms(await call(key, 'POST', '/workflows', '{"steps":'), 'POST', '/workflows', 400);
    await conforms(await call(key, 'GET', '/workflows?limit=0'), 'GET', '/workflows', 400);
    await conforms(await call(key, 'GET', '/workflows/not-a-uuid'), 'GET', '/workflows/:id', 400);
    await conforms(await call(key, 'DELETE', '/workflows/not-a-uuid'), 'DELETE', '/workflows/:id', 400);
    await conforms(await call(key, 'GET', `/workflows/${id}/events`, undefined, { 'last-event-id': 'nope' }), 'GET', '/workflows/:id/events', 400);
    await conforms(await call(null, 'POST', '/workflows', steps), 'POST', '/workflows', 401);
    await conforms(await call(null, 'GET', '/workflows'), 'GET', '/workflows', 401);
    const reader = await keyFor('acme', ['tasks:read']);
    await conforms(await call(reader, 'POST', '/workflows', steps), 'POST', '/workflows', 403);
    await conforms(await call(reader, 'DELETE', `/workflows/${id}`), 'DELETE', '/workflows/:id', 403);
    await conforms(await call(await keyFor('acme', ['tasks:write']), 'GET', `/workflows/${id}`), 'GET', '/workflows/:id', 403);
    const other = await keyFor('other');
    await conforms(await call(other, 'GET', `/workflows/${id}`), 'GET', '/workflows/:id', 404);
    await conforms(await call(other, 'DELETE', `/workflows/${id}`), 'DELETE', '/workflows/:id', 404);
    await conforms(await call(other, 'GET', `/workflows/${id}/events`), 'GET', '/workflows/:id/events', 404);
    await conforms(await call(key, 'PATCH', '/workflows'), 'PATCH', '/workflows', 405);
    await conforms(await call(key, 'PUT', `/workflows/${id}`), 'PUT', '/workflows/{id}', 405);
    await conforms(await call(key, 'POST', `/workflows/${id}/events`), 'POST', '/workflows/{id}/events', 405);
    await conforms(await call(key, 'POST', '/workflows', { ...steps, name: 'x'.repeat(BODY_LIMIT) }), 'POST', '/workflows', 413);
    await conforms(await call(key, 'POST', '/workflows', 'steps', { 'content-type': 'text/plain' }), 'POST', '/workflows', 415);
  });

  it('429 on the workflow and dead-letter routes: over the submit rate, the quota, the read rate', async () => {
    const { call, keyFor, store } = await embedded();
    const one = { steps: [{ id: 'a', type: 'agent', input: { content: 'x' } }] };
    await store.setTenantLimits('busy', { submitsPerSecond: 1, readsPerSecond: 1 });
    const busy = await keyFor('busy');
    const started = await call(busy, 'POST', '/workflows', one);
    expect([started.headers.get('ratelimit-policy'), started.headers.get('ratelimit')]).toEqual(['"submits";q=1;w=1', '"submits";r=0;t=1']);
    await conforms(started, 'POST', '/workflows', 202);
    const limited = await call(busy, 'POST', '/workflows', one);
    expect(limited.headers.get('ratelimit')).toBe('"submits";r=0;t=1');
    expect((await conforms(limited, 'POST', '/workflows', 429)).error).toMatchObject({ code: 'rate_limited' });
    const listed = await call(busy, 'GET', '/workflows');
    expect(listed.headers.get('ratelimit-policy')).toBe('"reads";q=1;w=1');
    await conforms(listed, 'GET', '/workflows', 200);
    expect((await conforms(await call(busy, 'GET', '/workflows'), 'GET', '/workflows', 429)).error).toMatchObject({ code: 'rate_limited' });
    await conforms(await call(busy, 'GET', '/dead-letters'), 'GET', '/dead-letters', 429);

    await store.setTenantLimits('poor', { quotaUnits: 1 });
    const poor = await keyFor('poor');
    const two = { steps: [...one.steps, { id: 'b', type: 'agent', input: { content: 'y' } }] };
    expect((await conforms(await call(poor, 'POST', '/workflows', two), 'POST', '/workflows', 429)).error).toMatchObject({ code: 'quota_exceeded' });

    // A read rate on every read route of a workflow.
    await store.setTenantLimits('slow', { readsPerSecond: 1 });
    const slow = await keyFor('slow');
    const wf = await conforms(await call(slow, 'POST', '/workflows', one), 'POST', '/workflows', 202);
    for (const path of [`/workflows/${String(wf.workflow_id)}`, `/workflows/${String(wf.workflow_id)}/events`]) {
      await waitFor(`a second of ${path}`, async () => {
        const r = await call(slow, 'GET', path);
        if (r.status !== 200) return false;
        expect(r.headers.get('ratelimit')).not.toBeNull();
        return true;
      });
      await conforms(await call(slow, 'GET', path), 'GET', path.replace(String(wf.workflow_id), ':id'), 429);
    }
  });

  it('dead letters, their redrive and POST /tasks/:id/retry, and their errors', async () => {
    const { call, keyFor, store } = await embedded();
    const key = await keyFor('acme');
    broken.on = true;
    const failing = async () => {
      const t = await conforms(await call(key, 'POST', '/tasks', { type: 'flaky', input: { n: 1 } }), 'POST', '/tasks', 202);
      const id = String(t.task_id);
      await waitFor('the task failed', async () => (await store.get(id))?.status === 'failed');
      return id;
    };
    const a = await failing();
    const b = await failing();
    const page = await conforms(await call(key, 'GET', '/dead-letters?type=flaky&code=upstream_down&limit=1'), 'GET', '/dead-letters', 200);
    expect(page.dead_letters).toMatchObject([{ task_id: b, code: 'upstream_down' }]);
    await conforms(await call(key, 'GET', `/dead-letters?cursor=${String(page.next_cursor)}`), 'GET', '/dead-letters', 200);
    await conforms(await call(key, 'GET', '/dead-letters?limit=500'), 'GET', '/dead-letters', 400);
    await conforms(await call(key, 'GET', '/dead-letters?type=Not%20A%20Type'), 'GET', '/dead-letters', 400);

    // Rerun one by id, then the rest by type.
    broken.on = false;
    expect((await conforms(await call(key, 'POST', `/tasks/${a}/retry`), 'POST', '/tasks/:id/retry', 202)).status).toBe('queued');
    await waitFor('the rerun done', async () => (await store.get(a))?.status === 'done');
    expect((await conforms(await call(key, 'POST', `/tasks/${a}/retry`), 'POST', '/tasks/:id/retry', 409)).error).toMatchObject({
      code: 'task_not_retryable',
      task_id: a,
      status: 'done',
    });
    expect(await conforms(await call(key, 'POST', '/dead-letters/redrive', { type: 'flaky' }), 'POST', '/dead-letters/redrive', 200)).toEqual({
      redriven: 1,
      task_ids: [b],
    });
    await conforms(await call(key, 'POST', '/dead-letters/redrive', { task_ids: [a] }), 'POST', '/dead-letters/redrive', 200);

    // A step of a workflow cannot be rerun alone.
    const wf = await conforms(await call(key, 'POST', '/workflows', { steps: [{ id: 'h', type: 'hold', input: {} }] }), 'POST', '/workflows', 202);
    await conforms(await call(key, 'DELETE', `/workflows/${String(wf.workflow_id)}`), 'DELETE', '/workflows/:id', 200);
    await conforms(await call(key, 'POST', `/tasks/${String((wf.steps as Json).h)}/retry`), 'POST', '/tasks/:id/retry', 409);

    // 400, 401, 403, 404, 405, 413, 415.
    await conforms(await call(key, 'POST', '/tasks/not-a-uuid/retry'), 'POST', '/tasks/:id/retry', 400);
    await conforms(await call(null, 'POST', `/tasks/${a}/retry`), 'POST', '/tasks/:id/retry', 401);
    const reader = await keyFor('acme', ['tasks:read']);
    await conforms(await call(reader, 'POST', `/tasks/${a}/retry`), 'POST', '/tasks/:id/retry', 403);
    await conforms(await call(await keyFor('other'), 'POST', `/tasks/${a}/retry`), 'POST', '/tasks/:id/retry', 404);
    await conforms(await call(key, 'GET', `/tasks/${a}/retry`), 'GET', '/tasks/{id}/retry', 405);
    await conforms(await call(key, 'POST', '/dead-letters/redrive', { task_ids: ['nope'] }), 'POST', '/dead-letters/redrive', 400);
    await conforms(await call(key, 'POST', '/dead-letters/redrive', { everything: true }), 'POST', '/dead-letters/redrive', 400);
    await conforms(await call(null, 'POST', '/dead-letters/redrive', {}), 'POST', '/dead-letters/redrive', 401);
    await conforms(await call(reader, 'POST', '/dead-letters/redrive', {}), 'POST', '/dead-letters/redrive', 403);
    await conforms(await call(await keyFor('acme', ['tasks:write']), 'GET', '/dead-letters'), 'GET', '/dead-letters', 403);
    await conforms(await call(null, 'GET', '/dead-letters'), 'GET', '/dead-letters', 401);
    await conforms(await call(key, 'DELETE', '/dead-letters'), 'DELETE', '/dead-letters', 405);
    await conforms(await call(key, 'GET', '/dead-letters/redrive'), 'GET', '/dead-letters/redrive', 405);
    await conforms(await call(key, 'POST', '/dead-letters/redrive', { type: 'x'.repeat(BODY_LIMIT) }), 'POST', '/dead-letters/redrive', 413);
    await conforms(await call(key, 'POST', '/dead-letters/redrive', 'all', { 'content-type': 'text/plain' }), 'POST', '/dead-letters/redrive', 415);
  });

  it('POST /mcp: an agent session over streamable HTTP, its tools’ own calls, and the errors', async () => {
    const { app, call, keyFor } = await embedded();
    const key = await keyFor('acme');
    // The SDK's client: initialize (200), the initialized notification (202), tools/list, tools/call;
    // each tool's call of the API goes through the watched app too.
    const client = new Client({ name: 'conformance', version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL('http://localhost/mcp'), {
      fetch: async (input, init) => app.fetch(new Request(input, init)),
      requestInit: { headers: { authorization: `Bearer ${key}` } },
    });
    await client.connect(transport);
    cleanups.push(() => client.close());
    expect((await client.listTools()).tools.map((t) => t.name)).toContain('submit_workflow');
    const submitted = (await client.callTool({ name: 'submit_task', arguments: { type: 'agent', input: { content: 'hi' } } })) as CallToolResult;
    expect(submitted.isError).toBeFalsy();
    const text = submitted.content[0]?.type === 'text' ? submitted.content[0].text : '{}';
    const taskId = String((JSON.parse(text) as Json).task_id);
    await client.callTool({ name: 'wait_for_tasks', arguments: { task_ids: [taskId], max_wait_seconds: 10 } });
    await client.callTool({ name: 'get_statistics', arguments: {} });

    const rpc = { jsonrpc: '2.0', id: 1, method: 'tools/list' };
    const accept = { accept: 'application/json, text/event-stream' };
    const listed = await call(key, 'POST', '/mcp', rpc, accept);
    expect(listed.status).toBe(200);
    expect(await watched.at(-1)?.find(listed)?.events).toMatchObject([{ event: 'message', data: { jsonrpc: '2.0', id: 1 } }]);
    await conforms(await call(key, 'POST', '/mcp', { jsonrpc: '2.0', method: 'notifications/initialized' }, accept), 'POST', '/mcp', 202);
    await conforms(await call(key, 'POST', '/mcp', { hello: 'world' }, accept), 'POST', '/mcp', 400);
    await conforms(await call(key, 'POST', '/mcp', '{"jsonrpc":', accept), 'POST', '/mcp', 400);
    await conforms(await call(key, 'POST', '/mcp', rpc, { accept: 'text/html' }), 'POST', '/mcp', 406);
    await conforms(await call(key, 'POST', '/mcp', JSON.stringify(rpc), { ...accept, 'content-type': 'text/plain' }), 'POST', '/mcp', 415);
    await conforms(await call(key, 'POST', '/mcp', { ...rpc, params: { pad: 'x'.repeat(BODY_LIMIT) } }, accept), 'POST', '/mcp', 413);
    await conforms(await call(null, 'POST', '/mcp', rpc, accept), 'POST', '/mcp', 401);
    await conforms(await call(key, 'GET', '/mcp', undefined, { accept: 'text/event-stream' }), 'GET', '/mcp', 405);
  });
});

describe('real answers match the declared schemas: the rest', () => {
  it('the schedule routes', async () => {
    const { call, keyFor } = await setup();
    const key = await keyFor('acme');
    const body = { cron: '0 9 * * 1-5', timezone: 'Europe/Berlin', task: { type: 'agent', input: { content: 'hi' } } };
    const res = await call(key, 'POST', '/schedules', body);
    const s = await conforms(res, 'POST', '/schedules', 201);
    expect(res.headers.get('location')).toMatch(new RegExp(`/schedules/${String(s.schedule_id)}$`));
    const path = `/schedules/${String(s.schedule_id)}`;
    await conforms(await call(key, 'GET', path), 'GET', '/schedules/:id', 200);
    await conforms(await call(key, 'GET', '/schedules'), 'GET', '/schedules', 200);
    await conforms(await call(key, 'POST', `${path}/pause`), 'POST', '/schedules/:id/pause', 200);
    await conforms(await call(key, 'POST', `${path}/resume`), 'POST', '/schedules/:id/resume', 200);
    await conforms(await call(key, 'DELETE', path), 'DELETE', '/schedules/:id', 200);
    await conforms(await call(key, 'GET', path), 'GET', '/schedules/:id', 404);
    await conforms(await call(key, 'POST', '/schedules', { ...body, cron: 'x' }), 'POST', '/schedules', 400);
    await conforms(await call(key, 'PATCH', '/schedules'), 'PATCH', '/schedules', 405);
  });

  it('the dashboard’s files, the metrics and an unknown route', async () => {
    const { app, call, keyFor } = await setup({ metrics: new Metrics({ defaultMetrics: false }) });
    expect((await app.request('http://localhost/ui')).status).toBe(200);
    for (const file of UI_FILES.keys()) expect((await app.request(`http://localhost/ui/${file}`)).status, file).toBe(200);
    expect((await app.request('http://localhost/ui/nope.js')).status).toBe(404);
    expect((await app.request('http://localhost/ui', { method: 'POST' })).status).toBe(405);
    expect((await app.request('http://localhost/favicon.ico')).status).toBe(401);
    expect((await call(await keyFor('acme'), 'GET', '/no/such/route')).status).toBe(404);
    expect((await app.request('http://localhost/metrics')).status).toBe(200);
    expect((await app.request('http://localhost/metrics', { method: 'POST' })).status).toBe(405);
  });
});

describe('GET /docs', () => {
  it('serves Swagger UI from swagger-ui-dist, without a key, pointed at /openapi.json', async () => {
    const { app } = await setup();
    const page = await app.request('http://localhost/docs');
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await page.text();
    expect(html).toContain('/docs/swagger-ui-bundle.js');
    expect(html).not.toMatch(/https?:\/\//);

    const bundle = await app.request('http://localhost/docs/swagger-ui-bundle.js');
    expect(bundle.status).toBe(200);
    expect(bundle.headers.get('content-type')).toMatch(/^text\/javascript/);
    expect(await bundle.text()).toContain('SwaggerUIBundle');
    const css = await app.request('http://localhost/docs/swagger-ui.css');
    expect(css.headers.get('content-type')).toMatch(/^text\/css/);
    const init = await app.request('http://localhost/docs/init.js');
    expect(await init.text()).toContain("url: '/openapi.json'");
  });

  it('answers 404 for any file outside its list, however it is spelled', async () => {
    const { app } = await setup();
    for (const path of [
      '/docs/package.json',
      '/docs/swagger-ui-bundle.js.map',
      '/docs/..%2Fpackage.json',
      '/docs/%2e%2e%2f%2e%2e%2fpackage.json',
      '/docs/../package.json',
      '/docs/__proto__',
      '/docs/constructor',
      '/docs/sub/swagger-ui.css',
    ]) {
      const res = await app.request(`http://localhost${path}`);
      // `/docs/../package.json` is `/package.json` once the URL is parsed: not public, so 401.
      expect(res.status, path).toBe(new URL(path, 'http://localhost').pathname.startsWith('/docs/') ? 404 : 401);
    }
    expect((await app.request('http://localhost/docs/swagger-ui.css', { method: 'POST' })).status).toBe(405);
  });
});

describe('the conformance checks', () => {
  /** Operations no test here answers with a 2xx, and why: none (the /docs and /ui files, /metrics and /mcp are all answered above). */
  const SKIPPED: Record<string, string> = {};

  it('answered every operation of the document with a 2xx at least once', async () => {
    // The document of an app with metrics: every operation there is.
    const full = await loadSpec((await setup({ metrics: new Metrics({ defaultMetrics: false }) })).app);
    for (const op of Object.keys(SKIPPED)) expect(full.operations(), op).toContain(op);
    expect(coverage.missing(full, SKIPPED)).toEqual([]);
  });
});
