/**
 * What a caller sees while a task runs: history, server-sent events with resume, waits, sync
 * submit, cancellation and listing — on the embedded stack (memory store and broker, a worker).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { parseSse, type SseMessage } from '../client/sse.ts';
import { defineTaskType, TaskRegistry } from '../common/registry.ts';
import type { ResultMessage } from '../common/task.ts';
import { embeddedStack } from '../test/support/embedded.ts';
import { waitFor } from '../test/support/wait.ts';
import { agentTaskType } from '../worker/agent-logic.ts';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A handler that waits for its signal, and reports when the abort reached it. */
const aborted: { id: string; at: number; reason: string }[] = [];
const hangs = defineTaskType({
  name: 'hang',
  input: z.object({ ms: z.number() }),
  handler: (ctx, input) =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => resolve('finished'), input.ms);
      ctx.signal.addEventListener('abort', () => {
        clearTimeout(t);
        aborted.push({ id: ctx.taskId, at: Date.now(), reason: String(ctx.signal.reason) });
        reject(ctx.signal.reason as Error);
      });
    }),
});

/** Records the order in which tasks start. */
const started: string[] = [];
const marks = defineTaskType({
  name: 'mark',
  input: z.object({ label: z.string() }),
  handler: (_ctx, input) => Promise.resolve(void started.push(input.label)),
});

async function stack(opts: { concurrency?: number; start?: boolean } = {}) {
  const { store, broker, worker, app } = await embeddedStack(cleanups, {
    registry: new TaskRegistry().register(agentTaskType).register(hangs).register(marks),
    ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}),
    startWorker: opts.start !== false,
    app: { keepAliveMs: 100 },
  });
  const results: ResultMessage[] = [];
  await broker.subscribe('res', 'downstream', (d) => {
    results.push(JSON.parse(d.body) as ResultMessage);
    return Promise.resolve();
  });
  const post = async (body: unknown, path = '/tasks') => {
    const res = await app.request(`http://localhost${path}`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
    return { res, json: (await res.json()) as Record<string, unknown> };
  };
  const get = async (path: string, headers: Record<string, string> = {}) => {
    const res = await app.request(`http://localhost${path}`, { headers });
    return { res, json: (await res.json()) as Record<string, unknown> };
  };
  return { store, broker, worker, app, results, post, get };
}

/** Reads an SSE response; stops after `max` messages (then drops the connection) or at its end. */
async function readEvents(res: Response, max = Infinity): Promise<{ messages: SseMessage[] }> {
  const messages: SseMessage[] = [];
  const ac = new AbortController();
  if (!res.body) throw new Error('no body');
  for await (const m of parseSse(res.body, ac.signal)) {
    messages.push(m);
    if (messages.length >= max) {
      ac.abort();
      await res.body.cancel().catch(() => undefined);
      break;
    }
  }
  return { messages };
}

