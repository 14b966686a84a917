import { describe, expect, it } from 'vitest';
import { MemoryBroker } from '../common/broker/memory.ts';
import type { Broker } from '../common/broker/port.ts';
import { UnavailableError } from '../common/errors.ts';
import { silentLogger } from '../common/logger.ts';
import { MemoryTaskStore } from '../common/store/memory.ts';
import type { TaskStore } from '../common/store/port.ts';
import { defaultRegistry } from '../worker/task-types.ts';
import { waitFor } from '../test/support/wait.ts';
import { createApp } from './app.ts';

const TOPIC = 'requests';

function setup(over: { store?: TaskStore; broker?: Broker; bodyLimit?: number } = {}) {
  const store = over.store ?? new MemoryTaskStore();
  const broker = over.broker ?? new MemoryBroker();
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
    options: { requestTopic: TOPIC, bodyLimit: over.bodyLimit ?? 1024 * 1024, requestTimeoutMs: 200, relayAfterMs: 5000, maxAttempts: 3 },
  });
  const post = (body: string, headers: Record<string, string> = { 'content-type': 'application/json' }) =>
    app.request('http://localhost/tasks', { method: 'POST', body, headers });
  return { app, store, broker, post, published };
}

/** A memory store that remembers the id of the task the API created, and a broker to break. */
function spiedStore() {
  const store = new MemoryTaskStore();
  let id = '';
  const create = store.create.bind(store);
  store.create = (t, due, idem) => {
    id = t.id;
    return create(t, due, idem);
  };
  return { store, broker: new MemoryBroker(), created: () => id };
}

interface ErrorJson {
  error: { code: string; message: string; issues?: { path: string; message: string }[] };
}

