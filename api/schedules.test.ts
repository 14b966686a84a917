/**
 * The schedule routes on the in-process stores: create (and every 400 naming its field),
 * list, get with next runs and the last task, pause, resume, delete, scopes, another tenant's
 * schedule as a 404, the 405s, and the answers against the OpenAPI document.
 */
import { describe, expect, it } from 'vitest';
import { newApiKey } from '../common/api-keys.ts';
import { MemoryBroker } from '../common/broker/memory.ts';
import { silentLogger } from '../common/logger.ts';
import { MemoryScheduleStore } from '../common/schedules/memory.ts';
import { Scheduler } from '../common/schedules/scheduler.ts';
import type { ScheduleDetailView, ScheduleListView, ScheduleView } from '../common/schedules/views.ts';
import { MemoryTaskStore } from '../common/store/memory.ts';
import type { Scope } from '../common/store/port.ts';
import { defaultRegistry } from '../worker/task-types.ts';
import { createApp } from './app.ts';
import type { ErrorBody } from './errors.ts';
import { loadSpec } from '../test/support/openapi.ts';

type Json = Record<string, unknown>;

const BODY_LIMIT = 16 * 1024;

function setup() {
  const store = new MemoryTaskStore();
  const broker = new MemoryBroker();
  const schedules = new MemoryScheduleStore();
  const registry = defaultRegistry();
  const app = createApp({
    store,
    broker,
    registry,
    schedules,
    logger: silentLogger,
    options: { requestTopic: 'req', bodyLimit: BODY_LIMIT, requestTimeoutMs: 500, relayAfterMs: 5000, maxAttempts: 3, auth: { mode: 'keys', cacheMs: 0 } },
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
      ...(body !== undefined ? { body: typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body) } : {}),
    });
  const scheduler = (now: () => number) =>
    new Scheduler({
      schedules,
      now,
      logger: silentLogger,
      defaultMaxAttempts: 3,
      submit: {
        store,
        broker,
        registry,
        logger: silentLogger,
        requestTopic: 'req',
        publishTimeoutMs: 500,
        relayAfterMs: 5000,
        idempotencyTtlSeconds: 86_400,
        limits: { submitsPerSecond: 0, quotaUnits: 0, quotaWindowSeconds: 86_400 },
      },
    });
  return { app, store, schedules, keyFor, call, scheduler };
}

const weekdays = { name: 'morning digest', cron: '0 9 * * 1-5', timezone: 'europe/berlin', task: { type: 'agent', input: { content: '机械键盘降价了' } } };

async function issuesOf(res: Response): Promise<{ code: string; message: string; paths: string[] }> {
  const body = (await res.json()) as ErrorBody;
  return { code: body.error.code, message: body.error.message, paths: (body.error.issues ?? []).map((i) => i.path) };
}

