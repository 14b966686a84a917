/**
 * Side-by-side benchmark (not part of `npm test`): BullMQ behind the same Hono front and zod
 * schemas, and this product on its embedded default (memory), on Kafka and on RocketMQ, driven
 * by one load generator in one run on one machine.
 *
 *   npm run bench -- compare [--systems bullmq,memory,kafka,rocketmq] [--tasks 5000] [--concurrency 32]
 *                            [--rate N] [--open-seconds 10] [--workers 2] [--worker-concurrency 16] [--warmup 300]
 *                            [--auth keys|off] [--limits] [--tracing] [--isolate-brokers]
 *
 * --systems also takes memory-traced, kafka-traced and rocketmq-traced: the same system started
 * with OTEL_EXPORTER_OTLP_ENDPOINT set, every span exported over OTLP/HTTP to a sink this process
 * runs (started when any traced row is selected). Each is its own row with its own ratio to
 * BullMQ, run right after its untraced base, so tracing's cost is read within one run, e.g.
 * `--systems bullmq,memory,memory-traced,kafka,kafka-traced`. The report names the traced rows
 * and adds a table of each traced row against its base.
 * --tracing (as before): every one of our rows traced, i.e. memory, kafka, rocketmq are replaced
 * by their -traced variants; BullMQ is never traced. To measure tracing, list both variants instead.
 * --limits: our systems run with a quota and rate limits on but too high to refuse
 * (QUOTA_UNITS=1000000000, RATE_LIMIT_SUBMITS_PER_S=1000000, RATE_LIMIT_READS_PER_S=1000000),
 * so every submit and read goes through the quota and rate counters; each system is checked for
 * the RateLimit headers on a probe submit and read before its warm-up. BullMQ's front has none.
 *
 * Per system: warm-up; a closed loop (--tasks with --concurrency requests in flight) for submit
 * rate, submit latency and end-to-end rate, with the cost of that window (Redis commands from
 * INFO commandstats, and per process CPU, Redis round trips and broker requests from the
 * `process stats` line each process prints on SIGUSR2, or CPU from /proc without it); then an
 * open loop at a fixed offered rate (default half of BullMQ's closed-loop submit rate) for
 * submit, submit→running and submit→done latency. Then the raw ceilings of Redis and the brokers.
 * Prints a markdown table and writes it, with a JSON of the raw numbers, to bench/results/.
 */
import { execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { Kafka, logLevel } from 'kafkajs';
import { createClient } from 'redis';
import { newApiKey } from '../common/api-keys.ts';
import { allRequestTopics, groupFor } from '../common/messages.ts';
import { RedisTaskStore } from '../common/store/redis.ts';
import { PRIORITIES } from '../common/task.ts';
import { CACHE_DIR, REPO_ROOT, ensureDir, type ServiceHandle, type ServiceName } from '../infra/lib.ts';
import { createTopics } from '../infra/rocketmq.ts';
import { envOf, startServices, stopServices } from '../infra/services.ts';
import { kafkaCeiling, redisCeiling, rocketmqCeiling, type Ceiling } from './ceilings.ts';
import { HttpClient } from './http.ts';
import { procCpuUs, startChild, type BenchChild, type ProcStats } from './proc.ts';

/** The systems themselves; the order of the run (BullMQ first). */
const BASES = ['bullmq', 'memory', 'kafka', 'rocketmq'] as const;
type BaseSystem = (typeof BASES)[number];
/** Rows of a run: a system, or one of ours with tracing on, run right after its untraced base. */
const SYSTEMS = ['bullmq', 'memory', 'memory-traced', 'kafka', 'kafka-traced', 'rocketmq', 'rocketmq-traced'] as const;
type SystemName = (typeof SYSTEMS)[number];
const baseOf = (s: SystemName): BaseSystem => s.replace(/-traced$/, '') as BaseSystem;
const isTraced = (s: SystemName) => s.endsWith('-traced');

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    systems: { type: 'string', default: BASES.join(',') },
    tasks: { type: 'string', default: '5000' },
    concurrency: { type: 'string', default: '32' },
    rate: { type: 'string' },
    'open-seconds': { type: 'string', default: '10' },
    workers: { type: 'string', default: '2' },
    'worker-concurrency': { type: 'string', default: '16' },
    warmup: { type: 'string', default: '300' },
    /** Start Kafka and RocketMQ only for their own system (and ceiling) instead of once for the whole run. */
    'isolate-brokers': { type: 'boolean', default: false },
    /** API keys on our systems (the production default on a real broker), or off. BullMQ's front has none. */
    auth: { type: 'string', default: 'keys' },
    /** Every one of our rows traced (memory → memory-traced, ...): the -traced variants in --systems measure tracing within one run. */
    tracing: { type: 'boolean', default: false },
    /** Our systems with a quota and rate limits on, too high to refuse: the admission path with its counters. */
    limits: { type: 'boolean', default: false },
  },
});

function positive(name: string, v: string | undefined, allowZero = false): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || (!allowZero && n === 0))
    throw new Error(`--${name} must be a ${allowZero ? 'non-negative' : 'positive'} number (got ${String(v)})`);
  return n;
}

const wanted = (values.systems ?? '')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean);
const unknown = wanted.filter((s) => !(SYSTEMS as readonly string[]).includes(s));
if (unknown.length > 0 || wanted.length === 0) throw new Error(`--systems: choose from ${SYSTEMS.join(',')} (got ${values.systems ?? ''})`);
const TRACING = values.tracing ?? false;
/** --tracing, as before: every one of our rows traced. */
const rows = TRACING ? wanted.map((s) => (s === 'bullmq' || s.endsWith('-traced') ? s : `${s}-traced`)) : wanted;
/** BullMQ first: its closed-loop rate sets the open loop's default offered rate. A traced row right after its base. */
const systems = SYSTEMS.filter((s) => rows.includes(s));
const tracedRows = systems.filter(isTraced);
const TASKS = Math.round(positive('tasks', values.tasks));
const CONC = Math.round(positive('concurrency', values.concurrency));
const RATE = values.rate === undefined ? undefined : positive('rate', values.rate);
const OPEN_SECONDS = positive('open-seconds', values['open-seconds']);
const WORKERS = Math.round(positive('workers', values.workers));
const WORKER_CONC = Math.round(positive('worker-concurrency', values['worker-concurrency']));
const WARMUP = Math.round(positive('warmup', values.warmup, true));
const ISOLATE = values['isolate-brokers'] ?? false;
const AUTH = values.auth ?? 'keys';
const LIMITS = values.limits ?? false;
/** --limits: on, counted on every submit and read, and far above what this machine can offer (the maxima common/config.ts takes). */
const limitsEnv: Record<string, string> = LIMITS ? { QUOTA_UNITS: '1000000000', RATE_LIMIT_SUBMITS_PER_S: '1000000', RATE_LIMIT_READS_PER_S: '1000000' } : {};
/** OTEL_* settings for the processes of a traced row: every span exported to the sink. */
let otelEnv: Record<string, string> = {};
const otelEnvFor = (name: SystemName) => (isTraced(name) ? otelEnv : {});
/** OTLP export requests the sink took (each a batch of spans). */
let otlpExports = 0;
if (AUTH !== 'keys' && AUTH !== 'off') throw new Error(`--auth: keys or off (got ${AUTH})`);

