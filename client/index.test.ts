import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  TaskApiError,
  TaskAuthError,
  TaskClient,
  TaskRateLimitError,
  TaskStreamError,
  TaskWaitTimeoutError,
  agentTools,
  type TaskEvent,
  type TaskView,
  type TenantQuota,
} from './index.ts';

/** A path prefix, to check that the client keeps it. */
const BASE = 'http://api.test/queue';
const ID = '77d3a865-702f-41af-b088-59422d14e60b';
const AT = '2026-11-22T02:14:38.611Z';
const enc = new TextEncoder();

afterEach(() => {
  vi.useRealTimers();
});

function view(over: Partial<TaskView> = {}): TaskView {
  return {
    task_id: ID,
    tenant: 'default',
    status: 'running',
    type: 'agent',
    user_id: 'user123',
    priority: 'normal',
    progress: 0,
    message: null,
    output: null,
    result: null,
    error: null,
    attempts: 1,
    max_attempts: 3,
    downgraded: false,
    created_at: AT,
    started_at: AT,
    finished_at: null,
    updated_at: AT,
    retry_at: null,
    run_at: null,
    workflow_id: null,
    step: null,
    reruns: 0,
    ...over,
  };
}

const DONE = view({ status: 'done', progress: 100, result: { summary: 'ok' }, finished_at: AT });

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });

const apiError = (status: number, code: string, headers: Record<string, string> = {}) => json(status, { error: { code, message: `${code} (test)` } }, headers);

/** A fetch that records each request and answers it with `route`. */
function fakeApi(route: (req: Request, n: number) => Response | Promise<Response>) {
  const calls: Request[] = [];
  const fetch: typeof globalThis.fetch = async (input, init) => {
    const req = new Request(input, init);
    calls.push(req);
    return route(req, calls.length);
  };
  return { fetch, calls };
}

const path = (req: Request) => new URL(req.url).pathname;
const query = (req: Request) => Object.fromEntries(new URL(req.url).searchParams);

/** Text to send, `{ close: true }` for a clean end, or an Error for a broken connection. */
type Step = string | { close: true } | Error;

/** An event-stream answer played step by step as the client reads; after the last step it stays open, silent. */
function sse(steps: Step[]) {
  const state = { cancelled: false };
  const body = new ReadableStream<Uint8Array>({
    async pull(ctl) {
      const step = steps.shift();
      if (step === undefined) return new Promise<void>(() => undefined);
      if (typeof step === 'string') ctl.enqueue(enc.encode(step));
      else if ('close' in step) ctl.close();
      else {
        // Let the client take what came before, as a socket that breaks later would.
        await new Promise((r) => setTimeout(r, 5));
        ctl.error(step);
      }
    },
    cancel() {
      state.cancelled = true;
    },
  });
  return { response: new Response(body, { headers: { 'content-type': 'text/event-stream' } }), state };
}

const frame = (e: TaskEvent) => `id: ${e.id}\nevent: ${e.event}\ndata: ${JSON.stringify(e.data)}\n\n`;

const EVENTS: TaskEvent[] = [
  { id: '1732250000000-0', event: 'status', data: { status: 'running', attempt: 1, at: AT } },
  { id: '1732250000000-1', event: 'progress', data: { percent: 30, message: 'segmenting', at: AT } },
  { id: '1732250000001-0', event: 'partial', data: { chunk: '机械', at: AT } },
  { id: '1732250000002-0', event: 'done', data: { result: { summary: 'ok' }, at: AT } },
];