describe('history and events', () => {
  it('returns the execution history with ?history=true: start, progress, partial output, end', async () => {
    const s = await stack();
    const { json } = await s.post({ user_id: 'u1', content: 'I love this keyboard, great discount' }, '/tasks?wait=5');
    expect(json.status).toBe('done');
    const { json: view } = await s.get(`/tasks/${String(json.task_id)}?history=true`);
    const history = view.history as { id: string; event: string; data: Record<string, unknown> }[];
    expect(history.map((e) => e.event)).toEqual(expect.arrayContaining(['status', 'progress', 'partial', 'log', 'done']));
    expect(history[0]).toMatchObject({ event: 'status', data: { status: 'queued' } });
    expect(history.at(-1)?.event).toBe('done');
    expect(history.find((e) => e.event === 'progress' && e.data.percent === 60)?.data.message).toBe('extracting keywords');
    // The partial chunks add up to the output, which is the summary.
    const chunks = history
      .filter((e) => e.event === 'partial')
      .map((e) => e.data.chunk)
      .join('');
    expect(chunks).toBe(view.output);
    expect(view.output).toBe((view.result as { summary: string }).summary);
    for (const e of history) expect(typeof e.data.at).toBe('string');
    // Without the flag, no history.
    expect((await s.get(`/tasks/${String(json.task_id)}`)).json.history).toBeUndefined();
  });

  it('streams a live task over SSE and resumes after Last-Event-ID with nothing lost or repeated', async () => {
    const s = await stack();
    const { json } = await s.post({ type: 'agent', input: { content: 'one two three four five six seven eight', simulate_ms: 60 } });
    const id = String(json.task_id);
    const first = await s.app.request(`http://localhost/tasks/${id}/events`);
    expect(first.status).toBe(200);
    expect(first.headers.get('content-type')).toContain('text/event-stream');
    const part1 = (await readEvents(first, 3)).messages;
    expect(part1).toHaveLength(3);
    // Mid-task: the task is not finished when the first connection drops.
    expect((await s.store.get(id))?.status).not.toBe('done');
    const resumed = await s.app.request(`http://localhost/tasks/${id}/events`, { headers: { 'Last-Event-ID': part1.at(-1)?.id ?? '' } });
    const part2 = (await readEvents(resumed)).messages;
    expect(part2.at(-1)?.event).toBe('done');
    const all = [...part1, ...part2];
    const ids = all.map((m) => m.id);
    expect(new Set(ids).size).toBe(ids.length);
    // Exactly the stored history, in order.
    const history = await s.store.events(id, null, 1000);
    expect(ids).toEqual(history.map((e) => e.id));
    expect(all.map((m) => m.event)).toEqual(history.map((e) => e.type));
    const done = JSON.parse(all.at(-1)?.data ?? '{}') as { result: { digest: string } };
    expect(done.result.digest).toMatch(/^[0-9a-f]{8}$/);
  });

  it('replays the history of a finished task and closes; 404 for an unknown task; 400 for a bad Last-Event-ID', async () => {
    const s = await stack();
    const { json } = await s.post({ user_id: 'u', content: 'short' }, '/tasks?wait=5');
    const res = await s.app.request(`http://localhost/tasks/${String(json.task_id)}/events`);
    const { messages } = await readEvents(res);
    expect(messages[0]?.event).toBe('status');
    expect(messages.at(-1)?.event).toBe('done');
    // Resuming after the end gets nothing and is closed.
    const after = await s.app.request(`http://localhost/tasks/${String(json.task_id)}/events`, { headers: { 'Last-Event-ID': messages.at(-1)?.id ?? '' } });
    expect((await readEvents(after)).messages).toEqual([]);
    expect((await s.app.request('http://localhost/tasks/00000000-0000-4000-8000-000000000000/events')).status).toBe(404);
    const bad = await s.app.request(`http://localhost/tasks/${String(json.task_id)}/events`, { headers: { 'Last-Event-ID': 'nope' } });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { message: string } }).error.message).toContain('Last-Event-ID');
  });

  it('sends keep-alive comments while a task is quiet', async () => {
    const s = await stack();
    const { json } = await s.post({ type: 'hang', input: { ms: 5000 } });
    const res = await s.app.request(`http://localhost/tasks/${String(json.task_id)}/events`);
    if (!res.body) throw new Error('no body');
    const reader: ReadableStreamDefaultReader<Uint8Array> = (res.body as ReadableStream<Uint8Array>).getReader();
    let text = '';
    const until = Date.now() + 2000;
    while (!text.includes(': keep-alive') && Date.now() < until) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    await reader.cancel();
    expect(text).toContain(': keep-alive');
  });
});

describe('wait and sync mode', () => {
  it('GET ?wait holds until the task ends; POST ?wait and async_mode=false answer 200 with the result', async () => {
    const s = await stack();
    const { json: accepted, res: r1 } = await s.post({ type: 'agent', input: { content: 'wait for me', simulate_ms: 50 } });
    expect(r1.status).toBe(202);
    const { json: waited } = await s.get(`/tasks/${String(accepted.task_id)}?wait=5`);
    expect(waited.status).toBe('done');
    const sync = await s.post({ user_id: 'u', content: 'sync please', async_mode: false });
    expect(sync.res.status).toBe(200);
    expect(sync.json).toMatchObject({ status: 'done', result: { sentiment: 'neutral' } });
    const viaQuery = await s.post({ type: 'agent', input: { content: 'quick' } }, '/tasks?wait=5');
    expect(viaQuery.res.status).toBe(200);
  });

  it('answers 202 when the task does not finish within the wait, and 400 for a wait past the limit', async () => {
    const s = await stack();
    const slow = await s.post({ type: 'hang', input: { ms: 3000 } }, '/tasks?wait=0.3');
    expect(slow.res.status).toBe(202);
    expect(slow.json.status).toBe('queued');
    const { json: still } = await s.get(`/tasks/${String(slow.json.task_id)}?wait=0.2`);
    expect(still.status).toBe('running');
    const tooLong = await s.get(`/tasks/${String(slow.json.task_id)}?wait=6000`);
    expect(tooLong.res.status).toBe(400);
    expect(JSON.stringify(tooLong.json)).toContain('wait');
  });
});

