/**
 * End to end, as users run it: the API and two workers as child processes on a real broker
 * and a real Redis; 500 tasks posted over HTTP; a worker killed with SIGKILL mid-run; an
 * independent downstream consumer group reading the result topic with the broker's own client.
 */
import { randomUUID } from 'node:crypto';
import { Kafka, logLevel } from 'kafkajs';
import { FilterExpression, SimpleConsumer } from 'rocketmq-client-nodejs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RedisTaskStore } from '../../common/store/redis.ts';
import type { ResultMessage } from '../../common/task.ts';
import { killAll, startApi, startEntry, taskLogCounts, type Child } from '../support/processes.ts';
import { createRocketTopics, isolatedRun, redisStore, services } from '../support/services.ts';
import { waitFor } from '../support/wait.ts';

const TASKS = 500;
const KILL_AFTER_RESULTS = 100;

interface Downstream {
  results: Map<string, ResultMessage[]>;
  /** Every message by key, as received (body and headers), for the dead-letter checks. */
  raw: Map<string, { body: string; headers: Record<string, string> }>;
  stop(): Promise<void>;
}

/** A downstream service on Kafka: its own consumer group, plain kafkajs. */
async function kafkaDownstream(topic: string, group: string, parseResults = true): Promise<Downstream> {
  const kafka = new Kafka({ brokers: services().KAFKA_BROKERS.split(','), clientId: 'downstream', logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: group });
  const results = new Map<string, ResultMessage[]>();
  const raw: Downstream['raw'] = new Map();
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  await consumer.run({
    eachMessage: ({ message }) => {
      const body = message.value?.toString() ?? '';
      const headers = Object.fromEntries(Object.entries(message.headers ?? {}).map(([k, v]) => [k, String(v)]));
      raw.set(message.key?.toString() ?? '', { body, headers });
      if (parseResults) {
        const r = JSON.parse(body) as ResultMessage;
        results.set(r.task_id, [...(results.get(r.task_id) ?? []), r]);
      }
      return Promise.resolve();
    },
  });
  return { results, raw, stop: () => consumer.disconnect() };
}

