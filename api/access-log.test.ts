/** The access log and request ids, through the app with the in-process store and broker. */
import { describe, expect, it } from 'vitest';
import { newApiKey } from '../common/api-keys.ts';
import { MemoryBroker } from '../common/broker/memory.ts';
import { createLogger, type LogLevel } from '../common/logger.ts';
import { MemoryTaskStore } from '../common/store/memory.ts';
import { defaultRegistry } from '../worker/task-types.ts';
import { requestIdOf } from './access-log.ts';
import { createApp } from './app.ts';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function setup(opts: { auth?: 'keys' | 'off'; level?: LogLevel; broker?: MemoryBroker } = {}) {
  const store = new MemoryTaskStore();
  const lines: string[] = [];
  const logger = createLogger({ level: opts.level ?? 'debug', format: 'json', write: (l) => lines.push(l) }, { role: 'api' });
  const stopping = new AbortController();
  const app = createApp({
    store,
    broker: opts.broker ?? new MemoryBroker(),
    registry: defaultRegistry(),
    logger,
    shutdownSignal: stopping.signal,
    options: {
      requestTopic: 'requests',
      bodyLimit: 1024 * 1024,
      requestTimeoutMs: 300,
      relayAfterMs: 5000,
      maxAttempts: 3,
      auth: { mode: opts.auth ?? 'off' },
    },
  });
  const records = () => lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  const access = () => records().filter((r) => r.msg === 'request');
  const keyFor = async (tenant: string) => {
    const { secret, hash, key } = newApiKey(tenant, ['tasks:write', 'tasks:read'], null);
    await store.createKey(key, hash);
    return secret;
  };
  return { app, store, lines, records, access, keyFor, stopping };
}