/** The events the server has after `lastId` (all of them without one), as a Redis stream would. */
const after = (lastId: string | null) => EVENTS.slice(lastId === null ? 0 : EVENTS.findIndex((e) => e.id === lastId) + 1);

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('TaskClient.submit', () => {
  it("posts the seed's body and answers the 202 as accepted", async () => {
    const accepted = { task_id: ID, status: 'queued', type: 'agent', status_url: `${BASE}/tasks/${ID}`, created_at: AT };
    const { fetch, calls } = fakeApi(() => json(202, accepted));
    const answer = await new TaskClient({ baseUrl: `${BASE}/`, fetch, headers: { authorization: 'Bearer t' } }).submit({
      user_id: 'user123',
      content: '机械键盘降价了',
    });

    expect(answer).toEqual({ finished: false, ...accepted });
    const [req] = calls;
    expect(req?.method).toBe('POST');
    expect(req?.url).toBe(`${BASE}/tasks`);
    expect(req?.headers.get('content-type')).toBe('application/json');
    expect(req?.headers.get('authorization')).toBe('Bearer t');
    expect(req?.headers.get('idempotency-key')).toBeNull();
    expect(await req?.json()).toEqual({ user_id: 'user123', content: '机械键盘降价了' });
  });

  it('asks the API to wait and answers a 200 as the finished task', async () => {
    const { fetch, calls } = fakeApi(() => json(200, DONE));
    const answer = await new TaskClient({ baseUrl: BASE, fetch }).submit({ type: 'agent', input: { content: 'x' }, priority: 'high' }, { waitSeconds: 5 });

    expect(answer).toEqual({ finished: true, task_id: ID, task: DONE });
    expect(query(calls[0]!)).toEqual({ wait: '5' });
  });

  it('retries a 503 after Retry-After when an Idempotency-Key makes that safe', async () => {
    vi.useFakeTimers();
    const { fetch, calls } = fakeApi((_req, n) =>
      n === 1
        ? apiError(503, 'broker_unavailable', { 'retry-after': '2' })
        : json(202, { task_id: ID, status: 'queued', type: 'agent', status_url: '', created_at: AT }),
    );
    const answer = new TaskClient({ baseUrl: BASE, fetch }).submit({ user_id: 'u', content: 'x' }, { idempotencyKey: 'k-1' });

    await vi.advanceTimersByTimeAsync(1999);
    expect(calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    await expect(answer).resolves.toMatchObject({ finished: false, task_id: ID });
    expect(calls.map((c) => c.headers.get('idempotency-key'))).toEqual(['k-1', 'k-1']);
  });

  it('never retries a submission without an Idempotency-Key', async () => {
    const unavailable = fakeApi(() => apiError(503, 'broker_unavailable', { 'retry-after': '0' }));
    const err = await new TaskClient({ baseUrl: BASE, fetch: unavailable.fetch }).submit({ user_id: 'u', content: 'x' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TaskApiError);
    expect(err).toMatchObject({ status: 503, code: 'broker_unavailable', retryAfterSeconds: 0 });
    expect(unavailable.calls).toHaveLength(1);

    const offline = fakeApi(() => Promise.reject(new TypeError('fetch failed')));
    await expect(new TaskClient({ baseUrl: BASE, fetch: offline.fetch }).submit({ user_id: 'u', content: 'x' })).rejects.toThrow('fetch failed');
    expect(offline.calls).toHaveLength(1);
  });

  it('submitWorkflow sends an Idempotency-Key and retries a 503 with it; without one it never retries', async () => {
    vi.useFakeTimers();
    const accepted = {
      workflow_id: ID,
      status: 'running',
      steps: { a: ID },
      status_url: `${BASE}/workflows/${ID}`,
      events_url: `${BASE}/workflows/${ID}/events`,
    };
    const req = { steps: [{ id: 'a', type: 'agent', input: { content: 'x' } }] };
    const withKey = fakeApi((_req, n) => (n === 1 ? apiError(503, 'broker_unavailable', { 'retry-after': '1' }) : json(202, accepted)));
    const answer = new TaskClient({ baseUrl: BASE, fetch: withKey.fetch }).submitWorkflow(req, { idempotencyKey: 'wf-1' });
    await vi.advanceTimersByTimeAsync(1000);
    await expect(answer).resolves.toEqual(accepted);
    expect(withKey.calls.map((c) => [c.method, path(c), c.headers.get('idempotency-key')])).toEqual([
      ['POST', '/queue/workflows', 'wf-1'],
      ['POST', '/queue/workflows', 'wf-1'],
    ]);
    vi.useRealTimers();

    const without = fakeApi(() => apiError(503, 'broker_unavailable', { 'retry-after': '0' }));
    await expect(new TaskClient({ baseUrl: BASE, fetch: without.fetch }).submitWorkflow(req)).rejects.toMatchObject({ status: 503 });
    expect(without.calls.map((c) => c.headers.get('idempotency-key'))).toEqual([null]);
  });
});

describe('TaskClient requests', () => {
  it('gets a task with its history', async () => {
    const { fetch, calls } = fakeApi(() => json(200, { ...DONE, history: EVENTS }));
    const task = await new TaskClient({ baseUrl: BASE, fetch }).get(ID, { history: true });

    expect(task.history?.map((e) => e.event)).toEqual(['status', 'progress', 'partial', 'done']);
    expect(path(calls[0]!)).toBe(`/queue/tasks/${ID}`);
    expect(query(calls[0]!)).toEqual({ history: 'true' });
  });

  it('caps Retry-After at 5 s', async () => {
    vi.useFakeTimers();
    const { fetch, calls } = fakeApi((_req, n) => (n === 1 ? apiError(503, 'redis_unavailable', { 'retry-after': '3600' }) : json(200, DONE)));
    const task = new TaskClient({ baseUrl: BASE, fetch }).get(ID);

    await vi.advanceTimersByTimeAsync(4999);
    expect(calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    await expect(task).resolves.toEqual(DONE);
  });

  it('retries network errors of idempotent calls, and gives up after `retries`', async () => {
    vi.useFakeTimers();
    const flaky = fakeApi((_req, n) => (n === 1 ? Promise.reject(new TypeError('fetch failed')) : json(200, DONE)));
    const task = new TaskClient({ baseUrl: BASE, fetch: flaky.fetch }).get(ID);
    await vi.advanceTimersByTimeAsync(5000);
    await expect(task).resolves.toEqual(DONE);
    expect(flaky.calls).toHaveLength(2);

    const down = fakeApi(() => apiError(503, 'redis_unavailable'));
    const failed = expect(new TaskClient({ baseUrl: BASE, fetch: down.fetch, retries: 2 }).get(ID)).rejects.toMatchObject({ status: 503 });
    await vi.advanceTimersByTimeAsync(20_000);
    await failed;
    expect(down.calls).toHaveLength(3);
  });

  it('turns error bodies into TaskApiError, our shape or a proxy page', async () => {
    const issues = [{ path: 'content', message: 'Required' }];
    const { fetch } = fakeApi((req) =>
      req.method === 'POST'
        ? json(400, { error: { code: 'validation_failed', message: 'content: Required', issues } })
        : new Response('<html>Bad Gateway</html>', { status: 502, headers: { 'content-type': 'text/html' } }),
    );
    const client = new TaskClient({ baseUrl: BASE, fetch });

    const invalid = await client.submit({ type: 'agent', input: {} }).catch((e: unknown) => e);
    expect(invalid).toBeInstanceOf(TaskApiError);
    expect(invalid).toMatchObject({ status: 400, code: 'validation_failed', message: 'content: Required', issues });

    const proxy = await client.get(ID).catch((e: unknown) => e);
    expect(proxy).toMatchObject({ status: 502, code: 'http_502', issues: [], taskId: undefined });
    expect((proxy as Error).message).toContain('Bad Gateway');
  });

  it('cancels with DELETE, and reports a task that had finished as 409', async () => {
    const { fetch, calls } = fakeApi((_req, n) =>
      n === 1 ? json(200, view({ status: 'cancelled' })) : json(409, { error: { code: 'already_finished', message: 'task is done', task_id: ID } }),
    );
    const client = new TaskClient({ baseUrl: BASE, fetch });

    expect((await client.cancel(ID)).status).toBe('cancelled');
    expect(calls[0]?.method).toBe('DELETE');
    await expect(client.cancel(ID)).rejects.toMatchObject({ status: 409, code: 'already_finished', taskId: ID });
  });

  it('lists with filters and follows next_cursor to the end', async () => {
    const pages: Record<string, { tasks: TaskView[]; next_cursor: string | null }> = {
      start: { tasks: [view({ task_id: 'a' }), view({ task_id: 'b' })], next_cursor: 'c1' },
      c1: { tasks: [view({ task_id: 'c' })], next_cursor: 'c2' },
      c2: { tasks: [], next_cursor: null },
    };
    const { fetch, calls } = fakeApi((req) => json(200, pages[query(req).cursor ?? 'start']));
    const client = new TaskClient({ baseUrl: BASE, fetch });

    const all = await collect(client.listAll({ status: 'done', user_id: 'u 1', limit: 2 }));
    expect(all.map((t) => t.task_id)).toEqual(['a', 'b', 'c']);
    expect(calls.map(query)).toEqual([
      { status: 'done', user_id: 'u 1', limit: '2' },
      { status: 'done', user_id: 'u 1', limit: '2', cursor: 'c1' },
      { status: 'done', user_id: 'u 1', limit: '2', cursor: 'c2' },
    ]);
  });
});

describe('TaskClient.stream', () => {
  it.each([
    ['closes', { close: true as const }],
    ['breaks', new TypeError('terminated')],
  ])('reconnects with Last-Event-ID when the connection %s mid-task: nothing lost, nothing twice', async (_how, end) => {
    const connections: ReturnType<typeof sse>[] = [];
    const { fetch, calls } = fakeApi((req) => {
      const lastId = req.headers.get('last-event-id');
      // The first connection sends two events and half of the third, then ends.
      const steps: Step[] =
        lastId === null ? [frame(EVENTS[0]!) + ': keep-alive\n\n' + frame(EVENTS[1]!), frame(EVENTS[2]!).slice(0, 40), end] : after(lastId).map(frame);
      const c = sse(steps);
      connections.push(c);
      return c.response;
    });
    const got = await collect(new TaskClient({ baseUrl: BASE, fetch }).stream(ID));

    expect(got).toEqual(EVENTS);
    expect(calls.map((c) => c.headers.get('last-event-id'))).toEqual([null, EVENTS[1]!.id]);
    expect(calls.every((c) => path(c) === `/queue/tasks/${ID}/events` && c.headers.get('accept') === 'text/event-stream')).toBe(true);
    // The second connection never closed by itself: the client hung up after `done`.
    expect(connections[1]?.state.cancelled).toBe(true);
  });

  it('resumes after the lastEventId it is given', async () => {
    const { fetch, calls } = fakeApi((req) => sse(after(req.headers.get('last-event-id')).map(frame)).response);
    const got = await collect(new TaskClient({ baseUrl: BASE, fetch }).stream(ID, { lastEventId: EVENTS[2]!.id }));

    expect(got.map((e) => e.event)).toEqual(['done']);
    expect(calls[0]?.headers.get('last-event-id')).toBe(EVENTS[2]!.id);
  });

  it('keeps the resume point across events that carry no id', async () => {
    const { fetch, calls } = fakeApi((_req, n) =>
      n === 1 ? sse(['event: log\ndata: {"level":"info","message":"no id"}\n\n', { close: true }]).response : sse([frame(EVENTS[3]!)]).response,
    );
    const got = await collect(new TaskClient({ baseUrl: BASE, fetch }).stream(ID, { lastEventId: EVENTS[2]!.id }));

    expect(got.map((e) => [e.id, e.event])).toEqual([
      ['', 'log'],
      [EVENTS[3]!.id, 'done'],
    ]);
    expect(calls.map((c) => c.headers.get('last-event-id'))).toEqual([EVENTS[2]!.id, EVENTS[2]!.id]);
  });

  it('gives up with TaskStreamError when connections keep ending without an event', async () => {
    vi.useFakeTimers();
    const { fetch, calls } = fakeApi(() => sse([': keep-alive\n\n', { close: true }]).response);
    const failed = expect(collect(new TaskClient({ baseUrl: BASE, fetch, retries: 2 }).stream(ID))).rejects.toBeInstanceOf(TaskStreamError);
    await vi.runAllTimersAsync();
    await failed;
    expect(calls).toHaveLength(3);
  });

  it('refuses an answer that is not an event stream', async () => {
    const { fetch } = fakeApi(() => json(200, DONE));
    await expect(collect(new TaskClient({ baseUrl: BASE, fetch }).stream(ID))).rejects.toBeInstanceOf(TaskStreamError);
  });
});

describe('TaskClient.wait', () => {
  it('follows the event stream to the end and answers the finished task', async () => {
    const { fetch, calls } = fakeApi((req) => (path(req).endsWith('/events') ? sse(EVENTS.map(frame)).response : json(200, DONE)));
    const task = await new TaskClient({ baseUrl: BASE, fetch }).wait(ID);

    expect(task).toEqual(DONE);
    expect(calls.map((c) => [path(c), query(c)])).toEqual([
      [`/queue/tasks/${ID}/events`, {}],
      [`/queue/tasks/${ID}`, {}],
    ]);
  });

  it('falls back to polling when the API has no event stream', async () => {
    const statuses = ['queued', 'running', 'done'] as const;
    let polls = 0;
    const { fetch, calls } = fakeApi((req) => {
      if (path(req).endsWith('/events')) return apiError(404, 'not_found');
      const status = statuses[Math.min(polls++, 2)];
      return json(200, status === 'done' ? DONE : view({ status }));
    });
    const task = await new TaskClient({ baseUrl: BASE, fetch, pollIntervalMs: 1 }).wait(ID);

    expect(task).toEqual(DONE);
    const gets = calls.filter((c) => !path(c).endsWith('/events'));
    expect(gets).toHaveLength(3);
    // Long polls: a server that supports `wait` answers as soon as the task finishes.
    expect(gets.every((c) => Number(query(c).wait) > 0)).toBe(true);
  });

  it.each([
    ['its body', () => sse([]).response],
    ['its headers', (req: Request) => new Promise<Response>((_, reject) => req.signal.addEventListener('abort', () => reject(req.signal.reason as Error)))],
  ])('falls back to polling when a proxy holds back %s, and hangs up on the stream', async (_what, events) => {
    const { fetch, calls } = fakeApi((req) => (path(req).endsWith('/events') ? events(req) : json(200, DONE)));
    const task = await new TaskClient({ baseUrl: BASE, fetch, streamIdleMs: 20 }).wait(ID);

    expect(task).toEqual(DONE);
    const streams = calls.filter((c) => path(c).endsWith('/events'));
    expect(streams).toHaveLength(1);
    expect(streams[0]?.signal.aborted).toBe(true);
  });

  it('rejects with TaskWaitTimeoutError when the task does not finish in time', async () => {
    const { fetch, calls } = fakeApi((req) => (path(req).endsWith('/events') ? apiError(404, 'not_found') : json(200, view())));
    const err = await new TaskClient({ baseUrl: BASE, fetch, pollIntervalMs: 5 }).wait(ID, { timeoutMs: 60 }).catch((e: unknown) => e);

    expect(err).toBeInstanceOf(TaskWaitTimeoutError);
    expect(err).toMatchObject({ taskId: ID, timeoutMs: 60 });
    expect(calls.length).toBeGreaterThan(2);
  });

  it("rejects with the signal's reason when aborted mid-stream", async () => {
    const { fetch } = fakeApi(() => sse([frame(EVENTS[0]!)]).response);
    const ac = new AbortController();
    const reason = new Error('user went away');
    const waiting = new TaskClient({ baseUrl: BASE, fetch }).wait(ID, { signal: ac.signal });
    setTimeout(() => ac.abort(reason), 10);
    await expect(waiting).rejects.toBe(reason);
  });
});

describe('agentTools', () => {
  const tasks: Record<string, TaskView> = {
    t1: view({ task_id: 't1', status: 'done', result: { answer: 42 } }),
    t2: view({ task_id: 't2', status: 'failed', error: { code: 'boom', message: 'it broke', retriable: false } }),
    t3: view({ task_id: 't3', status: 'running' }),
  };
  const api = () =>
    fakeApi((req) => {
      if (req.method === 'POST') return json(202, { task_id: 't9', status: 'queued', type: 'agent', status_url: '', created_at: AT });
      if (path(req).endsWith('/events')) return apiError(404, 'not_found');
      const id = path(req).split('/').at(-1) ?? '';
      return json(200, tasks[id]);
    });

  it('submit_task sends the general form and answers the task id', async () => {
    const { fetch, calls } = api();
    const tools = agentTools(new TaskClient({ baseUrl: BASE, fetch }));

    expect(await tools.submit_task('agent', { content: 'x' }, { priority: 'low' })).toBe('t9');
    expect(await calls[0]?.json()).toEqual({ type: 'agent', input: { content: 'x' }, priority: 'low' });
  });

  it('wait_for_tasks waits for all and reports a task still running after the wait instead of failing', async () => {
    const { fetch } = api();
    const tools = agentTools(new TaskClient({ baseUrl: BASE, fetch, pollIntervalMs: 5 }));

    expect(await tools.wait_for_tasks(['t1', 't2'])).toEqual({ t1: 'done', t2: 'failed' });
    expect(await tools.wait_for_tasks(['t1', 't3'], 0.05)).toEqual({ t1: 'done', t3: 'running' });
  });

  it('get_task_results answers the results of the done tasks only', async () => {
    const { fetch } = api();
    const tools = agentTools(new TaskClient({ baseUrl: BASE, fetch }));

    expect(await tools.get_task_results(['t1', 't2', 't3'])).toEqual({ t1: { answer: 42 } });
    expect((await tools.check_task('t3')).status).toBe('running');
  });
});

describe('API keys, 401/403 and 429', () => {
  const KEY = 'atq_' + 'a1B2-c3D4_'.repeat(4) + 'xyz';
  const ACCEPTED = { task_id: ID, status: 'queued', type: 'agent', status_url: '', created_at: AT, downgraded: false };
  const QUOTA: TenantQuota = { tenant: 'acme', units: 100, window_seconds: 86400, spent: 12, remaining: 88, resets_at: '2026-12-02T00:00:00.000Z' };
  const rateLimited = (seconds: number) =>
    json(
      429,
      { error: { code: 'rate_limited', message: 'too many submits', retry_after: seconds } },
      {
        'retry-after': String(seconds),
        'ratelimit-policy': '"submits";q=10;w=1',
        ratelimit: `"submits";r=0;t=${seconds}`,
      },
    );
  const quotaExceeded = (seconds: number) =>
    json(429, { error: { code: 'quota_exceeded', message: 'tenant acme has 2 of 100 units left', retry_after: seconds } }, { 'retry-after': String(seconds) });
  const submit = (client: TaskClient, idempotencyKey?: string) => client.submit({ user_id: 'u', content: 'x' }, { idempotencyKey });

  it('sends the key as a Bearer token on every call, the event streams included', async () => {
    const { fetch, calls } = fakeApi((req) => {
      const p = path(req);
      if (p.endsWith('/events')) return sse(EVENTS.map(frame)).response;
      if (p.endsWith('/quota')) return json(200, QUOTA);
      if (req.method === 'POST') return json(202, ACCEPTED);
      if (p.endsWith('/tasks')) return json(200, { tasks: [DONE], next_cursor: null });
      return json(200, DONE);
    });
    const client = new TaskClient({ baseUrl: BASE, fetch, apiKey: KEY, headers: { authorization: 'Bearer old', 'x-trace': '1' } });

    await submit(client);
    await submit(client, 'k-1');
    await client.get(ID);
    await client.cancel(ID);
    await client.list();
    await collect(client.listAll());
    await client.quota();
    await collect(client.stream(ID));
    await client.wait(ID);
    const tools = agentTools(client);
    await tools.submit_task('agent', { content: 'x' });
    await tools.wait_for_tasks([ID]);
    await tools.get_quota();

    expect(new Set(calls.map((c) => `${c.method} ${path(c).replace(ID, ':id')}`))).toEqual(
      new Set(['POST /queue/tasks', 'GET /queue/tasks/:id', 'DELETE /queue/tasks/:id', 'GET /queue/tasks', 'GET /queue/quota', 'GET /queue/tasks/:id/events']),
    );
    expect(calls.map((c) => c.headers.get('authorization'))).toEqual(calls.map(() => `Bearer ${KEY}`));
    expect(calls.every((c) => c.headers.get('x-trace') === '1')).toBe(true);
  });

  it('sends no Authorization without a key, and refuses a key that is not bare', async () => {
    const { fetch, calls } = fakeApi(() => json(200, DONE));
    await new TaskClient({ baseUrl: BASE, fetch }).get(ID);
    await new TaskClient({ baseUrl: BASE, fetch, apiKey: '' }).get(ID);
    expect(calls.map((c) => c.headers.get('authorization'))).toEqual([null, null]);

    expect(() => new TaskClient({ baseUrl: BASE, fetch, apiKey: `Bearer ${KEY}` })).toThrow(TypeError);
  });

  it('turns a 401 into a TaskAuthError that says to set apiKey, and never retries it', async () => {
    const { fetch, calls } = fakeApi(() =>
      json(401, { error: { code: 'unauthorized', message: 'missing API key' } }, { 'www-authenticate': 'Bearer realm="agent-task-queue"' }),
    );
    const err = await new TaskClient({ baseUrl: BASE, fetch }).get(ID).catch((e: unknown) => e);

    expect(err).toBeInstanceOf(TaskAuthError);
    expect(err).toBeInstanceOf(TaskApiError);
    expect(err).toMatchObject({ name: 'TaskAuthError', status: 401, code: 'unauthorized', keySent: false });
    expect((err as Error).message).toMatch(/^missing API key .*set the apiKey/);
    expect(calls).toHaveLength(1);

    const refused = await new TaskClient({ baseUrl: BASE, fetch, apiKey: KEY })
      .submit({ user_id: 'u', content: 'x' }, { idempotencyKey: 'k' })
      .catch((e: unknown) => e);
    expect(refused).toMatchObject({ status: 401, keySent: true });
    expect((refused as Error).message).toContain('refused');
    expect(calls).toHaveLength(2);
  });

  it('turns a 403 into a TaskAuthError naming the scope, never retried, and wait() does not fall back to polling', async () => {
    const { fetch, calls } = fakeApi(() => json(403, { error: { code: 'forbidden', message: 'this API key lacks the scope tasks:read' } }));
    const client = new TaskClient({ baseUrl: BASE, fetch, apiKey: KEY });

    const err = await client.wait(ID).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TaskAuthError);
    expect(err).toMatchObject({ status: 403, code: 'forbidden', scope: 'tasks:read', keySent: true });
    expect((err as Error).message).toContain('use an API key that has the scope tasks:read');
    expect(calls.map(path)).toEqual([`/queue/tasks/${ID}/events`]);

    await expect(collect(client.stream(ID))).rejects.toBeInstanceOf(TaskAuthError);
    expect(calls).toHaveLength(2);
  });

  it('retries a 429 rate_limited read after Retry-After', async () => {
    vi.useFakeTimers();
    const { fetch, calls } = fakeApi((_req, n) => (n === 1 ? rateLimited(2) : json(200, DONE)));
    const task = new TaskClient({ baseUrl: BASE, fetch, apiKey: KEY }).get(ID);

    await vi.advanceTimersByTimeAsync(1999);
    expect(calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    await expect(task).resolves.toEqual(DONE);
    expect(calls).toHaveLength(2);
  });

  it('retries a rate-limited event stream too', async () => {
    const { fetch, calls } = fakeApi((_req, n) => (n === 1 ? rateLimited(0) : sse(EVENTS.map(frame)).response));
    expect(await collect(new TaskClient({ baseUrl: BASE, fetch }).stream(ID))).toEqual(EVENTS);
    expect(calls).toHaveLength(2);
  });

  it('retries a rate-limited submit only when it has an Idempotency-Key', async () => {
    const without = fakeApi(() => rateLimited(0));
    const err = await submit(new TaskClient({ baseUrl: BASE, fetch: without.fetch })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TaskRateLimitError);
    expect(err).toBeInstanceOf(TaskApiError);
    expect(err).toMatchObject({
      status: 429,
      code: 'rate_limited',
      retryAfterSeconds: 0,
      quotaExceeded: false,
      rateLimit: { policy: 'submits', remaining: 0, resetSeconds: 0, quota: 10, windowSeconds: 1 },
    });
    expect((err as Error).message).toMatch(/too many submits .*try again in 0 s/);
    expect(without.calls).toHaveLength(1);

    const withKey = fakeApi((_req, n) => (n <= 2 ? rateLimited(0) : json(202, ACCEPTED)));
    await expect(submit(new TaskClient({ baseUrl: BASE, fetch: withKey.fetch }), 'k-1')).resolves.toMatchObject({ finished: false, task_id: ID });
    expect(withKey.calls.map((c) => c.headers.get('idempotency-key'))).toEqual(['k-1', 'k-1', 'k-1']);
  });

  it('gives up on 429s after `retries`', async () => {
    const { fetch, calls } = fakeApi(() => rateLimited(0));
    await expect(new TaskClient({ baseUrl: BASE, fetch, retries: 2 }).list()).rejects.toBeInstanceOf(TaskRateLimitError);
    expect(calls).toHaveLength(3);
  });

  it('never retries quota_exceeded, and says when the quota resets', async () => {
    vi.useFakeTimers({ now: Date.parse(AT) });
    const { fetch, calls } = fakeApi(() => quotaExceeded(5 * 3600 + 60));
    const client = new TaskClient({ baseUrl: BASE, fetch, apiKey: KEY, maxRetryAfterMs: Infinity });

    const err = await submit(client, 'k-1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TaskRateLimitError);
    expect(err).toMatchObject({ status: 429, code: 'quota_exceeded', quotaExceeded: true, retryAfterSeconds: 18060, rateLimit: undefined });
    expect((err as TaskRateLimitError).retryAt?.toISOString()).toBe('2026-11-22T07:15:38.611Z');
    expect((err as Error).message).toContain("the tenant's quota is spent; it resets in 5 h 1 min (at 2026-11-22T07:15:38.611Z)");

    await expect(client.wait(ID)).rejects.toMatchObject({ code: 'quota_exceeded' });
    expect(calls).toHaveLength(2);
  });

  it('throws at once a 429 whose Retry-After is over maxRetryAfterMs', async () => {
    const { fetch, calls } = fakeApi(() => rateLimited(31));
    const err = await new TaskClient({ baseUrl: BASE, fetch }).get(ID).catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 429, code: 'rate_limited', retryAfterSeconds: 31 });
    expect(calls).toHaveLength(1);

    await expect(new TaskClient({ baseUrl: BASE, fetch, maxRetryAfterMs: 1000 }).get(ID)).rejects.toBeInstanceOf(TaskRateLimitError);
    expect(calls).toHaveLength(2);
  });

  it("takes the body's retry_after when Retry-After is not visible (CORS)", async () => {
    vi.useFakeTimers();
    const { fetch, calls } = fakeApi((_req, n) =>
      n === 1 ? json(429, { error: { code: 'rate_limited', message: 'slow down', retry_after: 1 } }) : json(200, DONE),
    );
    const task = new TaskClient({ baseUrl: BASE, fetch }).get(ID);
    await vi.advanceTimersByTimeAsync(999);
    expect(calls).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    await expect(task).resolves.toEqual(DONE);
  });

  it('quota() answers the GET /quota body', async () => {
    const unlimited: TenantQuota = { ...QUOTA, units: 0, spent: 40, remaining: null };
    const { fetch, calls } = fakeApi((_req, n) => json(200, n === 1 ? QUOTA : unlimited));
    const client = new TaskClient({ baseUrl: BASE, fetch, apiKey: KEY });

    expect(await client.quota()).toEqual(QUOTA);
    expect(await agentTools(client).get_quota()).toEqual(unlimited);
    expect(calls.map((c) => [c.method, path(c)])).toEqual([
      ['GET', '/queue/quota'],
      ['GET', '/queue/quota'],
    ]);
  });

  it("agent tools fail with the client's errors, whose messages say what happened and when to try again", async () => {
    const { fetch } = fakeApi((req) =>
      req.method === 'POST' ? rateLimited(20) : json(403, { error: { code: 'forbidden', message: 'this API key lacks the scope tasks:read' } }),
    );
    const tools = agentTools(new TaskClient({ baseUrl: BASE, fetch, apiKey: KEY }));

    await expect(tools.submit_task('agent', { content: 'x' })).rejects.toThrow(/HTTP 429 rate_limited\): too many requests; try again in 20 s \(at /);
    await expect(tools.check_task(ID)).rejects.toThrow(
      'this API key lacks the scope tasks:read (HTTP 403 forbidden): use an API key that has the scope tasks:read',
    );
  });
});
