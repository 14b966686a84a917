/**
 * Workflows, delayed tasks, reruns and dead letters over HTTP, on the embedded stack (memory
 * store and broker, a worker and a relay in process).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { parseSse, type SseMessage } from '../client/sse.ts';
import { NonRetryableError } from '../common/errors.ts';
import { defineTaskType } from '../common/registry.ts';
import type { WorkflowView } from '../common/views.ts';
import { embeddedStack } from '../test/support/embedded.ts';
import { waitFor } from '../test/support/wait.ts';
import { defaultRegistry } from '../worker/task-types.ts';
import type { OutgoingMessage } from '../common/broker/port.ts';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Fails while `broken.on` (with the input's error code), then succeeds. */
const broken = { on: true };
const flaky = defineTaskType({
  name: 'flaky',
  input: z.object({ n: z.number(), code: z.string().default('upstream_down') }),
  maxAttempts: 1,
  handler: (_ctx, input) => (broken.on ? Promise.reject(new NonRetryableError('it broke', input.code)) : Promise.resolve({ n: input.n })),
});

async function stack(app: { requestTimeoutMs?: number } = {}) {
  const {
    store,
    app: api,
    broker,
  } = await embeddedStack(cleanups, {
    registry: defaultRegistry().register(flaky),
    store: { readyPublishDelayMs: 200 },
    relay: true,
    app: { keepAliveMs: 100, ...app },
  });
  const call = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const res = await api.request(`http://localhost${path}`, {
      method,
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      headers: { 'content-type': 'application/json', ...headers },
    });
    return { res, json: (await res.json()) as Record<string, unknown> };
  };
  return { store, app: api, broker, call };
}

async function readSse(res: Response): Promise<SseMessage[]> {
  const out: SseMessage[] = [];
  if (!res.body) throw new Error('no body');
  for await (const m of parseSse(res.body, new AbortController().signal)) out.push(m);
  return out;
}

