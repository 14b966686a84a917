/**
 * Outages under load: Redis, then the broker (Kafka; RocketMQ's broker+proxy), is stopped and started again (same port, same data)
 * while clients keep posting. While a dependency is down the API answers 503 with
 * Retry-After — never a 500, never a hang past its request timeout — and /readyz says so;
 * the API and the workers reconnect on their own; afterwards every accepted task completes.
 *
 * The test starts a Redis and a broker of its own (the shared ones must not go down under
 * the other tests), with Redis persisting every write so a restart loses nothing.
 */
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CACHE_DIR, ensureDir, restartService, stopGroup, stopService, type ServiceHandle } from '../../infra/lib.ts';
import { startKafka } from '../../infra/kafka.ts';
import { startRedis } from '../../infra/redis.ts';
import { startRocketmq } from '../../infra/rocketmq.ts';
import { DEFAULT_KEY_PREFIX, RedisTaskStore } from '../../common/store/redis.ts';
import { killAll, startApi, startEntry, type Child } from '../support/processes.ts';
import { sleep, waitFor } from '../support/wait.ts';

const REQUEST_TIMEOUT_MS = 2000;

/** Stops the last process of a service (RocketMQ: the broker+proxy, not the name server). */
async function stopGroupOf(h: ServiceHandle): Promise<void> {
  const pid = h.pids.at(-1);
  if (pid !== undefined) await stopGroup(pid);
}

interface Answer {
  status: number;
  ms: number;
  retryAfter: string | null;
  taskId?: string;
  code?: string;
}