describe('access log', () => {
  it('writes one info line per request with method, route pattern, status, duration and a generated request id', async () => {
    const s = setup();
    const res = await s.app.request('http://localhost/tasks', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user_id: 'u1', content: 'hello' }),
    });
    expect(res.status).toBe(202);
    const id = res.headers.get('x-request-id') ?? '';
    expect(id).toMatch(UUID_RE);
    const { task_id } = (await res.json()) as { task_id: string };
    const got = await s.app.request(`http://localhost/tasks/${task_id}?history=true`);
    expect(got.status).toBe(200);
    const lines = s.access();
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({
      level: 'info',
      role: 'api',
      method: 'POST',
      route: '/tasks',
      path: '/tasks',
      status: 202,
      request_id: id,
      tenant: 'default',
    });
    expect(lines[1]).toMatchObject({ method: 'GET', route: '/tasks/:id', path: `/tasks/${task_id}`, status: 200 });
    expect(lines[1]?.request_id).not.toBe(id);
    for (const l of lines) {
      expect(typeof l.duration_ms).toBe('number');
      expect(l.time).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    }
    // Neither the query string nor the body is in the line.
    expect(s.lines.filter((l) => l.includes('"msg":"request"')).join('\n')).not.toMatch(/history=|hello/);
  });

  it('echoes an acceptable X-Request-Id and replaces a bad one', async () => {
    const s = setup();
    const mine = 'req-42_abc.DEF:~!';
    const ok = await s.app.request('http://localhost/healthz', { headers: { 'X-Request-Id': mine } });
    expect(ok.headers.get('x-request-id')).toBe(mine);
    for (const bad of ['', 'has space', 'x'.repeat(129), 'ünïcode', 'tab\there']) {
      const res = await s.app.request('http://localhost/healthz', { headers: { 'X-Request-Id': bad } });
      expect(res.headers.get('x-request-id'), JSON.stringify(bad)).toMatch(UUID_RE);
    }
    const long = 'y'.repeat(128);
    expect((await s.app.request('http://localhost/healthz', { headers: { 'X-Request-Id': long } })).headers.get('x-request-id')).toBe(long);
    expect(s.access()[0]).toMatchObject({ route: '/healthz', status: 200, request_id: mine });
    expect(s.access()).toHaveLength(7);
    expect(requestIdOf(undefined)).toMatch(UUID_RE);
  });

  it('logs a 401 without the Authorization header, and the tenant once a key is verified', async () => {
    const s = setup({ auth: 'keys' });
    const secret = await s.keyFor('acme');
    const refused = await s.app.request('http://localhost/tasks?limit=5', { headers: { authorization: 'Bearer atq_not-a-real-key', 'x-request-id': 'r1' } });
    expect(refused.status).toBe(401);
    expect(refused.headers.get('x-request-id')).toBe('r1');
    const missing = await s.app.request('http://localhost/quota');
    expect(missing.status).toBe(401);
    expect(missing.headers.get('x-request-id')).toMatch(UUID_RE);
    const fine = await s.app.request('http://localhost/tasks', { headers: { authorization: `Bearer ${secret}` } });
    expect(fine.status).toBe(200);
    const [a, b, c] = s.access();
    expect(a).toMatchObject({ method: 'GET', route: '/tasks', status: 401, request_id: 'r1' });
    expect(a).not.toHaveProperty('tenant');
    expect(b).toMatchObject({ route: '/quota', status: 401 });
    expect(c).toMatchObject({ route: '/tasks', status: 200, tenant: 'acme' });
    const all = s.lines.join('\n');
    expect(all).not.toContain(secret);
    expect(all).not.toContain('atq_not-a-real-key');
    expect(all.toLowerCase()).not.toContain('authorization');
  });

  it('puts the request id on error answers: 404 with no route, 400, 405', async () => {
    const s = setup();
    const cases: [string, RequestInit, number][] = [
      ['/nowhere', {}, 404],
      ['/tasks/not-a-uuid', {}, 400],
      ['/tasks', { method: 'PATCH' }, 405],
      ['/tasks', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'x' }, 415],
    ];
    for (const [path, init, status] of cases) {
      const res = await s.app.request(`http://localhost${path}`, {
        ...init,
        headers: { ...(init.headers as Record<string, string>), 'x-request-id': `id-${status}` },
      });
      expect(res.status, path).toBe(status);
      expect(res.headers.get('x-request-id'), path).toBe(`id-${status}`);
    }
    expect(s.access().map((r) => [r.route, r.status, r.request_id])).toEqual([
      ['/nowhere', 404, 'id-404'],
      ['/tasks/:id', 400, 'id-400'],
      ['/tasks', 405, 'id-405'],
      ['/tasks', 415, 'id-415'],
    ]);
  });

  it('puts the request id on the lines a request writes besides its access line: accepted, cancelled, a 503', async () => {
    const broker = new MemoryBroker();
    const publish = broker.publish.bind(broker);
    let down = false;
    broker.publish = (topic, m) => (down ? Promise.reject(new Error('broker down')) : publish(topic, m));
    const { app, records } = setup({ broker });
    const post = (id: string) =>
      app.request('http://localhost/tasks', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-request-id': id },
        body: JSON.stringify({ user_id: 'u1', content: 'hi' }),
      });
    const accepted = (await (await post('req-accepted')).json()) as { task_id: string };
    await app.request(`http://localhost/tasks/${accepted.task_id}`, { method: 'DELETE', headers: { 'x-request-id': 'req-cancel' } });
    down = true;
    expect((await post('req-down')).status).toBe(503);
    const byMsg = (msg: string) => records().find((r) => r.msg === msg);
    expect(byMsg('task accepted')).toMatchObject({ request_id: 'req-accepted', task_id: accepted.task_id });
    expect(byMsg('task cancelled')).toMatchObject({ request_id: 'req-cancel', task_id: accepted.task_id });
    expect(byMsg('dependency unavailable')).toMatchObject({ level: 'error', request_id: 'req-down', method: 'POST', path: '/tasks' });
  });

  it('logs an event stream when it starts, with its request id on the 200', async () => {
    const s = setup();
    const created = await s.app.request('http://localhost/tasks', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user_id: 'u1', content: 'stays queued: no worker' }),
    });
    const { task_id } = (await created.json()) as { task_id: string };
    const res = await s.app.request(`http://localhost/tasks/${task_id}/events`, { headers: { 'x-request-id': 'sse-1' } });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toBe('sse-1');
    // The stream is still open (the task is queued), and its line is already there.
    expect(s.access().at(-1)).toMatchObject({ route: '/tasks/:id/events', status: 200, request_id: 'sse-1' });
    s.stopping.abort();
    await res.body?.cancel();
    expect(s.access()).toHaveLength(2);
  });

  it('writes nothing at warn, but still answers with a request id', async () => {
    const s = setup({ level: 'warn' });
    const res = await s.app.request('http://localhost/healthz');
    expect(res.headers.get('x-request-id')).toMatch(UUID_RE);
    expect(s.lines).toEqual([]);
  });
});
