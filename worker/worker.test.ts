import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { MemoryBroker } from '../common/broker/memory.ts';
import type { Delivery } from '../common/broker/port.ts';
import { nonRetryable } from '../common/errors.ts';
import { silentLogger } from '../common/logger.ts';
import { requestOutgoing } from '../common/messages.ts';
import { defineTaskType, TaskRegistry } from '../common/registry.ts';
import { startRelay } from '../common/relay.ts';
import { MemoryTaskStore } from '../common/store/memory.ts';
import type { NewTask, ResultMessage } from '../common/task.ts';
import { waitFor } from '../test/support/wait.ts';
import { agentTaskType } from './agent-logic.ts';
import { Worker, type WorkerOptions } from './worker.ts';

const options = (over: Partial<WorkerOptions> = {}): WorkerOptions => ({
  id: `w-${randomUUID().slice(0, 6)}`,
  requestTopic: 'req',
  resultTopic: 'res',
  group: 'workers',
  concurrency: 4,
  leaseMs: 5000,
  shutdownGraceMs: 2000,
  retryBaseMs: 20,
  retryMaxMs: 50,
  taskTimeoutMs: 5000,
  ...over,
});

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function harness(registry = new TaskRegistry().register(agentTaskType), over: Partial<WorkerOptions> = {}) {
  const store = new MemoryTaskStore({ takeoverDelayMs: 50 });
  const broker = new MemoryBroker({});
  const results: ResultMessage[] = [];
  void broker.subscribe('res', 'downstream', (d) => {
    results.push(JSON.parse(d.body) as ResultMessage);
    return Promise.resolve();
  });
  const dead: Delivery[] = [];
  void broker.subscribe('workers.DLQ', 'dlq-reader', (d) => {
    dead.push(d);
    return Promise.resolve();
  });
  const worker = new Worker({ broker, store, registry, logger: silentLogger, options: options(over) });
  const relay = startRelay({ store, broker, topic: 'req', logger: silentLogger, intervalMs: 20, holdMs: 200 });
  cleanups.push(
    () => broker.close({ graceMs: 0 }),
    () => relay.stop(),
    () => worker.shutdown(),
  );
  const submit = async (over: Partial<NewTask> = {}) => {
    const task: NewTask = {
      id: randomUUID(),
      type: 'agent',
      input: { content: 'I love this keyboard, great discount' },
      userId: 'u',
      priority: 'normal',
      maxAttempts: 3,
      createdAt: Date.now(),
      ...over,
    };
    await store.create(task, Date.now() + 60_000);
    await broker.publish('req', requestOutgoing(task));
    await store.disarmOutbox(task.id, 0);
    return task;
  };
  const delivery = (task: NewTask, attempt = 1): Delivery => ({ topic: 'req', attempt, headers: {}, tag: task.type, ...requestOutgoing(task) });
  return { store, broker, worker, results, dead, submit, delivery };
}

