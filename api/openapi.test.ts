/**
 * The OpenAPI document: valid OpenAPI 3.1, in step with the routes the app registers, and
 * true to the app: real answers (and the document's own examples) match the schemas it
 * declares. Plus the Swagger UI at /docs and its fixed list of assets.
 */
import { createRequire } from 'node:module';
import { Validator } from '@seriousme/openapi-schema-validator';
import { beforeAll, describe, expect, it } from 'vitest';
import { newApiKey } from '../common/api-keys.ts';
import { MemoryBroker } from '../common/broker/memory.ts';
import { UnavailableError } from '../common/errors.ts';
import { silentLogger } from '../common/logger.ts';
import { Metrics } from '../common/metrics.ts';
import { MemoryTaskStore } from '../common/store/memory.ts';
import type { Scope } from '../common/store/port.ts';
import type { HandlerEvent } from '../common/task.ts';
import { runAgent } from '../worker/agent-logic.ts';
import { defaultRegistry } from '../worker/task-types.ts';
import { createApp, type DefaultLimits } from './app.ts';
import { SEED_RESULT } from './openapi.ts';

type Json = Record<string, unknown>;
interface ErrorObject {
  instancePath: string;
  message?: string;
}
interface ValidateFunction {
  (data: unknown): boolean;
  errors?: ErrorObject[] | null;
}
interface Ajv {
  addSchema(schema: object, key: string): Ajv;
  compile(schema: object): ValidateFunction;
}

// The JSON Schema 2020-12 validator that @seriousme/openapi-schema-validator itself uses
// (ajv 8 with ajv-formats), resolved from that package: the top-level ajv is eslint's ajv 6.
const fromValidator = createRequire(createRequire(import.meta.url).resolve('@seriousme/openapi-schema-validator'));
const Ajv2020 = (fromValidator('ajv/dist/2020.js') as { default: new (opts: object) => Ajv }).default;
const addFormats = (fromValidator('ajv-formats') as { default: (ajv: Ajv) => void }).default;

const TOPIC = 'requests';
const BODY_LIMIT = 64 * 1024;

function setup(opts: { limits?: Partial<DefaultLimits>; metrics?: Metrics } = {}) {
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
  return { app, store, broker, keyFor, call };
}

const { app: probeApp } = setup();
let doc: Json;
let ajv: Ajv;

beforeAll(async () => {
  const res = await probeApp.request('http://localhost/openapi.json');
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  doc = (await res.json()) as Json;
  ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  ajv.addSchema(doc, 'https://spec.local/openapi.json');
});

/** Follows a `$ref` inside the document. */
function deref<T = Json>(v: unknown): T {
  let node = v as Json;
  for (let i = 0; i < 10 && typeof node.$ref === 'string'; i++) {
    const ref = node.$ref;
    expect(ref.startsWith('#/')).toBe(true);
    node = ref
      .slice(2)
      .split('/')
      .reduce<Json>((n, k) => n[k.replace(/~1/g, '/').replace(/~0/g, '~')] as Json, doc);
    expect(node, ref).toBeDefined();
  }
  return node as T;
}

/** A validator for a schema of the document (a `#/…` reference resolves inside it). */
function validatorOf(schema: Json): ValidateFunction {
  const s = typeof schema.$ref === 'string' && schema.$ref.startsWith('#/') ? { $ref: `https://spec.local/openapi.json${schema.$ref}` } : schema;
  return ajv.compile(s);
}

function expectValid(schema: Json, value: unknown, what: string): void {
  const validate = validatorOf(schema);
  const ok = validate(value);
  expect(ok, `${what}: ${JSON.stringify(validate.errors?.slice(0, 5))}\n${JSON.stringify(value).slice(0, 1500)}`).toBe(true);
}

const specPath = (path: string) => path.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

/** The declared response of a route for a status. */
function declared(method: string, path: string, status: number): Json {
  const item = (doc.paths as Record<string, Json | undefined>)[specPath(path)];
  expect(item, `${path} in the document`).toBeDefined();
  const op = item?.[method.toLowerCase()] as { responses: Record<string, unknown> } | undefined;
  expect(op, `${method} ${path} in the document`).toBeDefined();
  const response = op?.responses[String(status)];
  expect(response, `${method} ${path} declares ${status}`).toBeDefined();
  return deref(response);
}

/** Checks a real answer against what the document declares for its route and status: body and required headers. */
async function conforms(res: Response, method: string, path: string, status: number, response = declared(method, path, status)): Promise<Json> {
  expect(res.status, `${method} ${path}`).toBe(status);
  for (const [name, h] of Object.entries((response.headers ?? {}) as Record<string, unknown>)) {
    if (deref<{ required?: boolean }>(h).required) expect(res.headers.get(name), `${method} ${path} ${status}: header ${name}`).not.toBeNull();
  }
  const content = response.content as Record<string, { schema: Json }>;
  const type = (res.headers.get('content-type') ?? '').split(';')[0] ?? '';
  expect(Object.keys(content), `${method} ${path} ${status}: content type`).toContain(type);
  const body = (await res.json()) as Json;
  expectValid(content[type]?.schema ?? {}, body, `${method} ${path} ${status}`);
  return body;
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
    const { app: withMetrics } = setup({ metrics: new Metrics({ defaultMetrics: false }) });
    const metricsDoc = (await (await withMetrics.request('http://localhost/openapi.json')).json()) as Json;
    for (const [app, spec] of [
      [probeApp, doc],
      [withMetrics, metricsDoc],
    ] as const) {
      const routes = new Set(app.routes.filter((r) => r.method !== 'ALL').map((r) => `${r.method} ${specPath(r.path)}`));
      const documented = new Set(
        Object.entries(spec.paths as Record<string, Json>).flatMap(([path, item]) => METHODS.filter((m) => item[m]).map((m) => `${m.toUpperCase()} ${path}`)),
      );
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
    expect(paramsBut('get', '/tasks').sort()).toEqual(['query:cursor', 'query:limit', 'query:status', 'query:type', 'query:user_id']);
    expect(paramsBut('get', '/tasks/{id}')).toEqual(['path:id', 'query:wait', 'query:history']);
    expect(paramsBut('delete', '/tasks/{id}')).toEqual(['path:id', 'query:reason']);
    expect(paramsBut('get', '/tasks/{id}/events')).toEqual(['path:id', 'header:Last-Event-ID', 'query:last_event_id']);
    expect(paramsBut('get', '/admin/keys')).toEqual(['query:tenant']);
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
    const { call, keyFor, store } = setup();
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
    const components = doc.components as { responses: Record<string, Json> };
    await conforms(await call(key, 'PATCH', '/tasks'), 'PATCH', '/tasks', 405, components.responses.MethodNotAllowed);
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
    const { call, keyFor, store } = setup();
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
    const { call, keyFor, store, app } = setup();
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
    const { call, keyFor } = setup();
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

describe('GET /docs', () => {
  it('serves Swagger UI from swagger-ui-dist, without a key, pointed at /openapi.json', async () => {
    const { app } = setup();
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
    const { app } = setup();
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