describe.each(['kafka', 'rocketmq'] as const)('outages of Redis and %s under load', (brokerKind) => {
  const handles: ServiceHandle[] = [];
  let store: RedisTaskStore | undefined;
  let api: { child: Child; url: string } | undefined;
  let workers: Child[] = [];

  afterAll(async (ctx) => {
    if (ctx.tasks.some((t) => t.result?.state === 'fail')) {
      for (const c of [api?.child, ...workers]) if (c) process.stderr.write(`--- ${c.name} (last lines)\n${c.lines.slice(-20).join('\n')}\n`);
    }
    await store?.close();
    await killAll();
    for (const h of handles.reverse()) await stopService(h);
  });

  it(
    'answers 503 with Retry-After while Redis or the broker is down, recovers by itself, and completes every accepted task',
    { timeout: 300_000 },
    async () => {
      const runDir = mkdtempSync(join(ensureDir(join(CACHE_DIR, 'test-runs')), 'outage-'));
      const log = (m: string) => process.stderr.write(`[outage ${brokerKind}] ${m}\n`);
      const redis = await startRedis({ runDir, log, persist: true });
      handles.push(redis);
      // The broker's own default topics and groups (RocketMQ's are created by its launcher).
      const mq = brokerKind === 'kafka' ? await startKafka({ runDir, log }) : await startRocketmq({ runDir, log });
      handles.push(mq);
      const env = {
        BROKER: brokerKind,
        ...redis.env,
        ...mq.env,
        MQ_INVISIBLE_MS: '10000',
        API_REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
        KAFKA_SESSION_TIMEOUT_MS: '6000',
        LEASE_MS: '4000',
        RELAY_AFTER_MS: '2000',
        WORKER_CONCURRENCY: '8',
        RETRY_BASE_MS: '200',
        RETRY_MAX_MS: '1000',
      };
      store = new RedisTaskStore({ host: redis.env.REDIS_HOST ?? '', port: Number(redis.env.REDIS_PORT), keyPrefix: DEFAULT_KEY_PREFIX });
      await store.connect(5000);
      api = await startApi(env);
      const url = api.url;
      workers = [
        startEntry('outage-w1', 'run-worker.ts', { ...env, WORKER_ID: 'outage-w1' }),
        startEntry('outage-w2', 'run-worker.ts', { ...env, WORKER_ID: 'outage-w2' }),
      ];
      await Promise.all(workers.map((w) => w.waitForLine(/worker started/)));

      // The load: 6 clients posting back to back until told to stop.
      const answers: Answer[] = [];
      let phase = 'up';
      const byPhase = new Map<string, Answer[]>();
      let stop = false;
      const post = async (i: number): Promise<Answer> => {
        const began = Date.now();
        const ac = new AbortController();
        const t = setTimeout(() => ac.abort(), 30_000);
        try {
          const res = await fetch(`${url}/tasks`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ type: 'agent', input: { content: `outage ${i}`, simulate_ms: 20 } }),
            signal: ac.signal,
          });
          const body = (await res.json()) as { task_id?: string; error?: { code: string } };
          return {
            status: res.status,
            ms: Date.now() - began,
            retryAfter: res.headers.get('retry-after'),
            ...(body.task_id ? { taskId: body.task_id } : {}),
            ...(body.error ? { code: body.error.code } : {}),
          };
        } catch (err) {
          return { status: 0, ms: Date.now() - began, retryAfter: null, code: String(err) };
        } finally {
          clearTimeout(t);
        }
      };
      let n = 0;
      const load = Promise.all(
        Array.from({ length: 6 }, async () => {
          while (!stop) {
            const a = await post(n++);
            answers.push(a);
            const list = byPhase.get(phase) ?? [];
            list.push(a);
            byPhase.set(phase, list);
            if (a.status !== 202) await sleep(100);
          }
        }),
      );
      const readyz = async () => (await fetch(`${url}/readyz`)).status;

      await sleep(2000);
      expect(await readyz()).toBe(200);

      /** One outage: `name` goes down for a few seconds under the load, then comes back. */
      const outage = async (name: string, handle: ServiceHandle, down: () => Promise<void>) => {
        phase = `${name} down`;
        await down();
        log(`${name} stopped`);
        await sleep(1500);
        expect(await readyz()).toBe(503);
        await sleep(2500);
        await restartService(handle);
        log(`${name} restarted`);
        phase = `${name} back`;
        await waitFor(`readyz after ${name}`, async () => (await readyz()) === 200, { timeoutMs: 60_000, intervalMs: 250 });
        await sleep(2500);
      };
      await outage('redis', redis, () => stopService(redis));
      // RocketMQ: the broker+proxy JVM goes; the name server stays.
      await outage('broker', mq, () => stopGroupOf(mq));
      stop = true;
      await load;

      const summary = [...byPhase].map(([p, list]) => {
        const counts = new Map<number, number>();
        for (const a of list) counts.set(a.status, (counts.get(a.status) ?? 0) + 1);
        return `${p}: ${[...counts].map(([s, c]) => `${s}x${c}`).join(' ')}, max ${Math.max(...list.map((a) => a.ms))} ms`;
      });
      log(summary.join('; '));

      // Never a 500, a dropped connection or a hang: 202, or 503 with Retry-After, in time.
      for (const a of answers) {
        expect([202, 503], JSON.stringify(a)).toContain(a.status);
        if (a.status === 503) expect(a.retryAfter, JSON.stringify(a)).toMatch(/^\d+$/);
        expect(a.ms, JSON.stringify(a)).toBeLessThan(2 * REQUEST_TIMEOUT_MS + 3000);
      }
      const during = [...(byPhase.get('redis down') ?? []), ...(byPhase.get('broker down') ?? [])];
      expect(during.filter((a) => a.status === 503).length).toBeGreaterThan(0);
      expect((byPhase.get('broker back') ?? []).filter((a) => a.status === 202).length).toBeGreaterThan(0);

      // Every accepted task completes; the workers were never restarted.
      const accepted = answers.flatMap((a) => (a.status === 202 && a.taskId ? [a.taskId] : []));
      const st = store;
      try {
        await waitFor(
          `all ${accepted.length} accepted tasks done`,
          async () => (await Promise.all(accepted.map((id) => st.get(id)))).every((r) => r?.status === 'done'),
          { timeoutMs: 120_000, intervalMs: 1000 },
        );
      } catch (err) {
        // Say what the unfinished ones look like, so a failure can be read.
        const left = (await Promise.all(accepted.map((id) => st.get(id)))).filter((r) => r?.status !== 'done');
        log(
          `not done: ${JSON.stringify(left.slice(0, 5).map((r) => r && { id: r.id, status: r.status, attempt: r.attempt, worker: r.worker, lease: r.leaseUntil, error: r.error }))} (${left.length} in all)`,
        );
        throw err;
      }
      for (const w of workers) expect(w.alive(), `${w.name} is still running`).toBe(true);
      expect(api.child.alive()).toBe(true);
      log(`${accepted.length} accepted tasks all done; ${answers.length - accepted.length} answered 503`);
    },
  );
});