describe('POST /schedules', () => {
  it('creates a schedule: 201, its URL, the canonical time zone and the next runs in it', async () => {
    const { call, keyFor } = setup();
    const key = await keyFor('acme');
    const before = Date.now();
    const res = await call(key, 'POST', '/schedules', { ...weekdays, task: { ...weekdays.task, user_id: 'u1', priority: 'high', max_attempts: 5 } });
    expect(res.status).toBe(201);
    const s = (await res.json()) as ScheduleDetailView;
    expect(res.headers.get('location')).toBe(`http://localhost/schedules/${s.schedule_id}`);
    expect(s).toMatchObject({
      tenant: 'acme',
      name: 'morning digest',
      cron: '0 9 * * 1-5',
      timezone: 'Europe/Berlin',
      catch_up: 'latest',
      paused: false,
      task: { type: 'agent', input: { content: '机械键盘降价了' }, user_id: 'u1', priority: 'high', max_attempts: 5 },
      fired: 0,
      skipped: 0,
      last_fired_at: null,
      last_task_id: null,
      last_error: null,
      last_task: null,
    });
    expect(s.schedule_id).toMatch(/^sch_[0-9a-f]{24}$/);
    expect(s.next_runs).toHaveLength(5);
    expect(s.next_runs[0]).toBe(s.next_run_at);
    for (const [i, t] of s.next_runs.entries()) {
      const d = new Date(t);
      expect(d.getTime()).toBeGreaterThan(before);
      if (i > 0) expect(d.getTime()).toBeGreaterThan(new Date(s.next_runs[i - 1] ?? 0).getTime());
      // 09:00 in Berlin on a weekday.
      expect(new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Berlin', hour: '2-digit', minute: '2-digit', weekday: 'short' }).format(d)).toMatch(
        /^(Mon|Tue|Wed|Thu|Fri) 09:00$/,
      );
    }
  });

  it('refuses what it cannot fire, with a 400 naming the field', async () => {
    const { call, keyFor } = setup();
    const key = await keyFor('acme');
    const cases: [unknown, string, RegExp][] = [
      [{ ...weekdays, cron: '61 * * * *' }, 'cron', /^cron: Invalid value for minute: 61/],
      [{ ...weekdays, cron: 'every day' }, 'cron', /^cron: invalid configuration format/],
      [{ ...weekdays, cron: '0 0 30 2 *' }, 'cron', /never fires/],
      [{ ...weekdays, cron: 5 }, 'cron', /cron: must be a string/],
      [{ ...weekdays, timezone: 'Mars/Olympus_Mons' }, 'timezone', /^timezone: unknown time zone "Mars\/Olympus_Mons"/],
      [{ ...weekdays, timezone: '../../etc' }, 'timezone', /^timezone: unknown time zone/],
      [{ ...weekdays, catch_up: 'sometimes' }, 'catch_up', /^catch_up:/],
      [{ ...weekdays, task: { type: 'nope', input: {} } }, 'task.type', /^task.type: unknown task type "nope"; known: agent/],
      [{ ...weekdays, task: { type: 'agent', input: { content: 5 } } }, 'task.input.content', /^task.input.content:/],
      [{ ...weekdays, task: { type: 'agent', input: { content: 'x', temperature: 1 } } }, 'task.input.temperature', /^task.input.temperature:/],
      [{ ...weekdays, task: { type: 'agent' } }, 'task.input', /^task.input: is required/],
      [{ ...weekdays, task: { ...weekdays.task, max_attempts: 0 } }, 'task.max_attempts', /^task.max_attempts:/],
      [{ ...weekdays, every: 'day' }, 'every', /^every:/],
      [{ cron: '* * * * *' }, 'task', /^task:/],
    ];
    for (const [body, path, message] of cases) {
      const res = await call(key, 'POST', '/schedules', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      const e = await issuesOf(res);
      expect(e.code).toBe('validation_failed');
      expect(e.paths, JSON.stringify(body)).toContain(path);
      expect(e.message).toMatch(message);
    }
    expect((await call(key, 'POST', '/schedules', '{"cron":')).status).toBe(400);
    expect((await call(key, 'POST', '/schedules', 'cron=x', { 'content-type': 'text/plain' })).status).toBe(415);
    // Strict input, as on POST /tasks: invalid UTF-8 and lone surrogates are a 400, another charset a 415.
    const json = JSON.stringify({ ...weekdays, task: { type: 'agent', input: { content: 'café' } } });
    const bytes = new TextEncoder().encode(json);
    const broken = new Uint8Array([...bytes.slice(0, bytes.indexOf(0xc3)), 0xff, ...bytes.slice(bytes.indexOf(0xc3) + 2)]);
    expect((await call(key, 'POST', '/schedules', broken)).status).toBe(400);
    expect((await call(key, 'POST', '/schedules', json, { 'content-type': 'application/json; charset=iso-8859-1' })).status).toBe(415);
    expect((await call(key, 'POST', '/schedules', json.replace('café', '\\ud800'))).status).toBe(400);
    const big = await call(key, 'POST', '/schedules', { ...weekdays, task: { type: 'agent', input: { content: 'x'.repeat(BODY_LIMIT) } } });
    expect(big.status).toBe(413);
    expect((await issuesOf(big)).code).toBe('payload_too_large');
    expect((await call(key, 'GET', '/schedules')).status).toBe(200);
    expect(((await (await call(key, 'GET', '/schedules')).json()) as ScheduleListView).schedules).toEqual([]);
    expect((await call(key, 'POST', '/schedules', json, { 'content-type': 'application/json; charset=UTF-8' })).status).toBe(201);
  });
});

describe('the other schedule routes', () => {
  it('list in pages, read, pause, resume and delete; another tenant’s schedule is a 404', async () => {
    const { call, keyFor } = setup();
    const key = await keyFor('acme');
    const other = await keyFor('globex');
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push(((await (await call(key, 'POST', '/schedules', { ...weekdays, name: `s${i}` })).json()) as ScheduleView).schedule_id);
    await call(other, 'POST', '/schedules', weekdays);

    const first = (await (await call(key, 'GET', '/schedules?limit=2')).json()) as ScheduleListView;
    expect(first.schedules).toHaveLength(2);
    expect(first.next_cursor).not.toBeNull();
    const second = (await (await call(key, 'GET', `/schedules?limit=2&cursor=${first.next_cursor}`)).json()) as ScheduleListView;
    expect(second.next_cursor).toBeNull();
    expect([...first.schedules, ...second.schedules].map((s) => s.schedule_id).sort()).toEqual([...ids].sort());
    expect((await call(key, 'GET', '/schedules?cursor=bm9wZQ')).status).toBe(400);
    expect((await call(key, 'GET', '/schedules?limit=500')).status).toBe(400);

    const id = ids[0] ?? '';
    const got = (await (await call(key, 'GET', `/schedules/${id}`)).json()) as ScheduleDetailView;
    expect(got).toMatchObject({ schedule_id: id, name: 's0', paused: false });
    expect(got.next_runs).toHaveLength(5);
    // Another tenant's, a missing one, a malformed id.
    for (const [method, path] of [
      ['GET', `/schedules/${id}`],
      ['POST', `/schedules/${id}/pause`],
      ['POST', `/schedules/${id}/resume`],
      ['DELETE', `/schedules/${id}`],
    ] as const) {
      expect((await call(other, method, path)).status, `${method} ${path}`).toBe(404);
    }
    expect((await call(key, 'GET', '/schedules/sch_000000000000000000000000')).status).toBe(404);
    expect((await issuesOf(await call(key, 'GET', '/schedules/nope'))).paths).toEqual(['id']);
    expect((await call(key, 'POST', '/schedules/SCH_000000000000000000000000/pause')).status).toBe(400);

    const paused = (await (await call(key, 'POST', `/schedules/${id}/pause`)).json()) as ScheduleView;
    expect(paused).toMatchObject({ paused: true, next_run_at: null });
    expect(((await (await call(key, 'GET', `/schedules/${id}`)).json()) as ScheduleDetailView).next_runs).toEqual([]);
    expect(((await (await call(key, 'POST', `/schedules/${id}/pause`)).json()) as ScheduleView).paused).toBe(true);
    const resumed = (await (await call(key, 'POST', `/schedules/${id}/resume`)).json()) as ScheduleView;
    expect(resumed.paused).toBe(false);
    expect(new Date(resumed.next_run_at ?? 0).getTime()).toBeGreaterThan(Date.now());

    const deleted = await call(key, 'DELETE', `/schedules/${id}`);
    expect(await deleted.json()).toEqual({ schedule_id: id, deleted: true });
    expect((await call(key, 'GET', `/schedules/${id}`)).status).toBe(404);
    expect((await call(key, 'DELETE', `/schedules/${id}`)).status).toBe(404);
    expect(((await (await call(other, 'GET', '/schedules')).json()) as ScheduleListView).schedules).toHaveLength(1);
  });

  it('needs tasks:write to change and tasks:read to read; 405 names the methods', async () => {
    const { call, keyFor } = setup();
    const writer = await keyFor('acme', ['tasks:write']);
    const reader = await keyFor('acme', ['tasks:read']);
    expect((await call(null, 'GET', '/schedules')).status).toBe(401);
    expect((await call(reader, 'POST', '/schedules', weekdays)).status).toBe(403);
    const created = await call(writer, 'POST', '/schedules', weekdays);
    expect(created.status).toBe(201);
    const id = ((await created.json()) as ScheduleView).schedule_id;
    expect((await call(writer, 'GET', '/schedules')).status).toBe(403);
    expect((await call(writer, 'GET', `/schedules/${id}`)).status).toBe(403);
    expect((await call(reader, 'GET', `/schedules/${id}`)).status).toBe(200);
    for (const path of [`/schedules/${id}/pause`, `/schedules/${id}/resume`]) expect((await call(reader, 'POST', path)).status).toBe(403);
    expect((await call(reader, 'DELETE', `/schedules/${id}`)).status).toBe(403);
    const methods: [string, string, string][] = [
      ['PATCH', '/schedules', 'GET, POST'],
      ['PUT', `/schedules/${id}`, 'GET, DELETE'],
      ['GET', `/schedules/${id}/pause`, 'POST'],
      ['DELETE', `/schedules/${id}/resume`, 'POST'],
    ];
    for (const [method, path, allow] of methods) {
      const res = await call(writer, method, path);
      expect(res.status, `${method} ${path}`).toBe(405);
      expect(res.headers.get('allow')).toBe(allow);
    }
  });

  it('shows the last firing’s task', async () => {
    const { call, keyFor, schedules, scheduler } = setup();
    const key = await keyFor('acme');
    const s = (await (
      await call(key, 'POST', '/schedules', { cron: '*/5 * * * *', task: { type: 'agent', input: { content: 'hi' } } })
    ).json()) as ScheduleView;
    const slot = new Date(s.next_run_at ?? '').getTime();
    expect(await scheduler(() => slot + 100).tick()).toBe(1);
    const got = (await (await call(key, 'GET', `/schedules/${s.schedule_id}`)).json()) as ScheduleDetailView;
    expect(got).toMatchObject({
      fired: 1,
      last_fired_at: new Date(slot).toISOString(),
      last_task: { task_id: got.last_task_id, tenant: 'acme', type: 'agent' },
    });
    expect(got.next_run_at).toBe(new Date(slot + 5 * 60_000).toISOString());
    expect((await schedules.get(s.schedule_id))?.lastTaskId).toBe(got.last_task_id);
  });
});

describe('the schedule routes in the OpenAPI document', () => {
  it('answers and examples match the schemas the document declares', async () => {
    const { app, call, keyFor, scheduler } = setup();
    const spec = await loadSpec(app);
    const conforms = async (res: Response, method: string, path: string) => {
      const media = (spec.declared(method, path, res.status).content as Record<string, { schema: Json; examples?: Record<string, { value: unknown }> }>)[
        'application/json'
      ];
      expect(media, `${method} ${path} declares a JSON body for ${res.status}`).toBeDefined();
      spec.expectValid(media?.schema ?? {}, await res.json(), `${method} ${path} ${res.status}`);
      for (const [name, ex] of Object.entries(media?.examples ?? {})) spec.expectValid(media?.schema ?? {}, ex.value, `${method} ${path} example ${name}`);
    };
    const paths = spec.paths as Record<string, Record<string, { requestBody?: Json }>>;
    const key = await keyFor('acme');
    const body = (paths['/schedules']?.post?.requestBody?.content as Record<string, { schema: Json; examples: Record<string, { value: unknown }> }>)[
      'application/json'
    ];
    for (const ex of Object.values(body?.examples ?? {})) spec.expectValid(body?.schema ?? {}, ex.value, 'request example');
    spec.expectValid(body?.schema ?? {}, weekdays, 'request');

    const created = await call(key, 'POST', '/schedules', { cron: '* * * * *', task: { type: 'agent', input: { content: 'hi' } } });
    const s = (await created.clone().json()) as ScheduleView;
    await conforms(created, 'post', '/schedules');
    await scheduler(() => new Date(s.next_run_at ?? '').getTime() + 100).tick();
    await conforms(await call(key, 'GET', `/schedules/${s.schedule_id}`), 'get', '/schedules/{id}');
    await conforms(await call(key, 'GET', '/schedules'), 'get', '/schedules');
    await conforms(await call(key, 'POST', `/schedules/${s.schedule_id}/pause`), 'post', '/schedules/{id}/pause');
    await conforms(await call(key, 'POST', `/schedules/${s.schedule_id}/resume`), 'post', '/schedules/{id}/resume');
    await conforms(await call(key, 'DELETE', `/schedules/${s.schedule_id}`), 'delete', '/schedules/{id}');
    await conforms(await call(key, 'GET', `/schedules/${s.schedule_id}`), 'get', '/schedules/{id}');
    await conforms(await call(key, 'POST', '/schedules', { cron: 'x', task: { type: 'agent', input: { content: 'hi' } } }), 'post', '/schedules');
  });
});