/** A downstream service on RocketMQ: its own consumer group, plain rocketmq-client-nodejs. */
async function rocketDownstream(topic: string, group: string, parseResults = true): Promise<Downstream> {
  const consumer = new SimpleConsumer({
    endpoints: services().MQ_ENDPOINT,
    namespace: '',
    consumerGroup: group,
    subscriptions: new Map([[topic, FilterExpression.SUB_ALL]]),
    awaitDuration: 2000,
    // The proxy refuses a long poll whose deadline leaves it too little time: keep a margin.
    requestTimeout: 5000,
    logger: { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined },
  });
  await consumer.startup();
  const results = new Map<string, ResultMessage[]>();
  const raw: Downstream['raw'] = new Map();
  let stopping = false;
  const loop = (async () => {
    while (!stopping) {
      try {
        for (const m of await consumer.receive(32, 15_000)) {
          const body = m.body.toString('utf8');
          raw.set(m.keys[0] ?? '', { body, headers: Object.fromEntries(m.properties) });
          if (parseResults) {
            const r = JSON.parse(body) as ResultMessage;
            results.set(r.task_id, [...(results.get(r.task_id) ?? []), r]);
          }
          await consumer.ack(m);
        }
      } catch {
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  })();
  return {
    results,
    raw,
    stop: async () => {
      stopping = true;
      await loop;
      await consumer.shutdown();
    },
  };
}

async function post(url: string, body: unknown, contentType = 'application/json'): Promise<Response> {
  return fetch(`${url}/tasks`, { method: 'POST', headers: { 'content-type': contentType }, body: typeof body === 'string' ? body : JSON.stringify(body) });
}

describe.each(['kafka', 'rocketmq'] as const)('pipeline on %s', (broker) => {
  const {
    prefix,
    names: base,
    env,
  } = isolatedRun('e2e', broker, {
    KAFKA_PARTITIONS: '8',
    // Short enough that a killed worker's partitions and leases move on within seconds.
    KAFKA_SESSION_TIMEOUT_MS: '6000',
    MQ_INVISIBLE_MS: '10000',
    LEASE_MS: '5000',
    WORKER_CONCURRENCY: '8',
    RELAY_AFTER_MS: '3000',
    SHUTDOWN_GRACE_MS: '10000',
    API_BODY_LIMIT: String(64 * 1024),
  });
  const names = { ...base, downstream: `${base.group}-downstream` };
  let api: { child: Child; url: string };
  let workers: Child[];
  let store: RedisTaskStore;
  let downstream: Downstream;

  beforeAll(async () => {
    if (broker === 'rocketmq')
      await createRocketTopics([...names.requests, names.result, names.deadLetter], [...names.groups, names.downstream, `${names.downstream}-dlq`]);
    store = await redisStore({ keyPrefix: prefix });
    // The API creates the Kafka topics; start it first so consumers find them.
    api = await startApi(env);
    workers = [
      startEntry('worker-a', 'run-worker.ts', { ...env, WORKER_ID: 'worker-a' }),
      startEntry('worker-b', 'run-worker.ts', { ...env, WORKER_ID: 'worker-b' }),
    ];
    await Promise.all(workers.map((w) => w.waitForLine(/worker started/)));
    downstream = broker === 'kafka' ? await kafkaDownstream(names.result, names.downstream) : await rocketDownstream(names.result, names.downstream);
  });

  afterAll(async (ctx) => {
    if (ctx.tasks.some((t) => t.result?.state === 'fail')) {
      for (const c of [api?.child, ...(workers ?? [])]) if (c) process.stderr.write(`--- ${c.name} (last lines)\n${c.lines.slice(-15).join('\n')}\n`);
    }
    await downstream?.stop();
    await store?.close();
    await killAll();
  });

  it(`runs ${TASKS} tasks to done through a SIGKILL of a worker, each done once, every result on the result topic`, async () => {
    const began = Date.now();
    const ids: string[] = [];
    const queue = Array.from({ length: TASKS }, (_, i) => i);
    await Promise.all(
      Array.from({ length: 20 }, async () => {
        for (let i = queue.shift(); i !== undefined; i = queue.shift()) {
          const res = await post(api.url, {
            type: 'agent',
            user_id: `user-${i % 7}`,
            input: { content: `task ${i}: 机械键盘降价了, great discount`, simulate_ms: 25 },
          });
          expect(res.status).toBe(202);
          ids.push(((await res.json()) as { task_id: string }).task_id);
        }
      }),
    );
    const postedMs = Date.now() - began;

    const [victim, survivor] = workers as [Child, Child];
    await waitFor(`${KILL_AFTER_RESULTS} results`, () => downstream.results.size >= KILL_AFTER_RESULTS, { timeoutMs: 120_000 });
    const inFlightAtKill = victim.records().filter((r) => r.msg === 'task started').length - victim.records().filter((r) => r.msg === 'task done').length;
    victim.proc.kill('SIGKILL');
    const killedAt = Date.now() - began;

    await waitFor(
      `all ${TASKS} tasks done`,
      async () => {
        const recs = await Promise.all(ids.map((id) => store.get(id)));
        return recs.every((r) => r?.status === 'done');
      },
      { timeoutMs: 180_000, intervalMs: 500 },
    );
    const doneMs = Date.now() - began;
    await waitFor(`a result message for each of the ${TASKS} tasks`, () => ids.every((id) => downstream.results.has(id)), { timeoutMs: 60_000 });

    // Each task reached done once: one 'task done' per task across the workers' logs.
    const { done: doneLogs, starts: startLogs } = taskLogCounts(workers);
    expect([...doneLogs.values()].filter((n) => n > 1)).toEqual([]);
    expect(ids.filter((id) => (doneLogs.get(id) ?? 0) === 0).length).toBeLessThanOrEqual(inFlightAtKill);
    for (const id of ids) {
      const msgs = downstream.results.get(id) ?? [];
      expect(msgs.every((m) => m.status === 'done' && m.task_id === id)).toBe(true);
    }
    const repeatedRuns = [...startLogs.values()].reduce((a, n) => a + n - 1, 0);
    const duplicateResults = [...downstream.results.values()].reduce((a, m) => a + m.length - 1, 0);
    // The handler runs twice only for tasks the killed worker had in hand: at most its concurrency.
    expect(repeatedRuns).toBeLessThanOrEqual(Number(env.WORKER_CONCURRENCY));
    expect(survivor.alive()).toBe(true);

    process.stderr.write(
      `[e2e ${broker}] ${TASKS} tasks: posted in ${postedMs} ms, worker SIGKILLed at ${killedAt} ms with ~${inFlightAtKill} in flight, ` +
        `all done at ${doneMs} ms (${Math.round((TASKS * 1000) / doneMs)} tasks/s); repeated handler runs: ${repeatedRuns}; duplicate result messages: ${duplicateResults}\n`,
    );
  });

  it('answers bad input with 4xx naming the field, and stays up', async () => {
    const cases: [unknown, number, string][] = [
      ['{"user_id":', 400, 'body'],
      [{ user_id: 'u' }, 400, 'content'],
      [{ user_id: 'u', content: 42 }, 400, 'content'],
      [{ type: 'nope', input: {} }, 400, 'type'],
      [{ user_id: 'u', content: 'x'.repeat(100 * 1024) }, 413, ''],
    ];
    for (const [body, status, field] of cases) {
      const res = await post(api.url, body);
      expect(res.status).toBe(status);
      const json = (await res.json()) as { error: { message: string } };
      expect(json.error.message).toContain(field);
    }
    expect((await post(api.url, 'a=b', 'text/plain')).status).toBe(415);
    expect((await fetch(`${api.url}/tasks/not-a-uuid`)).status).toBe(400);
    expect((await fetch(`${api.url}/tasks/${randomUUID()}`)).status).toBe(404);
    expect((await fetch(`${api.url}/tasks`, { method: 'DELETE' })).status).toBe(405);
    expect((await fetch(`${api.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${api.url}/readyz`)).status).toBe(200);
    expect(api.child.alive()).toBe(true);
  });

  it('sends a poison message and a task that fails every attempt to the dead-letter topic; the worker keeps running', async () => {
    const dlqTopic = names.deadLetter;
    const dead =
      broker === 'kafka'
        ? await kafkaDownstream(dlqTopic, `${names.downstream}-dlq`, false)
        : await rocketDownstream(dlqTopic, `${names.downstream}-dlq`, false);
    try {
      const { createBroker } = await import('../../common/wiring.ts');
      const { loadConfig } = await import('../../common/config.ts');
      const { silentLogger } = await import('../../common/logger.ts');
      const producer = await createBroker(loadConfig(env), silentLogger);
      try {
        await producer.publish(names.request, { key: 'poison-1', body: 'this is not JSON' });
      } finally {
        await producer.close();
      }
      const res = await post(api.url, { type: 'agent', input: { content: 'doomed', fail_times: 99 }, user_id: 'dlq' });
      const { task_id } = (await res.json()) as { task_id: string };
      await waitFor('the poison message and the failed task in the dead letters', () => dead.raw.has('poison-1') && dead.raw.has(task_id), {
        timeoutMs: 90_000,
      });
      expect(dead.raw.get('poison-1')?.headers['dlq-code']).toBe('not_json');
      expect(dead.raw.get(task_id)?.headers['dlq-code']).toBe('handler_error');
      expect(await store.get(task_id)).toMatchObject({ status: 'failed', attempt: 3 });
      await waitFor('the failure result', () => downstream.results.get(task_id)?.[0]?.status === 'failed');
      expect((workers[1] as Child).alive()).toBe(true);
    } finally {
      await dead.stop();
    }
  });

  it('stops the API and the worker on SIGTERM with exit code 0', async () => {
    const survivor = workers[1] as Child;
    expect(await survivor.stop('SIGTERM')).toBe(0);
    expect(survivor.lines.some((l) => l.includes('worker stopped'))).toBe(true);
    expect(await api.child.stop('SIGTERM')).toBe(0);
  });
});