describe('Worker', () => {
  it('runs a task to done with progress, stores the result and publishes it', async () => {
    const h = harness();
    await h.worker.start();
    const task = await h.submit();
    await waitFor('done', async () => (await h.store.get(task.id))?.status === 'done');
    const rec = await h.store.get(task.id);
    expect(rec).toMatchObject({ status: 'done', progress: 100, attempt: 1, resultPublished: true });
    expect(rec?.result).toMatchObject({ sentiment: 'positive', stats: { words: 6 } });
    await waitFor('the result message', () => h.results.length === 1);
    expect(h.results[0]).toMatchObject({ v: 1, task_id: task.id, status: 'done', attempt: 1, user_id: 'u' });
    expect(h.results[0]?.result).toEqual(rec?.result);
  });

  it('never runs the handler again for a redelivered message of a finished task', async () => {
    let runs = 0;
    const registry = new TaskRegistry().register(
      defineTaskType({ name: 'agent', input: z.object({ content: z.string() }), handler: () => Promise.resolve(++runs) }),
    );
    const h = harness(registry);
    const task = await h.submit();
    expect(await h.worker.handle(h.delivery(task))).toBe('done');
    expect(await h.worker.handle(h.delivery(task, 2))).toBe('duplicate');
    expect(runs).toBe(1);
  });

  it('fails a task whose worker died on its last attempt (worker_lost): a failure result, a dead letter, no run', async () => {
    let runs = 0;
    const registry = new TaskRegistry().register(
      defineTaskType({ name: 'agent', input: z.object({ content: z.string() }), handler: () => Promise.resolve(++runs) }),
    );
    const h = harness(registry);
    const task = await h.submit({ maxAttempts: 1 });
    expect((await h.store.claim(task.id, 'dead-worker', 100)).outcome).toBe('claimed');
    await new Promise((r) => setTimeout(r, 150));
    expect(await h.worker.handle(h.delivery(task, 2))).toBe('failed');
    expect(runs).toBe(0);
    expect(h.worker.stats.workerLost).toBe(1);
    await waitFor('the failure result and the dead letter', () => h.results.length === 1 && h.dead.length === 1);
    expect(h.results[0]).toMatchObject({ task_id: task.id, status: 'failed', attempt: 1, tenant: 'default', error: { code: 'worker_lost' } });
    expect(h.dead[0]?.headers['dlq-code']).toBe('worker_lost');
  });

  it("defers a task over its tenant's running cap and acknowledges its message; the relay offers it again", async () => {
    const release: (() => void)[] = [];
    const registry = new TaskRegistry().register(
      defineTaskType({
        name: 'agent',
        input: z.object({ content: z.string() }),
        handler: () => new Promise<string>((resolve) => release.push(() => resolve('ok'))),
      }),
    );
    const h = harness(registry, { maxRunningPerTenant: 1, throttleMs: 50 });
    await h.worker.start();
    const [a, b] = [await h.submit({ tenant: 'acme' }), await h.submit({ tenant: 'acme' })];
    await waitFor('one of them deferred', () => h.worker.stats.throttled >= 1);
    const recs = await Promise.all([a, b].map((t) => h.store.get(t.id)));
    expect(recs.map((r) => r?.status).sort()).toEqual(['queued', 'running']);
    release.shift()?.();
    await waitFor('the second running', () => release.length === 1);
    release.shift()?.();
    await waitFor('both done', async () => (await Promise.all([a, b].map((t) => h.store.get(t.id)))).every((r) => r?.status === 'done'));
    expect(h.results.map((r) => r.tenant)).toEqual(['acme', 'acme']);
  });

  it('publishes the stored result when the first worker died between done and publish', async () => {
    const h = harness();
    const task = await h.submit();
    const claim = await h.store.claim(task.id, 'dead-worker', 5000);
    expect(claim.outcome).toBe('claimed');
    await h.store.complete(task.id, 'dead-worker', { from: 'the dead worker' });
    expect(await h.worker.handle(h.delivery(task, 2))).toBe('republished');
    await waitFor('the result', () => h.results.length === 1);
    expect(h.results[0]).toMatchObject({ status: 'done', result: { from: 'the dead worker' } });
    expect(await h.worker.handle(h.delivery(task, 3))).toBe('duplicate');
  });

  it('retries a failing handler with backoff, then succeeds', async () => {
    const h = harness();
    await h.worker.start();
    const task = await h.submit({ input: { content: 'flaky', fail_times: 2 } });
    await waitFor('done', async () => (await h.store.get(task.id))?.status === 'done', { timeoutMs: 5000 });
    expect(await h.store.get(task.id)).toMatchObject({ attempt: 3, status: 'done' });
    expect(h.worker.stats.retried).toBe(2);
  });

  it('fails after the last attempt and publishes a failure result', async () => {
    const h = harness();
    await h.worker.start();
    const task = await h.submit({ input: { content: 'hopeless', fail_times: 10 }, maxAttempts: 2 });
    await waitFor('failed', async () => (await h.store.get(task.id))?.status === 'failed', { timeoutMs: 5000 });
    expect(await h.store.get(task.id)).toMatchObject({ attempt: 2, error: { code: 'handler_error', retriable: true } });
    await waitFor('the failure result', () => h.results.length === 1);
    expect(h.results[0]).toMatchObject({ task_id: task.id, status: 'failed', error: { code: 'handler_error' } });
    await waitFor('the dead letter', () => h.dead.length === 1);
    expect(JSON.parse(h.dead[0]?.body ?? '{}')).toMatchObject({ task_id: task.id });
    expect(h.dead[0]?.headers).toMatchObject({ 'dlq-code': 'handler_error', 'dlq-delivery-attempt': '1' });
    expect(h.dead[0]?.headers['dlq-reason']).toContain('failed after 2 attempt(s)');
  });

  it('fails at once on a non-retryable error', async () => {
    const registry = new TaskRegistry().register(
      defineTaskType({ name: 'agent', input: z.object({ content: z.string() }), handler: () => Promise.reject(nonRetryable('bad input', 'invalid_input')) }),
    );
    const h = harness(registry);
    const task = await h.submit();
    expect(await h.worker.handle(h.delivery(task))).toBe('failed');
    expect(await h.store.get(task.id)).toMatchObject({ status: 'failed', attempt: 1, error: { code: 'invalid_input', retriable: false } });
  });

  it('sends poison messages to the dead-letter topic with the reason, and keeps going', async () => {
    const h = harness();
    const base = { topic: 'req', attempt: 1, headers: { traceparent: 't1' }, tag: undefined, key: 'k' };
    expect(await h.worker.handle({ ...base, body: 'not json' })).toBe('poison');
    expect(await h.worker.handle({ ...base, body: '{"v":1}' })).toBe('poison');
    const ghost: NewTask = { id: randomUUID(), type: 'agent', input: {}, userId: null, priority: 'normal', maxAttempts: 1, createdAt: Date.now() };
    expect(await h.worker.handle(h.delivery(ghost))).toBe('poison');
    await waitFor('three dead letters', () => h.dead.length === 3);
    expect(h.dead.map((d) => d.headers['dlq-code'])).toEqual(['not_json', 'schema_mismatch', 'unknown_task']);
    expect(h.dead[0]).toMatchObject({ body: 'not json', headers: { traceparent: 't1', 'dlq-source-topic': 'req' } });
    expect(h.dead[1]?.headers['dlq-reason']).toContain('task_id');
  });

  it('renews the lease of a long task so no other worker takes it', async () => {
    const h = harness(undefined, { leaseMs: 300 });
    await h.worker.start();
    const task = await h.submit({ input: { content: 'slow', simulate_ms: 300 } });
    await waitFor('running', async () => (await h.store.get(task.id))?.status === 'running');
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 200));
      expect((await h.store.claim(task.id, 'intruder', 300)).outcome).not.toBe('claimed');
    }
    await waitFor('done', async () => (await h.store.get(task.id))?.status === 'done', { timeoutMs: 5000 });
    expect((await h.store.get(task.id))?.attempt).toBe(1);
  });

  it('on shutdown finishes in-flight tasks within the grace period', async () => {
    const h = harness();
    await h.worker.start();
    const task = await h.submit({ input: { content: 'finish me', simulate_ms: 100 } });
    await waitFor('running', async () => (await h.store.get(task.id))?.status === 'running');
    await h.worker.shutdown();
    await h.worker.shutdown();
    expect(h.worker.currentState).toBe('stopped');
    expect((await h.store.get(task.id))?.status).toBe('done');
  });
});