describe('cancellation', () => {
  it('aborts a running handler at once; the task ends cancelled and a cancelled result is published', async () => {
    const s = await stack();
    const { json } = await s.post({ type: 'hang', input: { ms: 10_000 } });
    const id = String(json.task_id);
    await waitFor('running', async () => (await s.store.get(id))?.status === 'running');
    const sent = Date.now();
    const del = await s.app.request(`http://localhost/tasks/${id}?reason=test`, { method: 'DELETE' });
    expect(del.status).toBe(200);
    expect(((await del.json()) as { status: string }).status).toBe('cancelled');
    await waitFor('handler aborted', () => aborted.some((a) => a.id === id));
    const hit = aborted.find((a) => a.id === id);
    expect((hit?.at ?? Infinity) - sent).toBeLessThan(1000);
    expect(hit?.reason).toContain('cancelled');
    await waitFor('cancelled result', () => s.results.some((r) => r.task_id === id));
    expect(s.results.filter((r) => r.task_id === id)).toEqual([expect.objectContaining({ status: 'cancelled' })]);
    expect((await s.store.get(id))?.status).toBe('cancelled');
    expect(s.worker.stats.cancelled).toBe(1);
  });

  it('a queued task never runs; a finished task answers 409; an unknown one 404', async () => {
    const s = await stack({ start: false });
    const { json } = await s.post({ type: 'agent', input: { content: 'never' } });
    const id = String(json.task_id);
    const del = await s.app.request(`http://localhost/tasks/${id}`, { method: 'DELETE' });
    expect(del.status).toBe(200);
    expect(s.results.filter((r) => r.task_id === id).map((r) => r.status)).toEqual(['cancelled']);
    await s.worker.start();
    // The request message reaches the worker, which must not run it.
    await new Promise((r) => setTimeout(r, 200));
    expect(s.worker.stats.handlerRuns).toBe(0);
    expect((await s.store.get(id))?.status).toBe('cancelled');
    const again = await s.app.request(`http://localhost/tasks/${id}`, { method: 'DELETE' });
    expect(again.status).toBe(409);
    expect(await again.json()).toMatchObject({ error: { code: 'task_finished', status: 'cancelled', task_id: id } });
    expect((await s.app.request('http://localhost/tasks/00000000-0000-4000-8000-000000000000', { method: 'DELETE' })).status).toBe(404);
  });
});

describe('listing', () => {
  it('lists with filters and a cursor; rejects a bad filter or cursor with 400 naming it', async () => {
    const s = await stack({ start: false });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(String((await s.post({ user_id: 'alice', content: `task ${i}` })).json.task_id));
    await s.post({ user_id: 'bob', content: 'not alice' });
    await s.app.request(`http://localhost/tasks/${ids[0] ?? ''}`, { method: 'DELETE' });
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const { json } = await s.get(`/tasks?user_id=alice&limit=2${cursor ? `&cursor=${cursor}` : ''}`);
      const page = json as { tasks: { task_id: string; user_id: string }[]; next_cursor: string | null };
      expect(page.tasks.length).toBeLessThanOrEqual(2);
      for (const t of page.tasks) expect(t.user_id).toBe('alice');
      seen.push(...page.tasks.map((t) => t.task_id));
      cursor = page.next_cursor;
    } while (cursor);
    expect(seen.sort()).toEqual([...ids].sort());
    const cancelled = (await s.get('/tasks?status=cancelled')).json as { tasks: { task_id: string }[] };
    expect(cancelled.tasks.map((t) => t.task_id)).toEqual([ids[0]]);
    for (const [q, field] of [
      ['status=finished', 'status'],
      ['limit=0', 'limit'],
      ['limit=abc', 'limit'],
      ['cursor=zzzz', 'cursor'],
    ] as const) {
      const { res, json } = await s.get(`/tasks?${q}`);
      expect(res.status, q).toBe(400);
      expect(JSON.stringify(json), q).toContain(field);
    }
  });
});

describe('priorities', () => {
  it('under a backlog, high-priority tasks start first, then normal, then low', async () => {
    const s = await stack({ concurrency: 1, start: false });
    started.length = 0;
    for (const p of ['low', 'normal', 'high'] as const) {
      for (let i = 0; i < 4; i++) expect((await s.post({ type: 'mark', input: { label: p }, priority: p })).res.status).toBe(202);
    }
    await s.worker.start();
    await waitFor('all started', () => started.length === 12);
    const order = started;
    const run = (p: string) => Array.from({ length: 4 }, () => p);
    expect(order).toEqual([...run('high'), ...run('normal'), ...run('low')]);
  });
});