describe('POST /tasks', () => {
  it("accepts the seed's body, stores a queued agent task and publishes it keyed by task id", async () => {
    const { post, store, published } = setup();
    const res = await post(JSON.stringify({ user_id: 'user123', content: '机械键盘降价了' }));
    expect(res.status).toBe(202);
    const body = (await res.json()) as { task_id: string; status: string; status_url: string };
    expect(body.status).toBe('queued');
    expect(body.status_url).toBe(`http://localhost/tasks/${body.task_id}`);
    expect(res.headers.get('location')).toBe(body.status_url);
    const rec = await store.get(body.task_id);
    expect(rec).toMatchObject({ type: 'agent', userId: 'user123', input: { content: '机械键盘降价了' }, priority: 'normal' });
    expect(published).toEqual([body.task_id]);
    // Published, so the outbox entry is disarmed: no relay would publish it again.
    expect(await store.outboxDue(10, 0)).toEqual([]);
  });

  it('accepts the general form with priority', async () => {
    const { post, store } = setup();
    const res = await post(JSON.stringify({ type: 'agent', input: { content: 'hello', simulate_ms: 5 }, priority: 'high' }));
    expect(res.status).toBe(202);
    const { task_id } = (await res.json()) as { task_id: string };
    expect(await store.get(task_id)).toMatchObject({ priority: 'high', userId: null, input: { content: 'hello', simulate_ms: 5 } });
  });

  const bad: [string, string, number, string][] = [
    ['broken JSON', '{"user_id":', 400, ''],
    ['an empty body', '', 400, ''],
    ['an array', '[1,2]', 400, ''],
    ['a missing content', '{"user_id":"u"}', 400, 'content'],
    ['a content of the wrong type', '{"user_id":"u","content":5}', 400, 'content'],
    ['an empty content', '{"user_id":"u","content":""}', 400, 'content'],
    ['an unknown field', '{"user_id":"u","content":"x","admin":true}', 400, 'admin'],
    ['an unknown type', '{"type":"nope","input":{}}', 400, 'type'],
    ['a bad input field', '{"type":"agent","input":{"content":"x","simulate_ms":-1}}', 400, 'input.simulate_ms'],
    ['a bad priority', '{"type":"agent","input":{"content":"x"},"priority":"urgent"}', 400, 'priority'],
    ['a missing input', '{"type":"agent"}', 400, 'input'],
    ['deep nesting', '['.repeat(100_000) + ']'.repeat(100_000), 400, ''],
  ];
  for (const [what, body, status, field] of bad) {
    it(`rejects ${what} with ${status} naming the field, and stores nothing`, async () => {
      const { post, store, published } = setup();
      const res = await post(body);
      expect(res.status).toBe(status);
      const json = (await res.json()) as ErrorJson;
      expect(json.error.code).toBe('validation_failed');
      if (field) expect(json.error.issues?.map((i) => i.path)).toContain(field);
      expect(json.error.message).toContain(field);
      expect(published).toEqual([]);
      expect(await store.outboxDue(10, 0)).toEqual([]);
    });
  }

  it('rejects a body over the limit with 413', async () => {
    const { post } = setup({ bodyLimit: 2048 });
    const res = await post(JSON.stringify({ user_id: 'u', content: 'x'.repeat(5000) }));
    expect(res.status).toBe(413);
    expect(((await res.json()) as ErrorJson).error.code).toBe('payload_too_large');
  });

  it('rejects a non-JSON content type with 415', async () => {
    const { post } = setup();
    const res = await post('user_id=u&content=x', { 'content-type': 'application/x-www-form-urlencoded' });
    expect(res.status).toBe(415);
  });

  it('answers 503 with Retry-After when the store is down, and publishes nothing', async () => {
    const store = new MemoryTaskStore();
    store.create = () => Promise.reject(new UnavailableError('redis', 'redis is not connected'));
    const { post, published } = setup({ store });
    const res = await post(JSON.stringify({ user_id: 'u', content: 'x' }));
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('5');
    expect(((await res.json()) as ErrorJson).error.code).toBe('redis_unavailable');
    expect(published).toEqual([]);
  });

  it('answers 503 when the broker does not take the message, and marks the task failed so it never runs', async () => {
    const { store, broker, created } = spiedStore();
    broker.publish = () => new Promise(() => undefined); // hangs: the request timeout must cut it
    const { post } = setup({ store, broker });
    const res = await post(JSON.stringify({ user_id: 'u', content: 'x' }));
    expect(res.status).toBe(503);
    expect(((await res.json()) as ErrorJson).error.code).toBe('broker_unavailable');
    const rec = await store.get(created());
    expect(rec).toMatchObject({ status: 'failed', error: { code: 'broker_unavailable' } });
    expect((await store.claim(created(), 'w', 1000)).outcome).toBe('terminal');
  });

  it('when Redis fails too, keeps trying to mark the unpublished task failed after the 503', async () => {
    const { store, broker, created } = spiedStore();
    const failQueued = store.failQueued.bind(store);
    let calls = 0;
    store.failQueued = (...args) => (++calls <= 4 ? Promise.reject(new UnavailableError('redis', 'down')) : failQueued(...args));
    broker.publish = () => Promise.reject(new Error('broker down'));
    const { post } = setup({ store, broker });
    const res = await post(JSON.stringify({ user_id: 'u', content: 'x' }));
    expect(res.status).toBe(503);
    expect((await store.get(created()))?.status).toBe('queued');
    await waitFor('the task marked failed in the background', async () => (await store.get(created()))?.status === 'failed', { timeoutMs: 5000 });
    expect(calls).toBe(5);
  });
});