describe('workflows over HTTP', () => {
  it("runs seed 001's report: research, three analysts in parallel, the writer with their results; the stream resumes", async () => {
    const { app, call } = await stack();
    const { res, json } = await call('POST', '/workflows', { template: 'seed_report', input: { topic: 'solid-state batteries' } });
    expect(res.status, JSON.stringify(json)).toBe(202);
    expect(Object.keys(json.steps as object).sort()).toEqual(['financial', 'market', 'research', 'risk', 'writer']);
    const url = new URL(String(json.status_url)).pathname;
    let view: WorkflowView | undefined;
    await waitFor('the workflow done', async () => {
      view = (await call('GET', url)).json as unknown as WorkflowView;
      return view.status === 'done';
    });
    expect(view?.progress).toBe(100);
    expect(view?.steps.map((s) => [s.id, s.status])).toEqual([
      ['research', 'done'],
      ['market', 'done'],
      ['financial', 'done'],
      ['risk', 'done'],
      ['writer', 'done'],
    ]);
    const writer = view?.steps.find((s) => s.id === 'writer');
    expect(writer?.needs).toEqual(['market', 'financial', 'risk']);
    expect((writer?.result as { sections: { role: string }[] }).sections.map((s) => s.role).sort()).toEqual(['financial', 'market', 'risk']);
    // A step is a task of its own too.
    const step = (await call('GET', `/tasks/${writer?.task_id}`)).json;
    expect(step).toMatchObject({ status: 'done', workflow_id: view?.workflow_id, step: 'writer' });

    const events = await readSse(await app.request(`http://localhost${url}/events`));
    expect(events.at(-1)).toMatchObject({ event: 'workflow' });
    expect(JSON.parse(events.at(-1)?.data ?? '{}')).toMatchObject({ status: 'done', task_id: null, step: null });
    const done = events.filter((e) => e.event === 'done').map((e) => (JSON.parse(e.data) as { step: string }).step);
    expect(done[0]).toBe('research');
    expect(done.at(-1)).toBe('writer');
    expect(done).toHaveLength(5);
    const mid = events[5];
    const resumed = await readSse(await app.request(`http://localhost${url}/events`, { headers: { 'last-event-id': mid?.id ?? '' } }));
    expect(resumed.map((e) => e.id)).toEqual(events.slice(6).map((e) => e.id));
    const list = (await call('GET', '/workflows')).json;
    expect((list.workflows as { workflow_id: string }[]).map((w) => w.workflow_id)).toContain(view?.workflow_id);
  });

  it('refuses a bad workflow with a 400 naming the field: a cycle, an unknown need, type or template, a bad input', async () => {
    const { call } = await stack();
    const cases: [unknown, string][] = [
      [
        {
          steps: [
            { id: 'a', type: 'agent', input: { content: 'x' }, needs: ['b'] },
            { id: 'b', type: 'agent', input: { content: 'x' }, needs: ['a'] },
          ],
        },
        'steps',
      ],
      [{ steps: [{ id: 'a', type: 'agent', input: { content: 'x' }, needs: ['nope'] }] }, 'steps.0.needs.0'],
      [{ steps: [{ id: 'a', type: 'no_such_type', input: {} }] }, 'steps.0.type'],
      [{ steps: [{ id: 'a', type: 'agent', input: { content: '' } }] }, 'steps.0.input.content'],
      [
        {
          steps: [
            { id: 'a', type: 'agent', input: { content: 'x' } },
            { id: 'a', type: 'agent', input: { content: 'y' } },
          ],
        },
        'steps.1.id',
      ],
      [{ steps: [] }, 'steps'],
      [{ template: 'nope' }, 'template'],
      [{ steps: [{ id: 'a', type: 'agent', input: { content: 'x' } }], extra: 1 }, ''],
    ];
    for (const [body, path] of cases) {
      const { res, json } = await call('POST', '/workflows', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      const issues = (json.error as { issues: { path: string }[] }).issues;
      expect(
        issues.map((i) => i.path),
        JSON.stringify(json),
      ).toContain(path);
    }
  });

  it('fails the workflow when a step fails and cancels the steps not run; DELETE cancels a running one; every step gets its result message', async () => {
    const { call, broker } = await stack();
    // What a downstream service sees on the result topic: one message per step, whoever ended it.
    const results = new Map<string, string[]>();
    await broker.subscribe('res', 'downstream', (d) => {
      results.set(d.key, [...(results.get(d.key) ?? []), (JSON.parse(d.body) as { status: string }).status]);
      return Promise.resolve();
    });
    const resultsOf = async (url: string, statuses: string[]) => {
      const steps = ((await call('GET', url)).json as unknown as WorkflowView).steps.map((st) => st.task_id);
      await waitFor(`a result message for each step of ${url}`, () => steps.every((id) => results.has(id)));
      await new Promise((r) => setTimeout(r, 50)); // nothing more comes
      expect(steps.map((id) => results.get(id))).toEqual(statuses.map((st) => [st]));
    };
    broken.on = true;
    const { json } = await call('POST', '/workflows', {
      steps: [
        { id: 'first', type: 'flaky', input: { n: 1 } },
        { id: 'second', type: 'agent', input: { content: 'never' }, needs: ['first'] },
      ],
    });
    const url = `/workflows/${String(json.workflow_id)}`;
    await waitFor('the workflow failed', async () => (await call('GET', url)).json.status === 'failed');
    const view = (await call('GET', url)).json as unknown as WorkflowView;
    expect(view.error).toMatchObject({ code: 'upstream_down' });
    expect(view.steps.map((s) => s.status)).toEqual(['failed', 'cancelled']);
    expect((await call('DELETE', url)).res.status).toBe(409);
    await resultsOf(url, ['failed', 'cancelled']);

    const slow = await call('POST', '/workflows', {
      steps: [
        { id: 'slow', type: 'agent', input: { content: 'slow', simulate_ms: 5000 } },
        { id: 'after', type: 'agent', input: { content: 'after' }, needs: ['slow'] },
      ],
    });
    const slowUrl = `/workflows/${String(slow.json.workflow_id)}`;
    await waitFor('the first step running', async () => ((await call('GET', slowUrl)).json as unknown as WorkflowView).steps[0]?.status === 'running');
    const cancelled = await call('DELETE', slowUrl);
    expect(cancelled.res.status).toBe(200);
    expect((cancelled.json as unknown as WorkflowView).steps.map((s) => s.status)).toEqual(['cancelled', 'cancelled']);
    await resultsOf(slowUrl, ['cancelled', 'cancelled']);
    expect((await call('GET', '/workflows/7e4f8a1c-0000-4000-8000-000000000000')).res.status).toBe(404);

    // DELETE of one running step cancels the workflow: the others, not started, get their results from the API.
    const three = await call('POST', '/workflows', {
      steps: [
        { id: 'a', type: 'agent', input: { content: 'slow', simulate_ms: 5000 } },
        { id: 'b', type: 'agent', input: { content: 'b' }, needs: ['a'] },
        { id: 'c', type: 'agent', input: { content: 'c' }, needs: ['a'] },
      ],
    });
    const threeUrl = `/workflows/${String(three.json.workflow_id)}`;
    await waitFor('step a running', async () => ((await call('GET', threeUrl)).json as unknown as WorkflowView).steps[0]?.status === 'running');
    const a = ((await call('GET', threeUrl)).json as unknown as WorkflowView).steps[0]?.task_id ?? '';
    expect((await call('DELETE', `/tasks/${a}`)).res.status).toBe(200);
    expect((await call('GET', threeUrl)).json.status).toBe('cancelled');
    await resultsOf(threeUrl, ['cancelled', 'cancelled', 'cancelled']);
  });

  it('lets a handler spawn child tasks and a step that runs with all their results (ctx.spawn), once even if it runs again', async () => {
    const { call } = await stack();
    const { json } = await call('POST', '/tasks', { type: 'report_coordinator', input: { topic: 'chips, cloud, power, water', parts: 4 } });
    let result: { workflow_id: string; steps: Record<string, string> } | undefined;
    await waitFor('the coordinator done', async () => {
      const t = (await call('GET', `/tasks/${String(json.task_id)}`)).json;
      result = t.result as typeof result;
      return t.status === 'done';
    });
    expect(Object.keys(result?.steps ?? {}).sort()).toEqual(['analyst-1', 'analyst-2', 'analyst-3', 'analyst-4', 'writer']);
    const url = `/workflows/${result?.workflow_id}`;
    await waitFor('the spawned workflow done', async () => (await call('GET', url)).json.status === 'done');
    const view = (await call('GET', url)).json as unknown as WorkflowView;
    expect(view.parent_task_id).toBe(json.task_id);
    const writer = view.steps.find((s) => s.id === 'writer');
    expect(writer?.needs).toHaveLength(4);
    expect((writer?.result as { sections: unknown[] }).sections).toHaveLength(4);
  });
});

describe('POST /workflows with an Idempotency-Key', () => {
  const pair = (content = 'first') => ({
    name: 'pair',
    steps: [
      { id: 'a', type: 'agent', input: { content } },
      { id: 'b', type: 'agent', input: { content: 'second' }, needs: ['a'] },
    ],
  });

  it('answers the same workflow again with Idempotent-Replayed, a different body with a 422 naming it; its keys are apart from POST /tasks', async () => {
    const { call } = await stack();
    const key = { 'idempotency-key': 'wf-order-4711' };
    const first = await call('POST', '/workflows', pair(), key);
    expect(first.res.status, JSON.stringify(first.json)).toBe(202);
    expect(first.res.headers.get('idempotent-replayed')).toBeNull();
    // The same request (its keys in another order), twice: the first workflow, as the first answer gave it.
    const { steps, name } = pair();
    for (const body of [pair(), { steps, name }]) {
      const replay = await call('POST', '/workflows', body, key);
      expect(replay.res.status).toBe(202);
      expect(replay.res.headers.get('idempotent-replayed')).toBe('true');
      expect(replay.res.headers.get('location')).toBe(first.res.headers.get('location'));
      const { status, ...rest } = replay.json;
      expect(rest).toEqual({ ...first.json, status: undefined });
      expect(['running', 'done']).toContain(status);
    }
    expect(((await call('GET', '/workflows')).json.workflows as { workflow_id: string }[]).map((w) => w.workflow_id)).toEqual([first.json.workflow_id]);
    // Another request under the key: 422, naming the workflow the key started; nothing new starts.
    for (const other of [pair('other'), { ...pair(), name: 'renamed' }, { ...pair(), user_id: 'u2' }]) {
      const reused = await call('POST', '/workflows', other, key);
      expect(reused.res.status, JSON.stringify(other)).toBe(422);
      expect(reused.json.error).toMatchObject({ code: 'idempotency_key_reused', workflow_id: first.json.workflow_id });
      expect((reused.json.error as { message: string }).message).toContain(`workflow ${String(first.json.workflow_id)}`);
    }
    expect((await call('GET', '/workflows')).json.workflows).toHaveLength(1);
    // The same header value on POST /tasks is a binding of its own: a task, then that task again.
    const task = await call('POST', '/tasks', { type: 'agent', input: { content: 'x' } }, key);
    expect(task.res.status).toBe(202);
    expect(task.res.headers.get('idempotent-replayed')).toBeNull();
    const again = await call('POST', '/tasks', { type: 'agent', input: { content: 'x' } }, key);
    expect([again.res.headers.get('idempotent-replayed'), again.json.task_id]).toEqual(['true', task.json.task_id]);

    // A template: its name and input (defaults filled in) are the request.
    const tkey = { 'idempotency-key': 'wf-template' };
    const report = await call('POST', '/workflows', { template: 'seed_report', input: { topic: 'batteries' } }, tkey);
    expect(report.res.status).toBe(202);
    const replayed = await call('POST', '/workflows', { template: 'seed_report', input: { topic: 'batteries' } }, tkey);
    expect([replayed.res.headers.get('idempotent-replayed'), replayed.json.workflow_id, replayed.json.steps]).toEqual([
      'true',
      report.json.workflow_id,
      report.json.steps,
    ]);
    expect((await call('POST', '/workflows', { template: 'seed_report', input: { topic: 'chips' } }, tkey)).res.status).toBe(422);
    // Without a key every request starts a workflow; a malformed key is a 400.
    const [x, y] = [await call('POST', '/workflows', pair()), await call('POST', '/workflows', pair())];
    expect(x.json.workflow_id).not.toBe(y.json.workflow_id);
    const bad = await call('POST', '/workflows', pair(), { 'idempotency-key': 'two words' });
    expect([bad.res.status, (bad.json.error as { issues: { path: string }[] }).issues[0]?.path]).toEqual([400, 'Idempotency-Key']);
  });

  it('a replay while the first request publishes the first steps waits for it: 202 once they are out, 503 if that failed (and the key is free again)', async () => {
    const { broker, store, call } = await stack({ requestTimeoutMs: 300 });
    const publish = broker.publish.bind(broker);
    let mode: 'slow' | 'fail' | 'ok' = 'slow';
    let out = 0;
    broker.publish = async (topic: string, m: OutgoingMessage) => {
      if (topic.startsWith('req') && mode === 'slow') await new Promise((r) => setTimeout(r, 150));
      if (topic.startsWith('req') && mode === 'fail') await new Promise((_, reject) => setTimeout(() => reject(new Error('broker stalled')), 400));
      await publish(topic, m);
      if (topic.startsWith('req')) out++;
    };
    const fan = { steps: [1, 2, 3].map((n) => ({ id: `s${n}`, type: 'agent', input: { content: `part ${n}` } })) };
    const slow = { 'idempotency-key': 'slow' };
    const firstP = call('POST', '/workflows', fan, slow);
    await new Promise((r) => setTimeout(r, 30));
    const replays = await Promise.all([1, 2, 3].map(() => call('POST', '/workflows', fan, slow).then((r) => ({ ...r, out }))));
    const first = await firstP;
    expect(first.res.status).toBe(202);
    for (const r of replays) {
      expect(r.res.status).toBe(202);
      expect(r.res.headers.get('idempotent-replayed')).toBe('true');
      expect(r.json.workflow_id).toBe(first.json.workflow_id);
      // Answered only once all three first steps were out.
      expect(r.out).toBe(3);
    }

    // The publish fails after the request timeout: the first request and its replays answer 503, and the workflow is cancelled.
    mode = 'fail';
    const broken = { 'idempotency-key': 'broken' };
    const failingP = call('POST', '/workflows', fan, broken);
    await new Promise((r) => setTimeout(r, 30));
    const failedReplays = await Promise.all([1, 2].map(() => call('POST', '/workflows', fan, broken)));
    const failing = await failingP;
    expect(failing.res.status).toBe(503);
    for (const r of failedReplays) {
      expect(r.res.status).toBe(503);
      expect((r.json.error as { message: string }).message).toMatch(/did not accept the first steps of workflow/);
    }
    const listed = (await store.listWorkflows('default', 10)).workflows;
    expect(listed.map((w) => w.status)).toEqual(['cancelled', expect.stringMatching(/^(running|done)$/)]);
    // Once the broker is back, the retry under the same key starts the workflow anew, and that one replays.
    mode = 'ok';
    const retry = await call('POST', '/workflows', fan, broken);
    expect(retry.res.status).toBe(202);
    expect(retry.res.headers.get('idempotent-replayed')).toBeNull();
    expect(retry.json.workflow_id).not.toBe(listed[0]?.id);
    expect((await call('POST', '/workflows', fan, broken)).json.workflow_id).toBe(retry.json.workflow_id);
  });

  it('a replay never answers 202 for a workflow whose first publish failed and which could not be cancelled yet', async () => {
    const { broker, store, call } = await stack({ requestTimeoutMs: 300 });
    const publish = broker.publish.bind(broker);
    broker.publish = (topic: string, m: OutgoingMessage) =>
      topic.startsWith('req') ? new Promise((_, reject) => setTimeout(() => reject(new Error('broker stalled')), 400)) : publish(topic, m);
    store.cancelWorkflow = () => Promise.reject(new Error('redis timeout'));
    const key = { 'idempotency-key': 'stuck' };
    const firstP = call('POST', '/workflows', pair(), key);
    await new Promise((r) => setTimeout(r, 30));
    const replay = await call('POST', '/workflows', pair(), key);
    expect((await firstP).res.status).toBe(503);
    expect(replay.res.status).toBe(503);
    expect((replay.json.error as { message: string }).message).toMatch(/has not published the first steps of workflow .* yet; retry with the same key/);
    expect((await store.listWorkflows('default', 10)).workflows.map((w) => w.status)).toEqual(['running']);
  });
});

describe('delayed tasks, reruns and dead letters over HTTP', () => {
  it('keeps a task scheduled until delay_ms has passed, then runs it; refuses run_at with delay_ms and a delay past 30 days', async () => {
    const { call } = await stack();
    const { res, json } = await call('POST', '/tasks', { type: 'agent', input: { content: 'later' }, delay_ms: 600 });
    expect(res.status).toBe(202);
    expect(json).toMatchObject({ status: 'scheduled' });
    const runAt = Date.parse(String(json.run_at));
    expect(runAt).toBeGreaterThan(Date.now() + 300);
    const path = `/tasks/${String(json.task_id)}`;
    expect((await call('GET', path)).json).toMatchObject({ status: 'scheduled', run_at: json.run_at });
    await waitFor('the delayed task done', async () => (await call('GET', path)).json.status === 'done', { timeoutMs: 5000 });
    const started = Date.parse(String((await call('GET', path)).json.started_at));
    expect(started).toBeGreaterThanOrEqual(runAt);

    const both = await call('POST', '/tasks', { type: 'agent', input: { content: 'x' }, delay_ms: 10, run_at: new Date().toISOString() });
    expect(both.res.status).toBe(400);
    expect(JSON.stringify(both.json)).toContain('run_at');
    const far = await call('POST', '/tasks', { type: 'agent', input: { content: 'x' }, run_at: new Date(Date.now() + 40 * 86_400_000).toISOString() });
    expect(far.res.status).toBe(400);
    const bad = await call('POST', '/tasks', { type: 'agent', input: { content: 'x' }, run_at: 'tomorrow' });
    expect(bad.res.status).toBe(400);
    expect((bad.json.error as { issues: { path: string }[] }).issues[0]?.path).toBe('run_at');
  });

  it('lists dead letters, reruns one (history kept, marked) and redrives the rest by error code', async () => {
    const { call } = await stack();
    broken.on = true;
    const a = (await call('POST', '/tasks', { type: 'flaky', input: { n: 1 } })).json;
    await waitFor('a failed', async () => (await call('GET', `/tasks/${String(a.task_id)}`)).json.status === 'failed');
    const b = (await call('POST', '/tasks', { type: 'flaky', input: { n: 2 } })).json;
    await waitFor('b failed', async () => (await call('GET', `/tasks/${String(b.task_id)}`)).json.status === 'failed');
    const c = (await call('POST', '/tasks', { type: 'flaky', input: { n: 3, code: 'other_error' } })).json;
    await waitFor('all failed', async () => (await call('GET', `/tasks/${String(c.task_id)}`)).json.status === 'failed');
    const dead = (await call('GET', '/dead-letters')).json.dead_letters as { task_id: string; code: string }[];
    expect(dead.map((d) => d.task_id)).toEqual([c.task_id, b.task_id, a.task_id]);
    expect((await call('GET', '/dead-letters?code=other_error')).json.dead_letters).toHaveLength(1);

    broken.on = false;
    // Not failed: 409.
    const done = (await call('POST', '/tasks', { type: 'agent', input: { content: 'ok' } })).json;
    await waitFor('done', async () => (await call('GET', `/tasks/${String(done.task_id)}`)).json.status === 'done');
    expect((await call('POST', `/tasks/${String(done.task_id)}/retry`)).json.error).toMatchObject({ code: 'task_not_retryable' });

    const retried = await call('POST', `/tasks/${String(a.task_id)}/retry`);
    expect(retried.res.status).toBe(202);
    expect(retried.json).toMatchObject({ status: 'queued', attempts: 0, reruns: 1, error: null });
    await waitFor('the rerun done', async () => (await call('GET', `/tasks/${String(a.task_id)}`)).json.status === 'done');
    const history = (await call('GET', `/tasks/${String(a.task_id)}?history=true`)).json.history as { event: string; data: { rerun?: number } }[];
    expect(history.map((e) => e.event)).toEqual(['status', 'status', 'failed', 'status', 'status', 'done']);
    expect(history[3]?.data.rerun).toBe(1);

    const redrive = await call('POST', '/dead-letters/redrive', { code: 'upstream_down' });
    expect(redrive.json).toEqual({ redriven: 1, task_ids: [b.task_id] });
    await waitFor('redriven done', async () => (await call('GET', `/tasks/${String(b.task_id)}`)).json.status === 'done');
    expect(((await call('GET', '/dead-letters')).json.dead_letters as { task_id: string }[]).map((d) => d.task_id)).toEqual([c.task_id]);
    expect((await call('POST', '/dead-letters/redrive', { code: 'x', bogus: 1 })).res.status).toBe(400);
  });
});
