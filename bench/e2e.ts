/**
 * End-to-end benchmark (not part of `npm test`): starts Redis and a broker with the local
 * launchers, runs the API and N workers as processes, posts tasks over HTTP with a fixed
 * concurrency, and reports submit latency, end-to-end throughput and memory.
 *
 *   npm run bench -- --broker kafka --tasks 2000 --concurrency 32 --workers 2
 */
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { randomUUID } from 'node:crypto';
import { CACHE_DIR, ensureDir } from '../infra/lib.ts';
import { allRequestTopics, groupFor } from '../common/messages.ts';
import { PRIORITIES } from '../common/task.ts';
import { createTopics } from '../infra/rocketmq.ts';
import { envOf, startServices, stopServices } from '../infra/services.ts';
import { RedisTaskStore } from '../common/store/redis.ts';
import { killAll, startApi, startEntry } from '../test/support/processes.ts';
import { waitFor } from '../test/support/wait.ts';

const { values } = parseArgs({
  options: {
    broker: { type: 'string', default: 'kafka' },
    tasks: { type: 'string', default: '2000' },
    concurrency: { type: 'string', default: '32' },
    workers: { type: 'string', default: '2' },
    'worker-concurrency': { type: 'string', default: '16' },
    'simulate-ms': { type: 'string', default: '0' },
  },
});
const broker = values.broker as 'kafka' | 'rocketmq' | 'memory';
const TASKS = Number(values.tasks);
const CONC = Number(values.concurrency);
const WORKERS = Number(values.workers);

const rssMb = (pid: number | undefined): number => {
  if (pid === undefined) return NaN;
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/);
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
};
const pct = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] ?? NaN;

const runDir = mkdtempSync(join(ensureDir(join(CACHE_DIR, 'bench-runs')), 'run-'));
const handles = await startServices(broker === 'memory' ? ['redis'] : ['redis', broker], { runDir, log: (m) => process.stderr.write(`${m}\n`) });
try {
  const s = envOf(handles);
  const run = randomUUID().slice(0, 8);
  const prefix = `bench${run}:`;
  const env: Record<string, string> = {
    ...s,
    BROKER: broker,
    STORE: 'redis',
    REDIS_KEY_PREFIX: prefix,
    MQ_TOPIC_REQUEST: `bench-${run}-req`,
    MQ_TOPIC_RESULT: `bench-${run}-res`,
    MQ_GROUP_AGENT: `GID-bench-${run}`,
    WORKER_CONCURRENCY: values['worker-concurrency'] ?? '16',
  };
  if (broker === 'rocketmq') {
    // One request topic and one group per priority (common/messages.ts).
    const topics = [...allRequestTopics(env.MQ_TOPIC_REQUEST ?? ''), env.MQ_TOPIC_RESULT ?? ''];
    await createTopics(
      s.ROCKETMQ_NAMESRV ?? '',
      topics,
      PRIORITIES.map((p) => groupFor(env.MQ_GROUP_AGENT ?? '', p)),
    );
  }
  const api = await startApi(env);
  const workers = broker === 'memory' ? [] : Array.from({ length: WORKERS }, (_, i) => startEntry(`worker-${i}`, 'run-worker.ts', env));
  await Promise.all(workers.map((w) => w.waitForLine(/worker started/)));
  const store = new RedisTaskStore({ host: s.REDIS_HOST ?? '', port: Number(s.REDIS_PORT), keyPrefix: prefix });
  await store.connect();

  const latencies: number[] = [];
  const ids: string[] = [];
  let next = 0;
  const began = performance.now();
  await Promise.all(
    Array.from({ length: CONC }, async () => {
      for (let i = next++; i < TASKS; i = next++) {
        const t0 = performance.now();
        const res = await fetch(`${api.url}/tasks`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({
            type: 'agent',
            user_id: `u${i % 10}`,
            input: { content: `bench ${i} 机械键盘降价了`, simulate_ms: Number(values['simulate-ms']) },
          }),
        });
        latencies.push(performance.now() - t0);
        if (res.status !== 202) throw new Error(`POST answered ${res.status}: ${await res.text()}`);
        ids.push(((await res.json()) as { task_id: string }).task_id);
      }
    }),
  );
  const submitted = performance.now() - began;
  const rssApi = rssMb(api.child.proc.pid);
  const rssWorkers = workers.map((w) => rssMb(w.proc.pid));
  await waitFor('all tasks done', async () => (await Promise.all(ids.map((id) => store.get(id)))).every((t) => t?.status === 'done'), {
    timeoutMs: 600_000,
    intervalMs: 250,
  });
  const total = performance.now() - began;
  latencies.sort((a, b) => a - b);
  const report = {
    broker,
    tasks: TASKS,
    http_concurrency: CONC,
    workers: broker === 'memory' ? 'embedded' : `${WORKERS} x ${env.WORKER_CONCURRENCY}`,
    submit_per_s: Math.round((TASKS * 1000) / submitted),
    submit_ms: {
      p50: +pct(latencies, 50).toFixed(1),
      p95: +pct(latencies, 95).toFixed(1),
      p99: +pct(latencies, 99).toFixed(1),
      max: +(latencies.at(-1) ?? NaN).toFixed(1),
    },
    end_to_end_per_s: Math.round((TASKS * 1000) / total),
    end_to_end_s: +(total / 1000).toFixed(2),
    rss_mb: { api: rssApi, workers: rssWorkers },
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  await store.close();
} finally {
  await killAll();
  await stopServices(handles);
  rmSync(runDir, { recursive: true, force: true });
}