describe('Idempotency-Key', () => {
  const json = (key: string) => ({ 'content-type': 'application/json', 'idempotency-key': key });

  it('returns the same task for a repeated request, and publishes once', async () => {
    const { post, published } = setup();
    const a = await post(JSON.stringify({ type: 'agent', input: { content: 'once', simulate_ms: 1 }, user_id: 'u' }), json('k-1'));
    // Same request with its keys in another order.
    const b = await post(JSON.stringify({ user_id: 'u', input: { simulate_ms: 1, content: 'once' }, type: 'agent' }), json('k-1'));
    expect(a.status).toBe(202);
    expect(b.status).toBe(202);
    const ida = ((await a.json()) as { task_id: string }).task_id;
    const bodyB = (await b.json()) as { task_id: string; status: string };
    expect(bodyB.task_id).toBe(ida);
    expect(b.headers.get('idempotent-replayed')).toBe('true');
    expect(published).toEqual([ida]);
  });

  it('answers 422 for a different body under the same key, and creates nothing', async () => {
    const { post, published } = setup();
    expect((await post(JSON.stringify({ user_id: 'u', content: 'first' }), json('k-2'))).status).toBe(202);
    const res = await post(JSON.stringify({ user_id: 'u', content: 'second' }), json('k-2'));
    expect(res.status).toBe(422);
    expect(((await res.json()) as ErrorJson).error.code).toBe('idempotency_key_reused');
    expect(published).toHaveLength(1);
  });

  it('rejects a malformed key with 400 naming the header', async () => {
    const { post } = setup();
    const res = await post(JSON.stringify({ user_id: 'u', content: 'x' }), json('x'.repeat(300)));
    expect(res.status).toBe(400);
    expect(((await res.json()) as ErrorJson).error.message).toContain('Idempotency-Key');
  });
});

describe('GET /tasks/:id', () => {
  it('answers the task view', async () => {
    const { post, app } = setup();
    const { task_id } = (await (await post(JSON.stringify({ user_id: 'u', content: 'x' }))).json()) as { task_id: string };
    const res = await app.request(`http://localhost/tasks/${task_id}`);
    expect(res.status).toBe(200);
    const view = (await res.json()) as Record<string, unknown>;
    expect(Object.keys(view)).toEqual(
      expect.arrayContaining(['task_id', 'status', 'type', 'progress', 'result', 'error', 'attempts', 'created_at', 'started_at', 'finished_at']),
    );
    expect(view).toMatchObject({ task_id, status: 'queued', type: 'agent', progress: 0, attempts: 0, started_at: null });
  });

  it('answers 404 for an unknown id and 400 for a malformed one, without touching the store', async () => {
    const store = new MemoryTaskStore();
    const seen: string[] = [];
    const get = store.get.bind(store);
    store.get = (id) => {
      seen.push(id);
      return get(id);
    };
    const { app } = setup({ store });
    expect((await app.request('http://localhost/tasks/3f1c1d2e-8b7a-4c1e-9f3a-2b1c0d9e8f7a')).status).toBe(404);
    for (const id of ['abc', '..%2F..%2Fetc', '*', "3f1c1d2e-8b7a-4c1e-9f3a-2b1c0d9e8f7'"]) {
      const res = await app.request(`http://localhost/tasks/${id}`);
      expect(res.status).toBe(400);
    }
    expect(seen).toEqual(['3f1c1d2e-8b7a-4c1e-9f3a-2b1c0d9e8f7a']);
  });

  it('answers 405 for a wrong method and 404 JSON for an unknown route', async () => {
    const { app } = setup();
    const put = await app.request('http://localhost/tasks', { method: 'PUT' });
    expect(put.status).toBe(405);
    expect(put.headers.get('allow')).toBe('GET, POST');
    const none = await app.request('http://localhost/nope');
    expect(none.status).toBe(404);
    expect(((await none.json()) as ErrorJson).error.code).toBe('not_found');
  });
});

describe('health', () => {
  it('answers 404 for /metrics when the app has no metrics (not a 405 that names GET)', async () => {
    const { app } = setup();
    const res = await app.request('http://localhost/metrics');
    expect(res.status).toBe(404);
    expect(res.headers.get('allow')).toBeNull();
  });

  it('/healthz is ok; /readyz is 503 when a dependency is down', async () => {
    const store = new MemoryTaskStore();
    const { app } = setup({ store });
    expect((await app.request('http://localhost/healthz')).status).toBe(200);
    expect((await app.request('http://localhost/readyz')).status).toBe(200);
    store.ping = () => Promise.reject(new UnavailableError('redis', 'down'));
    const res = await app.request('http://localhost/readyz');
    expect(res.status).toBe(503);
    expect(await res.json()).toMatchObject({ status: 'unavailable', store: 'down', broker: 'ok' });
  });
});