const log = (msg: string) => process.stderr.write(`[compare ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const errMsg = (err: unknown) => (err instanceof Error ? err.message : String(err));

// ---------------------------------------------------------------- measurements

interface Submission {
  /** Date.now() when the request was sent. */
  sentAt: number;
  /** Scheduled send time (open loop), Date.now() scale. */
  scheduledAt: number;
  ms: number;
  id?: string;
  error?: string;
}

interface TaskTimes {
  status: string;
  startedAt: number | undefined;
  finishedAt: number | undefined;
}

const FINAL = new Set(['done', 'failed', 'cancelled']);

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
const sortNum = (xs: number[]) => [...xs].sort((a, b) => a - b);
/** Math.min/max without spreading (a long open loop has more values than a call takes arguments). */
const minOf = (xs: number[]) => xs.reduce((a, b) => (b < a ? b : a), Infinity);
const maxOf = (xs: number[]) => xs.reduce((a, b) => (b > a ? b : a), -Infinity);

let bodySeq = 0;
const taskBody = (i: number, tag: string) =>
  JSON.stringify({ type: 'agent', user_id: `u${i % 10}`, input: { content: `bench ${tag} ${i} ${bodySeq++} 机械键盘降价了, great discount` } });

async function submitOne(http: HttpClient, i: number, tag: string, scheduledAt?: number): Promise<Submission> {
  const body = taskBody(i, tag);
  const sentAt = Date.now();
  const t0 = performance.now();
  try {
    const a = await http.send('POST', '/tasks', body, 120_000);
    const ms = performance.now() - t0;
    if (a.status !== 202) return { sentAt, scheduledAt: scheduledAt ?? sentAt, ms, error: `POST /tasks answered ${a.status}: ${a.body.slice(0, 200)}` };
    const id = (JSON.parse(a.body) as { task_id?: unknown }).task_id;
    if (typeof id !== 'string')
      return { sentAt, scheduledAt: scheduledAt ?? sentAt, ms, error: `POST /tasks answered 202 without a task_id: ${a.body.slice(0, 200)}` };
    return { sentAt, scheduledAt: scheduledAt ?? sentAt, ms, id };
  } catch (err) {
    return { sentAt, scheduledAt: scheduledAt ?? sentAt, ms: performance.now() - t0, error: errMsg(err) };
  }
}

async function closedLoop(http: HttpClient, n: number, conc: number, tag: string): Promise<{ subs: Submission[]; seconds: number }> {
  const subs: Submission[] = new Array<Submission>(n);
  let next = 0;
  const began = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(conc, n) }, async () => {
      for (let i = next++; i < n; i = next++) subs[i] = await submitOne(http, i, tag);
    }),
  );
  return { subs, seconds: (performance.now() - began) / 1000 };
}

/** Sends `rate` requests a second for `seconds` on a timer, whatever the answers. */
async function openLoop(http: HttpClient, rate: number, seconds: number, tag: string): Promise<{ subs: Submission[]; maxLagMs: number }> {
  const total = Math.max(1, Math.round(rate * seconds));
  const interval = 1000 / rate;
  const pending: Promise<Submission>[] = [];
  const startPerf = performance.now() + 20;
  const startWall = Date.now() + 20;
  let maxLagMs = 0;
  let i = 0;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (i < total && startPerf + i * interval <= now) {
        maxLagMs = Math.max(maxLagMs, now - (startPerf + i * interval));
        pending.push(submitOne(http, i, tag, Math.round(startWall + i * interval)));
        i++;
      }
      if (i >= total) {
        resolve();
        return;
      }
      setTimeout(tick, Math.max(0, Math.min(4, startPerf + i * interval - performance.now())));
    };
    tick();
  });
  return { subs: await Promise.all(pending), maxLagMs };
}

async function getTimes(http: HttpClient, id: string): Promise<TaskTimes | undefined> {
  const { status, json } = await http.getJson<{ status?: string; started_at?: string | null; finished_at?: string | null }>(`/tasks/${id}`);
  if (status !== 200 || !json) return undefined;
  const ms = (s: string | null | undefined) => (s ? Date.parse(s) : undefined);
  return { status: json.status ?? '?', startedAt: ms(json.started_at), finishedAt: ms(json.finished_at) };
}

/**
 * Completion detection while the systems work: every 250 ms, the last few accepted tasks, so it
 * adds a handful of GETs a second. The same for every system; readAll checks every task after.
 */
async function waitLastDone(http: HttpClient, ids: string[], timeoutMs: number): Promise<void> {
  const probe = ids.slice(-8);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const views = await Promise.all(probe.map((id) => getTimes(http, id).catch(() => undefined)));
    if (views.every((v) => v && FINAL.has(v.status))) return;
    if (Date.now() > deadline)
      throw new Error(`the last tasks did not finish within ${timeoutMs / 1000} s (statuses: ${views.map((v) => v?.status ?? '?').join(', ')})`);
    await sleep(250);
  }
}

/** Every task's record, after the fact; tasks not yet final are polled until they are (or time runs out). */
async function readAll(http: HttpClient, ids: string[], timeoutMs: number): Promise<{ times: Map<string, TaskTimes>; stragglers: number; unfinished: number }> {
  const times = new Map<string, TaskTimes>();
  const readSome = async (list: string[]) => {
    let next = 0;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        for (let i = next++; i < list.length; i = next++) {
          const id = list[i] ?? '';
          const t = await getTimes(http, id).catch(() => undefined);
          if (t) times.set(id, t);
        }
      }),
    );
  };
  await readSome(ids);
  const notFinal = () => ids.filter((id) => !FINAL.has(times.get(id)?.status ?? ''));
  const stragglers = notFinal().length;
  const deadline = Date.now() + timeoutMs;
  for (let left = notFinal(); left.length > 0 && Date.now() < deadline; left = notFinal()) {
    await sleep(500);
    await readSome(left);
  }
  return { times, stragglers, unfinished: notFinal().length };
}

/**
 * Warms the load generator's own code (V8 optimises it after some thousands of calls) against
 * a stub server in this process, so the first system measured does not pay for it.
 */
async function warmLoadGenerator(): Promise<void> {
  const now = new Date().toISOString();
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const post = req.method === 'POST';
      res.writeHead(post ? 202 : 200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(post ? { task_id: randomUUID(), status: 'queued' } : { status: 'done', started_at: now, finished_at: now }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  const http = new HttpClient(`http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`, 64);
  try {
    const { subs } = await closedLoop(http, 3000, CONC, 'loadgen');
    await readAll(
      http,
      accepted(subs).map((x) => x.id),
      10_000,
    );
  } finally {
    http.close();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

// ---------------------------------------------------------------- systems

interface RunningSystem {
  url: string;
  /** The API key the load generator sends (AUTH=keys), if any. */
  apiKey?: string;
  /** Service processes the system uses (Redis; the broker's JVMs), for their CPU. */
  redisPids: number[];
  brokerPids: number[];
  /** Services running but not used by this system (idle brokers of the other systems). */
  idlePids: number[];
  /** API processes (for memory: the one embedded process). */
  api: BenchChild[];
  workers: BenchChild[];
  usesRedis: boolean;
}

interface Services {
  env: Record<string, string>;
  handles: ServiceHandle[];
  failed: Partial<Record<ServiceName, string>>;
  runDir: string;
}

const children = new Set<BenchChild>();
/** Open HTTP clients: their keep-alive sockets would hold up the servers' shutdown on an interrupt. */
const clients = new Set<HttpClient>();
const track = (c: BenchChild) => (children.add(c), c);

async function stopSystem(sys: { api: BenchChild[]; workers: BenchChild[] }): Promise<void> {
  await Promise.allSettled([...sys.workers, ...sys.api].map(async (c) => (await c.stop(20_000), children.delete(c))));
}

async function waitKafkaGroups(brokers: string, groups: string[], members: number, timeoutMs = 60_000): Promise<void> {
  const kafka = new Kafka({ clientId: 'bench-compare', brokers: brokers.split(','), logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { groups: described } = await admin.describeGroups(groups);
      if (described.length === groups.length && described.every((g) => g.state === 'Stable' && g.members.length === members)) return;
      if (Date.now() > deadline)
        throw new Error(
          `kafka groups not stable with ${members} members after ${timeoutMs} ms: ${described.map((g) => `${g.groupId}=${g.state}/${g.members.length}`).join(', ')}`,
        );
      await sleep(250);
    }
  } finally {
    await admin.disconnect();
  }
}

/** A key for the load generator, stored as `npm run keys -- create` would. */
async function createBenchKey(s: Record<string, string>, keyPrefix: string): Promise<string> {
  const store = new RedisTaskStore({ host: s.REDIS_HOST ?? '', port: Number(s.REDIS_PORT), keyPrefix });
  try {
    if (!(await store.connect(10_000))) throw new Error('bench: could not reach Redis to create an API key');
    const { secret, hash, key } = newApiKey('bench', ['tasks:write', 'tasks:read'], 'bench');
    await store.createKey(key, hash);
    return secret;
  } finally {
    await store.close();
  }
}

async function startSystem(row: SystemName, svc: Services): Promise<RunningSystem> {
  const name = baseOf(row);
  const run = randomUUID().slice(0, 8);
  const s = svc.env;
  const needs: ServiceName[] = name === 'memory' ? [] : name === 'bullmq' ? ['redis'] : ['redis', name];
  for (const n of needs) if (svc.failed[n]) throw new Error(`${n} did not start: ${svc.failed[n]}`);
  const pidsOf = (n: ServiceName) => svc.handles.filter((h) => h.name === n).flatMap((h) => h.pids);
  const sys: RunningSystem = {
    url: '',
    api: [],
    workers: [],
    usesRedis: name !== 'memory',
    redisPids: name === 'memory' ? [] : pidsOf('redis'),
    brokerPids: name === 'kafka' || name === 'rocketmq' ? pidsOf(name) : [],
    idlePids: [],
  };
  const own = new Set([...sys.redisPids, ...sys.brokerPids]);
  sys.idlePids = svc.handles.flatMap((h) => h.pids).filter((pid) => !own.has(pid));
  try {
    if (name === 'bullmq') {
      const env = {
        REDIS_HOST: s.REDIS_HOST ?? '',
        REDIS_PORT: s.REDIS_PORT ?? '',
        BULLMQ_QUEUE: `bench-${run}`,
        BULLMQ_PREFIX: `bull${run}`,
        API_HOST: '127.0.0.1',
        API_PORT: '0',
        WORKER_CONCURRENCY: String(WORKER_CONC),
      };
      const api = track(startChild('bullmq-api', 'bench/bullmq-api.ts', env));
      sys.api.push(api);
      for (let i = 0; i < WORKERS; i++) sys.workers.push(track(startChild(`bullmq-worker-${i}`, 'bench/bullmq-worker.ts', env)));
      sys.url = (await api.waitForLine(/is up at (http:\/\/\S+)/))[1] ?? '';
      await Promise.all(sys.workers.map((w) => w.waitForLine(/worker started/)));
      return sys;
    }
    if (name === 'memory') {
      // The embedded default: API and worker in one process, memory store, in-process broker.
      // Its worker gets the concurrency of all the workers of the other systems together.
      const api = track(
        startChild('embedded', 'run-api.ts', {
          BROKER: 'memory',
          AUTH,
          ...limitsEnv,
          ...otelEnvFor(row),
          LOG_LEVEL: 'warn',
          API_HOST: '127.0.0.1',
          API_PORT: '0',
          WORKER_CONCURRENCY: String(WORKERS * WORKER_CONC),
        }),
      );
      sys.api.push(api);
      // With keys on, the embedded process prints its bootstrap key (its store is in process).
      if (AUTH === 'keys') sys.apiKey = (await api.waitForLine(/^\s*(atq_[A-Za-z0-9_-]{43})\s*$/))[1] ?? '';
      sys.url = (await api.waitForLine(/is up at (http:\/\/\S+)/))[1] ?? '';
      return sys;
    }
    const env: Record<string, string> = {
      ...s,
      BROKER: name,
      STORE: 'redis',
      AUTH,
      ...limitsEnv,
      ...otelEnvFor(row),
      LOG_LEVEL: 'warn',
      REDIS_KEY_PREFIX: `bench${run}:`,
      MQ_TOPIC_REQUEST: `bench-${run}-req`,
      MQ_TOPIC_RESULT: `bench-${run}-res`,
      MQ_GROUP_AGENT: `GID-bench-${run}`,
      WORKER_CONCURRENCY: String(WORKER_CONC),
    };
    const groups = PRIORITIES.map((p) => groupFor(env.MQ_GROUP_AGENT ?? '', p));
    if (name === 'rocketmq') {
      const topics = [...allRequestTopics(env.MQ_TOPIC_REQUEST ?? ''), env.MQ_TOPIC_RESULT ?? '', `%DLQ%${env.MQ_GROUP_AGENT ?? ''}`];
      log(`rocketmq: creating topics ${topics.join(', ')} and groups ${groups.join(', ')}`);
      await createTopics(s.ROCKETMQ_NAMESRV ?? '', topics, groups, { dir: join(svc.runDir, 'rocketmq-admin') });
    }
    if (AUTH === 'keys') sys.apiKey = await createBenchKey(s, env.REDIS_KEY_PREFIX ?? '');
    const api = track(startChild('api', 'run-api.ts', { API_HOST: '127.0.0.1', API_PORT: '0', ...env }));
    sys.api.push(api);
    for (let i = 0; i < WORKERS; i++) sys.workers.push(track(startChild(`worker-${i}`, 'run-worker.ts', env)));
    sys.url = (await api.waitForLine(/is up at (http:\/\/\S+)/))[1] ?? '';
    // With LOG_LEVEL=warn the workers print nothing on start: Kafka's groups tell when they joined
    // (a rebalance inside the measured window would cost the Kafka run); for RocketMQ the warm-up does.
    if (name === 'kafka') await waitKafkaGroups(s.KAFKA_BROKERS ?? '', groups, WORKERS);
    const dead = sys.workers.find((w) => !w.alive());
    if (dead) throw new Error(`${dead.name} exited at start:\n${dead.lines.slice(-15).join('\n')}`);
    return sys;
  } catch (err) {
    await stopSystem(sys);
    throw err;
  }
}

// ---------------------------------------------------------------- cost snapshots

interface Snapshot {
  redisCalls: Record<string, number> | undefined;
  api: ProcStats[];
  workers: ProcStats[];
  loadgenCpuUs: number;
  redisCpuUs: number | undefined;
  brokerCpuUs: number | undefined;
  idleServicesCpuUs: number | undefined;
  /** The whole machine, from /proc/stat: clock ticks over all cores. */
  machine: MachineTicks | undefined;
}

const cpuOfPids = (pids: number[]): number | undefined => {
  try {
    return pids.length === 0 ? undefined : pids.reduce((sum, pid) => sum + procCpuUs(pid), 0);
  } catch {
    return undefined;
  }
};

interface MachineTicks {
  /** user + nice + system: what processes ran. */
  proc: number;
  /** irq + softirq: the kernel's interrupt work, loopback networking included. */
  irq: number;
  /** Time the hypervisor gave to other guests. */
  steal: number;
  total: number;
}

function machineTicks(): MachineTicks | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '';
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = line.trim().split(/\s+/).slice(1).map(Number);
    return { proc: user + nice + system, irq: irq + softirq, steal, total: user + nice + system + idle + iowait + irq + softirq + steal };
  } catch {
    return undefined;
  }
}

async function redisCommandCalls(redis: ReturnType<typeof createClient> | undefined): Promise<Record<string, number> | undefined> {
  if (!redis) return undefined;
  const info = await redis.info('commandstats');
  const calls: Record<string, number> = {};
  for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls[m[1] ?? '?'] = Number(m[2]);
  return calls;
}

async function snapshot(sys: RunningSystem, redis: ReturnType<typeof createClient> | undefined): Promise<Snapshot> {
  const [redisCalls, api, workers] = await Promise.all([
    sys.usesRedis ? redisCommandCalls(redis) : Promise.resolve(undefined),
    Promise.all(sys.api.map((c) => c.stats())),
    Promise.all(sys.workers.map((c) => c.stats())),
  ]);
  const cpu = process.cpuUsage();
  return {
    redisCalls,
    api,
    workers,
    loadgenCpuUs: cpu.user + cpu.system,
    redisCpuUs: cpuOfPids(sys.redisPids),
    brokerCpuUs: cpuOfPids(sys.brokerPids),
    idleServicesCpuUs: cpuOfPids(sys.idlePids),
    machine: machineTicks(),
  };
}

interface Cost {
  tasks: number;
  redis_commands_per_task: number | null;
  redis_commands_by_name: Record<string, number> | null;
  redis_round_trips_per_task: number | null;
  broker_requests_per_task: number | null;
  cpu_ms_per_task_api: number | null;
  cpu_ms_per_task_workers: number | null;
  cpu_ms_per_task_loadgen: number;
  cpu_ms_per_task_redis_server: number | null;
  cpu_ms_per_task_broker_server: number | null;
  /** Share of all cores busy over the window, whatever ran. */
  /** Shares of all cores over the window: busy in all, interrupts, steal, and processes other than the system's, its services' and the load generator's. */
  machine_cpu: { busy: number; irq: number; steal: number; idle_services: number; other_processes: number } | null;
  stats_source: string;
}

function costOf(before: Snapshot, after: Snapshot, tasks: number): Cost {
  const per = (x: number | undefined) => (x === undefined ? null : x / tasks);
  let redisCommands: number | undefined;
  let byName: Record<string, number> | null = null;
  if (before.redisCalls && after.redisCalls) {
    byName = {};
    redisCommands = 0;
    for (const [cmd, calls] of Object.entries(after.redisCalls)) {
      if (cmd === 'info') continue; // the benchmark's own INFO commandstats
      const d = calls - (before.redisCalls[cmd] ?? 0);
      if (d > 0) {
        byName[cmd] = +(d / tasks).toFixed(3);
        redisCommands += d;
      }
    }
  }
  const sumDiff = (b: ProcStats[], a: ProcStats[], pick: (p: ProcStats) => number | undefined): number | undefined => {
    let total: number | undefined;
    a.forEach((p, i) => {
      const x = pick(p);
      const y = b[i] ? pick(b[i]) : undefined;
      if (x !== undefined && y !== undefined) total = (total ?? 0) + (x - y);
    });
    return total;
  };
  const all = (s: Snapshot) => [...s.api, ...s.workers];
  const sources = new Set(all(after).map((p) => p.source));
  const cpuApi = sumDiff(before.api, after.api, (p) => p.cpuUs);
  const cpuWorkers = after.workers.length > 0 ? sumDiff(before.workers, after.workers, (p) => p.cpuUs) : undefined;
  const diff = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined ? a - b : undefined);
  const cpuRedis = diff(after.redisCpuUs, before.redisCpuUs);
  const cpuBroker = diff(after.brokerCpuUs, before.brokerCpuUs);
  const cpuLoadgen = after.loadgenCpuUs - before.loadgenCpuUs;
  let machine: Cost['machine_cpu'] = null;
  const a = after.machine;
  const b = before.machine;
  if (a && b && a.total > b.total) {
    const total = a.total - b.total;
    // Ticks are 10 ms (CLK_TCK 100) of one core.
    const accountedTicks = ((cpuApi ?? 0) + (cpuWorkers ?? 0) + (cpuRedis ?? 0) + (cpuBroker ?? 0) + cpuLoadgen) / 10_000;
    const idleTicks = (diff(after.idleServicesCpuUs, before.idleServicesCpuUs) ?? 0) / 10_000;
    const procTicks = a.proc - b.proc;
    machine = {
      busy: (procTicks + a.irq - b.irq + a.steal - b.steal) / total,
      irq: (a.irq - b.irq) / total,
      steal: (a.steal - b.steal) / total,
      idle_services: idleTicks / total,
      other_processes: Math.max(0, procTicks - accountedTicks - idleTicks) / total,
    };
  }
  return {
    tasks,
    redis_commands_per_task: per(redisCommands),
    redis_commands_by_name: byName,
    redis_round_trips_per_task: per(sumDiff(all(before), all(after), (p) => p.redisRoundTrips)),
    broker_requests_per_task: per(sumDiff(all(before), all(after), (p) => p.brokerRequests)),
    cpu_ms_per_task_api: cpuApi === undefined ? null : cpuApi / 1000 / tasks,
    cpu_ms_per_task_workers: cpuWorkers === undefined ? null : cpuWorkers / 1000 / tasks,
    cpu_ms_per_task_loadgen: cpuLoadgen / 1000 / tasks,
    cpu_ms_per_task_redis_server: cpuRedis === undefined ? null : cpuRedis / 1000 / tasks,
    cpu_ms_per_task_broker_server: cpuBroker === undefined ? null : cpuBroker / 1000 / tasks,
    machine_cpu: machine,
    stats_source: [...sources].join('+'),
  };
}

// ---------------------------------------------------------------- one system

interface ClosedResult {
  tasks: number;
  accepted: number;
  submit_errors: number;
  first_error: string | null;
  submit_seconds: number;
  submits_per_s: number;
  submit_ms: { p50: number; p95: number; p99: number; max: number };
  end_to_end_s: number;
  end_to_end_tasks_per_s: number;
  failed_tasks: number;
  /** Tasks not yet final when the cost window closed (the window then missed some of their work). */
  stragglers: number;
  unfinished: number;
}

interface OpenResult {
  offered_per_s: number;
  seconds: number;
  sent: number;
  achieved_per_s: number;
  max_timer_lag_ms: number;
  accepted: number;
  submit_errors: number;
  first_error: string | null;
  submit_ms: { p50: number; p99: number };
  submit_to_running_ms: { p50: number; p99: number };
  submit_to_done_ms: { p50: number; p99: number };
  failed_tasks: number;
  unfinished: number;
}

interface SystemResult {
  /** The row: the system, `-traced` when its processes exported their spans. */
  system: SystemName;
  base: BaseSystem;
  traced: boolean;
  /** OTLP export requests the sink took while this row ran, when a sink runs (0 for an untraced row). */
  otlp_exports?: number;
  ok: boolean;
  error?: string;
  closed?: ClosedResult;
  cost?: Cost;
  open?: OpenResult;
  open_error?: string;
  rss_mb?: { api: number[]; workers: number[] };
  notes: string[];
}

/**
 * --limits: a probe submit and a read of it must answer with the RateLimit headers of their
 * policies (api/submit.ts, api/app.ts send them only when the limit is on), else the row would
 * not measure the admission path it claims to.
 */
async function checkLimits(http: HttpClient): Promise<void> {
  const post = await http.send('POST', '/tasks', taskBody(0, 'limits'));
  if (post.status !== 202) throw new Error(`--limits probe: POST /tasks answered ${post.status}: ${post.body.slice(0, 200)}`);
  const id = (JSON.parse(post.body) as { task_id?: string }).task_id ?? '';
  const get = await http.send('GET', `/tasks/${id}`);
  for (const [what, a, policy] of [
    ['POST /tasks', post, 'submits'],
    [`GET /tasks/${id}`, get, 'reads'],
  ] as const) {
    const h = a.headers['ratelimit-policy'];
    if (typeof h !== 'string' || !h.includes(`"${policy}"`))
      throw new Error(`--limits probe: ${what} answered ${a.status} without a RateLimit-Policy "${policy}" header (got ${String(h)}): limits are not on`);
  }
  await waitLastDone(http, [id], 60_000);
}

const round = (x: number, d = 1) => (Number.isFinite(x) ? +x.toFixed(d) : NaN);
const accepted = (subs: Submission[]) => subs.filter((s): s is Submission & { id: string } => s.id !== undefined);

async function runSystem(
  name: SystemName,
  svc: Services,
  redis: ReturnType<typeof createClient> | undefined,
  rateFor: (current: SystemResult) => number,
): Promise<SystemResult> {
  const result: SystemResult = { system: name, base: baseOf(name), traced: isTraced(name), ok: false, notes: [] };
  const exportsBefore = otlpExports;
  let sys: RunningSystem | undefined;
  let http: HttpClient | undefined;
  try {
    const ours = result.base !== 'bullmq';
    const how = [
      result.traced ? `tracing on (OTLP to ${otelEnv.OTEL_EXPORTER_OTLP_ENDPOINT ?? '?'})` : ours ? 'tracing off' : '',
      ours && LIMITS ? 'limits on' : '',
    ].filter(Boolean);
    log(`${name}: starting${how.length > 0 ? `, ${how.join(', ')}` : ''}`);
    sys = await startSystem(name, svc);
    http = new HttpClient(sys.url, 256, sys.apiKey ? { authorization: `Bearer ${sys.apiKey}` } : {});
    clients.add(http);
    log(`${name}: up at ${sys.url}`);
    if (LIMITS && ours) {
      await checkLimits(http);
      log(`${name}: RateLimit headers on a probe submit and read: limits on`);
    }
    log(`${name}: warm-up with ${WARMUP} tasks`);
    if (WARMUP > 0) {
      const w = await closedLoop(http, WARMUP, CONC, 'warmup');
      const ok = accepted(w.subs);
      if (ok.length === 0) throw new Error(`warm-up: no task accepted (${w.subs[0]?.error ?? '?'})`);
      await waitLastDone(
        http,
        ok.map((s) => s.id),
        120_000,
      );
      const { unfinished } = await readAll(
        http,
        ok.map((s) => s.id),
        120_000,
      );
      if (unfinished > 0) throw new Error(`warm-up: ${unfinished} tasks did not finish within 120 s`);
    }

    log(`${name}: closed loop, ${TASKS} tasks, ${CONC} in flight`);
    const before = await snapshot(sys, redis);
    const c = await closedLoop(http, TASKS, CONC, 'closed');
    const ok = accepted(c.subs);
    if (ok.length === 0) throw new Error(`closed loop: no task accepted (${c.subs[0]?.error ?? '?'})`);
    const ids = ok.map((s) => s.id);
    await waitLastDone(http, ids, 600_000);
    const after = await snapshot(sys, redis);
    const { times, stragglers, unfinished } = await readAll(http, ids, 300_000);
    const lat = sortNum(c.subs.map((s) => s.ms));
    const firstSend = minOf(c.subs.map((s) => s.sentAt));
    const finishes = ids.map((id) => times.get(id)?.finishedAt).filter((x): x is number => x !== undefined);
    const lastFinish = maxOf(finishes);
    const errors = c.subs.filter((s) => s.error !== undefined);
    result.closed = {
      tasks: TASKS,
      accepted: ok.length,
      submit_errors: errors.length,
      first_error: errors[0]?.error ?? null,
      submit_seconds: round(c.seconds, 2),
      submits_per_s: round(ok.length / c.seconds, 0),
      submit_ms: { p50: round(pct(lat, 50)), p95: round(pct(lat, 95)), p99: round(pct(lat, 99)), max: round(lat.at(-1) ?? NaN) },
      end_to_end_s: round((lastFinish - firstSend) / 1000, 2),
      end_to_end_tasks_per_s: round((finishes.length * 1000) / (lastFinish - firstSend), 0),
      failed_tasks: ids.filter((id) => times.get(id)?.status === 'failed').length,
      stragglers,
      unfinished,
    };
    result.cost = costOf(before, after, ok.length);
    if (stragglers > 0) result.notes.push(`${stragglers} tasks were still running when the cost window closed`);
    if (unfinished > 0) result.notes.push(`closed loop: ${unfinished} accepted tasks never finished (end-to-end rate counts the finished ones)`);
    if (result.cost.stats_source.includes('proc')) result.notes.push('CPU from /proc/<pid>/stat (no SIGUSR2 stats line): round trips and broker requests n/a');
    result.ok = true;
    log(
      `${name}: ${result.closed.submits_per_s} submits/s, p50 ${result.closed.submit_ms.p50} ms, end to end ${result.closed.end_to_end_tasks_per_s} tasks/s (${result.closed.end_to_end_s} s)`,
    );

    try {
      const rate = rateFor(result);
      log(`${name}: open loop, ${rate} tasks/s for ${OPEN_SECONDS} s`);
      const o = await openLoop(http, rate, OPEN_SECONDS, 'open');
      const oks = accepted(o.subs);
      const oIds = oks.map((s) => s.id);
      if (oIds.length > 0) await waitLastDone(http, oIds, 600_000);
      const read = await readAll(http, oIds, 300_000);
      const sub = sortNum(o.subs.map((s) => s.ms));
      const running = sortNum(oks.flatMap((s) => (read.times.get(s.id)?.startedAt === undefined ? [] : [(read.times.get(s.id)?.startedAt ?? 0) - s.sentAt])));
      const done = sortNum(oks.flatMap((s) => (read.times.get(s.id)?.finishedAt === undefined ? [] : [(read.times.get(s.id)?.finishedAt ?? 0) - s.sentAt])));
      const sends = o.subs.map((s) => s.sentAt);
      const span = (maxOf(sends) - minOf(sends)) / 1000;
      const oErrors = o.subs.filter((s) => s.error !== undefined);
      result.open = {
        offered_per_s: rate,
        seconds: OPEN_SECONDS,
        sent: o.subs.length,
        achieved_per_s: round(span > 0 ? (o.subs.length - 1) / span : o.subs.length, 0),
        max_timer_lag_ms: round(o.maxLagMs),
        accepted: oks.length,
        submit_errors: oErrors.length,
        first_error: oErrors[0]?.error ?? null,
        submit_ms: { p50: round(pct(sub, 50)), p99: round(pct(sub, 99)) },
        submit_to_running_ms: { p50: round(pct(running, 50)), p99: round(pct(running, 99)) },
        submit_to_done_ms: { p50: round(pct(done, 50)), p99: round(pct(done, 99)) },
        failed_tasks: oIds.filter((id) => read.times.get(id)?.status === 'failed').length,
        unfinished: read.unfinished,
      };
      log(`${name}: open loop submit p50 ${result.open.submit_ms.p50} ms, submit→done p50 ${result.open.submit_to_done_ms.p50} ms`);
    } catch (err) {
      result.open_error = errMsg(err);
      log(`${name}: open loop failed: ${result.open_error}`);
    }
    result.rss_mb = { api: sys.api.map((p) => p.rssMb()), workers: sys.workers.map((p) => p.rssMb()) };
  } catch (err) {
    result.ok = false;
    result.error = errMsg(err);
    log(`${name}: FAILED: ${result.error}`);
  } finally {
    if (http) {
      http.close();
      clients.delete(http);
    }
    if (sys) {
      const dead = [...sys.api, ...sys.workers].filter((p) => !p.alive());
      for (const p of dead) result.notes.push(`${p.name} exited during the run: ${p.lines.slice(-5).join(' | ')}`);
      await stopSystem(sys);
    }
    if (tracedRows.length > 0 && result.base !== 'bullmq') {
      // After the stop: the processes flush their last spans as they shut down.
      result.otlp_exports = otlpExports - exportsBefore;
      log(`${name}: the sink took ${result.otlp_exports} OTLP export requests`);
      if (result.traced && result.otlp_exports === 0) result.notes.push('traced, yet the sink took no OTLP export: tracing did not start');
      if (!result.traced && result.otlp_exports > 0) result.notes.push(`not traced, yet the sink took ${result.otlp_exports} OTLP exports`);
    }
    // The next system starts on an empty Redis.
    await redis?.flushAll().catch(() => undefined);
  }
  return result;
}

// ---------------------------------------------------------------- report

const fmt = (x: number | null | undefined, d = 0) => (x === null || x === undefined || !Number.isFinite(x) ? 'n/a' : x.toFixed(d));
/** One line for a table cell: the first line, and when it only announces what follows, the line that names the error. */
const oneLine = (s: string) => {
  const lines = s
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const first = lines[0] ?? '';
  const cause = first.endsWith(':') ? (lines.find((l) => /\b\w*Error\b|error:/.test(l) && l !== first) ?? lines.at(-1)) : undefined;
  return `${first}${cause ? ` ${cause}` : ''}`.replace(/\|/g, '\\|').slice(0, 240);
};

function renderMarkdown(
  meta: { date: string; commit: string; machine: string; command: string; rate: number | undefined; rateNote: string },
  results: SystemResult[],
  ceilings: (Ceiling | { part: string; error: string })[],
): string {
  const out: string[] = [];
  const bull = results.find((r) => r.system === 'bullmq' && r.ok)?.closed?.end_to_end_tasks_per_s;
  const tracingNote =
    tracedRows.length === 0
      ? 'ours with tracing off'
      : `tracing on in the rows ${tracedRows.join(', ')} (every span exported over OTLP/HTTP to a sink in the load generator), off in ${systems.filter((s) => !isTraced(s)).join(', ') || 'none'}`;
  out.push(`# Comparison benchmark, ${meta.date}`, '');
  out.push(`- commit: \`${meta.commit}\``);
  out.push(`- machine: ${meta.machine}; load average before the run: ${loadAtStart}`);
  out.push(`- command: \`${meta.command}\``);
  out.push(
    `- settings: ${TASKS} tasks closed loop with ${CONC} requests in flight, ${WARMUP} warm-up tasks; ${WORKERS} worker processes × concurrency ${WORKER_CONC} ` +
      `(memory: one process, worker concurrency ${WORKERS * WORKER_CONC}); demo \`agent\` task, no simulated delay; all on one machine with the load generator; ${tracingNote}; AUTH=${AUTH}${AUTH === 'keys' ? " (every request carries an API key; BullMQ's front checks none)" : ''}; limits ${
        LIMITS
          ? `on (${Object.entries(limitsEnv)
              .map(([k, v]) => `${k}=${v}`)
              .join(', ')}: every submit and read counted, never refused; BullMQ's front has none)`
          : 'off'
      }`,
  );
  out.push('');
  out.push(`## Closed loop: ${TASKS} tasks, ${CONC} in flight`, '');
  out.push('| system | submits/s | submit p50 / p95 / p99 (ms) | end-to-end tasks/s | vs BullMQ | end to end (s) | errors / failed |');
  out.push('|---|---|---|---|---|---|---|');
  for (const r of results) {
    const c = r.closed;
    if (!r.ok || !c) {
      out.push(`| ${r.system} | failed: ${oneLine(r.error ?? '?')} | | | | | |`);
      continue;
    }
    const vs = bull ? `${(c.end_to_end_tasks_per_s / bull).toFixed(2)}×` : 'n/a';
    out.push(
      `| ${r.system} | ${fmt(c.submits_per_s)} | ${fmt(c.submit_ms.p50, 1)} / ${fmt(c.submit_ms.p95, 1)} / ${fmt(c.submit_ms.p99, 1)} | ${fmt(c.end_to_end_tasks_per_s)} | ${vs} | ${fmt(c.end_to_end_s, 1)} | ${c.submit_errors} / ${c.failed_tasks} |`,
    );
  }
  out.push('');
  out.push(`## Open loop: ${fmt(meta.rate)} tasks/s offered for ${OPEN_SECONDS} s (${meta.rateNote})`, '');
  out.push('| system | achieved/s | submit p50 / p99 (ms) | submit→running p50 / p99 (ms) | submit→done p50 / p99 (ms) | errors / failed |');
  out.push('|---|---|---|---|---|---|');
  for (const r of results) {
    const o = r.open;
    if (!o) {
      out.push(`| ${r.system} | failed: ${oneLine(r.open_error ?? r.error ?? '?')} | | | | |`);
      continue;
    }
    out.push(
      `| ${r.system} | ${fmt(o.achieved_per_s)} | ${fmt(o.submit_ms.p50, 1)} / ${fmt(o.submit_ms.p99, 1)} | ${fmt(o.submit_to_running_ms.p50)} / ${fmt(o.submit_to_running_ms.p99)} | ${fmt(o.submit_to_done_ms.p50)} / ${fmt(o.submit_to_done_ms.p99)} | ${o.submit_errors} / ${o.failed_tasks} |`,
    );
  }
  out.push('');
  out.push('## Cost per task (closed-loop window)', '');
  out.push(
    '| system | Redis commands | Redis round trips | broker requests | CPU ms: API / workers / Redis server / broker / load generator | machine CPU busy (irq, steal, idle services, other processes) | RSS MB after the run: API / workers |',
  );
  out.push('|---|---|---|---|---|---|---|');
  for (const r of results) {
    const k = r.cost;
    if (!k) {
      out.push(`| ${r.system} | failed | | | | | |`);
      continue;
    }
    const rss = r.rss_mb ? `${r.rss_mb.api.join(', ')} / ${r.rss_mb.workers.length > 0 ? r.rss_mb.workers.join(', ') : 'in process'}` : 'n/a';
    // The embedded system has neither Redis nor a broker process: its zero counters are not a cost.
    const embedded = r.base === 'memory';
    const cpu = [
      fmt(k.cpu_ms_per_task_api, 2),
      embedded ? 'in API' : fmt(k.cpu_ms_per_task_workers, 2),
      fmt(k.cpu_ms_per_task_redis_server, 2),
      r.base === 'bullmq' ? '(Redis)' : fmt(k.cpu_ms_per_task_broker_server, 2),
      fmt(k.cpu_ms_per_task_loadgen, 2),
    ].join(' / ');
    const pctOf = (x: number | null) => (x === null ? 'n/a' : `${(x * 100).toFixed(0)}%`);
    out.push(
      `| ${r.system} | ${fmt(k.redis_commands_per_task, 1)} | ${embedded ? 'n/a' : fmt(k.redis_round_trips_per_task, 1)} | ${embedded ? 'n/a' : fmt(k.broker_requests_per_task, 2)} | ${cpu} | ${k.machine_cpu ? `${pctOf(k.machine_cpu.busy)} (${pctOf(k.machine_cpu.irq)}, ${pctOf(k.machine_cpu.steal)}, ${pctOf(k.machine_cpu.idle_services)}, ${pctOf(k.machine_cpu.other_processes)})` : 'n/a'} | ${rss} |`,
    );
  }
  out.push('');
  const pairs = results.flatMap((on) => {
    const off = results.find((r) => r.system === on.base);
    return on.traced && off ? [{ on, off }] : [];
  });
  if (pairs.length > 0) {
    out.push('## Tracing off and on (same run, closed loop)', '');
    out.push(
      '| system | end-to-end tasks/s: off → on | on ÷ off | vs BullMQ: off → on | CPU ms per task, API: off → on | workers: off → on | OTLP export requests (whole row) |',
    );
    out.push('|---|---|---|---|---|---|---|');
    for (const { on, off } of pairs) {
      const a = off.closed?.end_to_end_tasks_per_s;
      const b = on.closed?.end_to_end_tasks_per_s;
      const ratio = (x: number | null | undefined, y: number | null | undefined) => (x && y ? `${(y / x).toFixed(2)}×` : 'n/a');
      const vs = (x: number | undefined) => (bull && x ? `${(x / bull).toFixed(2)}×` : 'n/a');
      const workers = (r: SystemResult) => (r.base === 'memory' ? 'in API' : fmt(r.cost?.cpu_ms_per_task_workers, 2));
      out.push(
        `| ${on.base} | ${fmt(a)} → ${fmt(b)} | ${ratio(a, b)} | ${vs(a)} → ${vs(b)} | ${fmt(off.cost?.cpu_ms_per_task_api, 2)} → ${fmt(on.cost?.cpu_ms_per_task_api, 2)} | ${workers(off)} → ${workers(on)} | ${on.otlp_exports ?? 'n/a'} |`,
      );
    }
    out.push('');
  }
  out.push('## Ceilings of the parts (same machine, same run)', '');
  out.push('| part | raw rate | how |');
  out.push('|---|---|---|');
  for (const c of ceilings) {
    if ('error' in c) out.push(`| ${c.part} | failed: ${oneLine(c.error)} | |`);
    else out.push(`| ${c.part} | ${fmt(c.perSecond)} ${c.unit} | ${c.how} |`);
  }
  const ceil = (p: string) => ceilings.find((c): c is Ceiling => c.part === p && !('error' in c))?.perSecond;
  out.push('');
  out.push(
    'Distance from the ceilings: tasks/s the parts would allow at the measured cost per task (Redis ceiling ÷ Redis commands per task; broker ceiling ÷ 2 messages per task, request and result).',
    '',
  );
  out.push('| system | end-to-end tasks/s | Redis allows | broker allows |');
  out.push('|---|---|---|---|');
  for (const r of results) {
    if (!r.ok || !r.closed || !r.cost) continue;
    const rc = ceil('redis');
    const redisAllows = rc && r.cost.redis_commands_per_task ? rc / r.cost.redis_commands_per_task : undefined;
    const bc = r.base === 'kafka' || r.base === 'rocketmq' ? ceil(r.base) : undefined;
    out.push(`| ${r.system} | ${fmt(r.closed.end_to_end_tasks_per_s)} | ${fmt(redisAllows)} | ${bc ? fmt(bc / 2) : 'n/a'} |`);
  }
  const notes = results.flatMap((r) => r.notes.map((n) => `${r.system}: ${n}`));
  out.push('');
  out.push('Notes:', '');
  out.push(
    '- Submit latency is from the load generator (node:http, keep-alive). End-to-end tasks/s = accepted tasks ÷ (last `finished_at` − first submit), from the task records read after the run; completion is detected by polling the last 8 tasks every 250 ms.',
  );
  out.push('- Open loop: requests go out on a timer whatever the answers; submit→running = `started_at` − send time, submit→done = `finished_at` − send time.');
  out.push(
    '- Redis commands: INFO commandstats summed over the window (commands run inside Lua scripts count too); n/a for memory (no Redis). BullMQ: its broker is Redis, so round trips and broker requests are n/a and its whole cost is in the Redis column.',
  );
  out.push(
    "- CPU ms per task: API and workers from their SIGUSR2 `process stats` lines (process.cpuUsage), Redis server and broker JVMs from /proc/<pid>/stat; machine CPU busy: /proc/stat over all cores, in brackets the kernel's interrupt work (loopback networking), the time the hypervisor gave to other guests, the services started for the other systems (idle brokers: `--isolate-brokers` starts each broker for its own system only), and processes that are not the benchmark's (other work on the machine: it skews the run when it is large).",
  );
  for (const n of notes) out.push(`- ${n}`);
  out.push('');
  return out.join('\n');
}

// ---------------------------------------------------------------- main

function gitCommit(): string {
  try {
    const sha = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain'], { cwd: REPO_ROOT, encoding: 'utf8' }).trim() !== '';
    return dirty ? `${sha}-dirty` : sha;
  } catch {
    return 'unknown';
  }
}

function commandLine(): string {
  const args = process.argv.slice(2).join(' ');
  if (process.env.npm_lifecycle_event === 'bench') return `npm run bench -- compare${args ? ` ${args}` : ''}`;
  const script = relative(REPO_ROOT, process.argv[1] ?? 'bench/compare.ts');
  return `npx tsx ${script}${script.endsWith('cli.ts') ? ' compare' : ''}${args ? ` ${args}` : ''}`;
}

const commit = gitCommit();
const date = new Date().toISOString().slice(0, 10);
const cpuList = cpus();
const machine = `${cpuList[0]?.model.trim() ?? 'unknown cpu'}, ${cpuList.length} cores, ${(totalmem() / 1024 ** 3).toFixed(1)} GB memory, Node ${process.version}`;
const command = commandLine();
/** Other work on the machine skews every figure: the load average before the run is in the report. */
const loadAtStart = loadavg()
  .map((x) => x.toFixed(2))
  .join(' ');

if (tracedRows.length > 0) {
  // A sink that takes every export and counts its bytes: the cost measured is our side's.
  const sink = createServer((req, res) => {
    req.on('data', () => undefined);
    req.on('end', () => {
      otlpExports++;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', () => resolve()));
  sink.unref();
  const addr = sink.address();
  otelEnv = { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}` };
  log(`tracing on for ${tracedRows.join(', ')}: exporting to ${otelEnv.OTEL_EXPORTER_OTLP_ENDPOINT}`);
}

const services: Services = { env: {}, handles: [], failed: {}, runDir: mkdtempSync(join(ensureDir(join(CACHE_DIR, 'bench-runs')), 'compare-')) };
const serviceStarts: { name: string; start_seconds: number }[] = [];
let cleaned = false;
let redis: ReturnType<typeof createClient> | undefined;
async function cleanup(): Promise<void> {
  if (cleaned) return;
  cleaned = true;
  for (const c of clients) c.close();
  await Promise.allSettled([...children].map((c) => c.stop(10_000)));
  const r = redis;
  redis = undefined;
  if (r?.isOpen) r.destroy();
  await stopServices(services.handles);
  rmSync(services.runDir, { recursive: true, force: true });
}
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    log(`${sig}: stopping everything`);
    void cleanup().finally(() => process.exit(130));
  });
}

try {
  log(`rows: ${systems.map((s) => (isTraced(s) ? `${s} (traced)` : s)).join(', ')}${LIMITS ? '; limits on for ours' : ''}`);
  const brokers = (['kafka', 'rocketmq'] as const).filter((b) => systems.some((s) => baseOf(s) === b));
  const ctx = { runDir: services.runDir, log };
  /** Starts `names` side by side, each on its own, so a broker that fails only fails its system. */
  const startSome = async (names: ServiceName[]) => {
    log(`starting ${names.join(', ')}`);
    const started = await Promise.allSettled(names.map((n) => startServices([n], ctx)));
    started.forEach((r, i) => {
      const n = names[i] ?? 'redis';
      if (r.status === 'fulfilled') {
        services.handles.push(...r.value);
        for (const h of r.value) {
          log(`${h.name} ready in ${h.startSeconds.toFixed(1)} s`);
          serviceStarts.push({ name: h.name, start_seconds: h.startSeconds });
        }
      } else services.failed[n] = errMsg(r.reason);
    });
    services.env = envOf(services.handles);
  };
  await startSome(ISOLATE ? ['redis'] : ['redis', ...brokers]);
  if (!services.failed.redis) {
    redis = createClient({ socket: { host: services.env.REDIS_HOST ?? '', port: Number(services.env.REDIS_PORT) } });
    redis.on('error', (err: Error) => log(`redis (benchmark client): ${err.message}`));
    await redis.connect();
  }

  await warmLoadGenerator();
  const results: SystemResult[] = [];
  let rate = RATE;
  let rateNote = RATE === undefined ? '' : '--rate';
  const rateFor = (current: SystemResult): number => {
    if (rate !== undefined) return rate;
    const done = [...results, current].filter((r) => r.ok && r.closed);
    const bull = done.find((r) => r.system === 'bullmq');
    const first = bull ?? done[0];
    const peak = first?.closed?.submits_per_s ?? 100;
    rate = Math.max(1, Math.round(peak / 2));
    rateNote = first ? `half of ${first.system}'s closed-loop ${peak} submits/s${bull ? '' : ' (BullMQ not in this run)'}` : 'no closed loop succeeded: 50/s';
    return rate;
  };
  const ceilings: (Ceiling | { part: string; error: string })[] = [];
  const ceilingRun = randomUUID().slice(0, 8);
  const tryCeiling = async (part: string, f: () => Promise<Ceiling>) => {
    try {
      const c = await f();
      log(`ceiling ${part}: ${c.perSecond.toFixed(0)} ${c.unit}`);
      ceilings.push(c);
    } catch (err) {
      log(`ceiling ${part} failed: ${errMsg(err)}`);
      ceilings.push({ part, error: errMsg(err) });
    }
  };
  const brokerCeiling = async (b: 'kafka' | 'rocketmq') => {
    const s = services.env;
    const failed = services.failed[b];
    if (failed) ceilings.push({ part: b, error: failed });
    else if (b === 'kafka') await tryCeiling('kafka', () => kafkaCeiling((s.KAFKA_BROKERS ?? '').split(','), `bench-ceiling-${ceilingRun}`));
    else
      await tryCeiling('rocketmq', () =>
        rocketmqCeiling(s.MQ_ENDPOINT ?? '', s.ROCKETMQ_NAMESRV ?? '', `bench-ceiling-${ceilingRun}`, join(services.runDir, 'rocketmq-admin')),
      );
  };

  for (const [i, name] of systems.entries()) {
    const base = baseOf(name);
    const isolated = ISOLATE && (base === 'kafka' || base === 'rocketmq') ? base : undefined;
    // A broker's rows (kafka, kafka-traced) run one after the other on one start of it.
    if (isolated && !services.failed[isolated] && !services.handles.some((h) => h.name === isolated)) await startSome([isolated]);
    results.push(await runSystem(name, services, redis, rateFor));
    const next = systems[i + 1];
    if (isolated && (next === undefined || baseOf(next) !== isolated)) {
      // Its ceiling now, while it runs; then it goes, so it takes no CPU from the next system.
      await sleep(2000);
      await brokerCeiling(isolated);
      await stopServices(services.handles.filter((h) => h.name === isolated));
      services.handles = services.handles.filter((h) => h.name !== isolated);
    }
  }

  log('ceilings');
  await sleep(2000); // let the last system's shutdown settle in the brokers
  if (services.failed.redis) ceilings.push({ part: 'redis', error: services.failed.redis });
  else await tryCeiling('redis', () => redisCeiling(services.env.REDIS_HOST ?? '', Number(services.env.REDIS_PORT)));
  if (!ISOLATE) for (const b of brokers) await brokerCeiling(b);

  const md = renderMarkdown({ date, commit, machine, command, rate, rateNote }, results, ceilings);
  process.stdout.write(`\n${md}`);
  const dir = join(REPO_ROOT, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  // <date>-<commit>; a second run of the same day and commit gets -2, -3, ... rather than overwrite the first.
  let base = join(dir, `${date}-${commit}`);
  for (let n = 2; existsSync(`${base}.md`) || existsSync(`${base}.json`); n++) base = join(dir, `${date}-${commit}-${n}`);
  writeFileSync(`${base}.md`, md);
  writeFileSync(
    `${base}.json`,
    `${JSON.stringify(
      {
        date: new Date().toISOString(),
        commit,
        machine: { cpu: cpuList[0]?.model.trim(), cores: cpuList.length, memory_bytes: totalmem(), node: process.version, loadavg_at_start: loadAtStart },
        command,
        settings: {
          systems,
          traced_systems: tracedRows,
          isolate_brokers: ISOLATE,
          tasks: TASKS,
          concurrency: CONC,
          rate,
          rate_note: rateNote,
          open_seconds: OPEN_SECONDS,
          workers: WORKERS,
          worker_concurrency: WORKER_CONC,
          auth: AUTH,
          tracing: TRACING,
          limits: LIMITS ? limitsEnv : null,
          warmup: WARMUP,
        },
        services: serviceStarts,
        services_failed: services.failed,
        systems: results,
        ceilings,
      },
      null,
      2,
    )}\n`,
  );
  log(`wrote ${relative(REPO_ROOT, base)}.md and .json`);
  for (const r of results) if (r.traced) log(`${r.system} (traced): the sink took ${r.otlp_exports ?? 0} OTLP export requests`);
} finally {
  await redis?.close().catch(() => undefined);
  redis = undefined;
  await cleanup();
}
