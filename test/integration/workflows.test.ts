/**
 * Workflows on the real brokers, under the chaos test's worker kills: seed 001's report
 * (research → three analysts → writer) several times over while a worker is SIGKILLed every
 * few seconds and a fresh one started. Every step must end done and each writer (the fan-in)
 * be readied exactly once. A delayed task and a dead-letter redrive ride along on each broker.
 */
import { afterAll, describe, expect, it } from 'vitest';
import type { RedisTaskStore } from '../../common/store/redis.ts';
import type { WorkflowView } from '../../common/views.ts';
import { killAll, startApi, startEntry, type Child } from '../support/processes.ts';
import { createRocketTopics, isolatedRun, redisStore } from '../support/services.ts';
import { sleep, waitFor } from '../support/wait.ts';

const WORKFLOWS = 6;
const KILL_EVERY_MS = 2000;
/** Enough to hit steps mid-run; each kill costs RocketMQ a 10 s redelivery (its invisible time), so fewer there. */
const MAX_KILLS = { kafka: 5, rocketmq: 3 } as const;

describe.each(['kafka', 'rocketmq'] as const)('workflows on %s', (broker) => {
  let store: RedisTaskStore | undefined;
  afterAll(async () => {
    await store?.close();
    await killAll();
  });

  it(
    'runs every step of every workflow to done while workers are killed, readies each fan-in step once, runs a delayed task when due and redrives a dead letter',
    { timeout: 240_000 },
    async () => {
      const { prefix, names, env } = isolatedRun('workflows', broker, {
        KAFKA_SESSION_TIMEOUT_MS: '2000',
        MQ_INVISIBLE_MS: '10000',
        LEASE_MS: '6000',
        WORKER_CONCURRENCY: '4',
        RELAY_AFTER_MS: '2000',
        RETRY_BASE_MS: '200',
        RETRY_MAX_MS: '1000',
        MAX_ATTEMPTS: '20',
      });
      if (broker === 'rocketmq') await createRocketTopics([...names.requests, names.result, names.deadLetter], [...names.groups]);
      const st = await redisStore({ keyPrefix: prefix });
      store = st;
      const api = await startApi(env);
      const call = async (method: string, path: string, body?: unknown) => {
        const res = await fetch(`${api.url}${path}`, {
          method,
          headers: { 'content-type': 'application/json' },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        });
        return { status: res.status, json: (await res.json()) as Record<string, unknown> };
      };
      let started = 0;
      const spawnWorker = () => startEntry(`wf-worker-${++started}`, 'run-worker.ts', { ...env, WORKER_ID: `wf-worker-${started}` });
      const live: Child[] = [spawnWorker(), spawnWorker()];
      await Promise.all(live.map((w) => w.waitForLine(/worker started/)));

      const delayed = await call('POST', '/tasks', { type: 'agent', input: { content: 'later' }, delay_ms: 2500 });
      expect(delayed.status).toBe(202);
      expect(delayed.json.status).toBe('scheduled');
      // Fails on its only attempt: a dead letter.
      const doomed = await call('POST', '/tasks', { type: 'agent', input: { content: 'doomed', fail_times: 1 }, max_attempts: 1 });
      expect(doomed.status).toBe(202);

      const ids: string[] = [];
      for (let i = 0; i < WORKFLOWS; i++) {
        const { status, json } = await call('POST', '/workflows', { template: 'seed_report', input: { topic: `topic ${i}`, simulate_ms: 300 } });
        expect(status, JSON.stringify(json)).toBe(202);
        ids.push(String(json.workflow_id));
      }

      let kills = 0;
      let allDone = false;
      const monkey = (async () => {
        while (!allDone && kills < MAX_KILLS[broker]) {
          await sleep(KILL_EVERY_MS);
          if (allDone) break;
          const victim = live.splice(Math.floor(Math.random() * live.length), 1)[0];
          if (!victim) continue;
          victim.proc.kill('SIGKILL');
          kills++;
          live.push(spawnWorker());
        }
      })();
      const views = new Map<string, WorkflowView>();
      try {
        await waitFor(
          `all ${WORKFLOWS} workflows done`,
          async () => {
            for (const id of ids) views.set(id, (await call('GET', `/workflows/${id}`)).json as unknown as WorkflowView);
            return [...views.values()].every((v) => v.status === 'done');
          },
          { timeoutMs: 180_000, intervalMs: 1000 },
        );
      } catch (err) {
        const stuck = [...views.values()]
          .filter((v) => v.status !== 'done')
          .map((v) => `${v.status}: ${v.steps.map((s) => `${s.id}=${s.status}/${s.attempts}`).join(' ')}`);
        process.stderr.write(`[workflows ${broker}] not done after ${kills} kills: ${stuck.join('; ')}\n`);
        throw err;
      } finally {
        allDone = true;
        await monkey;
      }
      process.stderr.write(`[workflows ${broker}] ${WORKFLOWS} workflows done with ${kills} worker kills\n`);
      expect(kills, 'workers were killed while the workflows ran').toBeGreaterThan(0);
      for (const v of views.values()) {
        expect(v.steps.map((s) => s.status)).toEqual(['done', 'done', 'done', 'done', 'done']);
        const writer = v.steps.find((s) => s.id === 'writer');
        const history = await st.events(writer?.task_id ?? '', null, 1000);
        // Readied (waiting → queued) once, and ended done once, however many workers died.
        expect(history.filter((e) => e.type === 'status' && e.data.status === 'queued' && e.data.attempt === 0)).toHaveLength(1);
        expect(history.filter((e) => e.type === 'done')).toHaveLength(1);
        expect((writer?.result as { sections: unknown[] }).sections).toHaveLength(3);
      }

      // The delayed task ran, not before its time.
      const later = (await call('GET', `/tasks/${String(delayed.json.task_id)}`)).json;
      expect(later.status).toBe('done');
      expect(Date.parse(String(later.started_at))).toBeGreaterThanOrEqual(Date.parse(String(delayed.json.run_at)));

      // The dead letter is listed and redriven through the broker: a worker runs it again.
      await waitFor('the doomed task failed', async () => (await call('GET', `/tasks/${String(doomed.json.task_id)}`)).json.status === 'failed');
      const dead = (await call('GET', '/dead-letters')).json.dead_letters as { task_id: string }[];
      expect(dead.map((d) => d.task_id)).toContain(doomed.json.task_id);
      expect((await call('POST', '/dead-letters/redrive', { task_ids: [doomed.json.task_id] })).json).toMatchObject({ redriven: 1 });
      await waitFor('the redriven task ran again', async () => {
        const h = await st.events(String(doomed.json.task_id), null, 1000);
        return h.filter((e) => e.type === 'failed').length === 2;
      });
      const history = await st.events(String(doomed.json.task_id), null, 1000);
      expect(history.filter((e) => e.type === 'status' && e.data.status === 'running')).toHaveLength(2);
      expect(history.some((e) => e.type === 'status' && e.data.rerun === 1)).toBe(true);
    },
  );
});
