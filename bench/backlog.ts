/**
 * Backlog benchmark (not part of `npm test`): a backlog of `--tasks` tasks on Kafka drains with
 * every task `done` exactly once and the workers' memory flat. Starts a private Redis and Kafka,
 * the API alone, posts the tasks (32 in flight), and only then starts `--workers` workers. It
 * samples the workers' RSS every 2 s, and reports the drain rate, Redis bytes per finished task,
 * and the workers' own counters (SIGUSR2): tasks done, handler runs, duplicates dropped.
 *
 *   npm run bench:backlog -- --tasks 100000 --workers 2 --worker-concurrency 16
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request, Agent } from 'node:http';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createClient } from 'redis';
import { CACHE_DIR, ensureDir } from '../infra/lib.ts';
import { envOf, startServices, stopServices } from '../infra/services.ts';
import { killAll, startApi, startEntry, type Child } from '../test/support/processes.ts';

const { values } = parseArgs({
  options: {
    tasks: { type: 'string', default: '100000' },
    workers: { type: 'string', default: '2' },
    'worker-concurrency': { type: 'string', default: '16' },
    concurrency: { type: 'string', default: '32' },
  },
});
const TASKS = Number(values.tasks);
const WORKERS = Number(values.workers);
const CONC = Number(values.concurrency);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const rssMb = (pid: number | undefined): number => {
  const m = readFileSync(`/proc/${pid ?? 0}/status`, 'utf8').match(/VmRSS:\s+(\d+)/);
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
};

/** The counters a product process writes on SIGUSR2 (common/wiring.ts). */
async function statsOf(c: Child): Promise<Record<string, number>> {
  const seen = c.lines.length;
  c.proc.kill('SIGUSR2');
  for (let i = 0; i < 100; i++) {
    const line = c.lines.slice(seen).find((l) => l.includes('"process stats"'));
    if (line) return JSON.parse(line) as Record<string, number>;
    await sleep(20);
  }
  throw new Error(`${c.name} wrote no stats`);
}

const agent = new Agent({ keepAlive: true, maxSockets: CONC });
function post(url: string, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}/tasks`,
      { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const runDir = mkdtempSync(join(ensureDir(join(CACHE_DIR, 'bench-runs')), 'backlog-'));
const handles = await startServices(['redis', 'kafka'], { runDir, log: (m) => process.stderr.write(`${m}\n`) });
try {
  const s = envOf(handles);
  const run = randomUUID().slice(0, 8);
  const prefix = `{bl${run}}:`;
  const env: Record<string, string> = {
    ...s,
    BROKER: 'kafka',
    STORE: 'redis',
    LOG_LEVEL: 'warn',
    REDIS_KEY_PREFIX: prefix,
    MQ_TOPIC_REQUEST: `bl-${run}-req`,
    MQ_TOPIC_RESULT: `bl-${run}-res`,
    MQ_GROUP_AGENT: `GID-bl-${run}`,
    WORKER_CONCURRENCY: values['worker-concurrency'] ?? '16',
  };
  const redis = createClient({ socket: { host: s.REDIS_HOST ?? '', port: Number(s.REDIS_PORT) } });
  await redis.connect();
  const usedBytes = async () => Number((await redis.info('memory')).match(/used_memory:(\d+)/)?.[1] ?? NaN);
  const expiring = `${prefix}expiring`;
  const api = await startApi(env);
  const baseline = await usedBytes();

  process.stderr.write(`posting ${TASKS} tasks with no worker running\n`);
  let next = 0;
  let refused = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: CONC }, async () => {
      for (let i = next++; i < TASKS; i = next++) {
        const status = await post(api.url, JSON.stringify({ type: 'agent', user_id: `u${i % 50}`, input: { content: `backlog ${i} 机械键盘降价了` } }));
        if (status !== 202) refused++;
        if (i % 10_000 === 0) process.stderr.write(`  ${i} posted\n`);
      }
    }),
  );
  const postSeconds = (performance.now() - t0) / 1000;
  const accepted = TASKS - refused;

  const workers = Array.from({ length: WORKERS }, (_, i) => startEntry(`worker-${i}`, 'run-worker.ts', env));
  const began = performance.now();
  const rss: { t: number; mb: number[] }[] = [];
  let done = 0;
  while (done < accepted) {
    await sleep(2000);
    done = await redis.zCard(expiring);
    rss.push({ t: Math.round((performance.now() - began) / 1000), mb: workers.map((w) => rssMb(w.proc.pid)) });
    process.stderr.write(`  t=${rss.at(-1)?.t}s done=${done} rss=${rss.at(-1)?.mb.join('/')} MB\n`);
    if (performance.now() - began > 3_600_000) throw new Error('the backlog did not drain within an hour');
  }
  const drainSeconds = (performance.now() - began) / 1000;
  const used = await usedBytes();
  const stats = await Promise.all(workers.map((w) => statsOf(w)));
  const sum = (k: string) => stats.reduce((n, st) => n + (st[k] ?? 0), 0);
  // RSS after warm-up: from the first fifth of the drain on.
  const warm = rss.slice(Math.max(1, Math.floor(rss.length / 5)));
  const perWorker = workers.map((_, i) => warm.map((r) => r.mb[i] ?? NaN));
  const report = {
    tasks: TASKS,
    accepted,
    post_per_s: Math.round(accepted / postSeconds),
    drain_per_s: Math.round(accepted / drainSeconds),
    drain_s: +drainSeconds.toFixed(1),
    done_in_redis: done,
    workers_tasks_done: sum('tasks_done'),
    workers_handler_runs: sum('handler_runs'),
    workers_duplicates_dropped: sum('duplicates'),
    redis_bytes_per_finished_task: Math.round((used - baseline) / accepted),
    worker_rss_mb_after_warmup: perWorker.map((xs) => ({
      min: Math.min(...xs),
      max: Math.max(...xs),
      growth_pct: +(((Math.max(...xs) - Math.min(...xs)) / Math.min(...xs)) * 100).toFixed(1),
    })),
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  await redis.close();
} finally {
  agent.destroy();
  await killAll();
  await stopServices(handles);
  rmSync(runDir, { recursive: true, force: true });
}
