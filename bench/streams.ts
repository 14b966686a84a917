/**
 * Idle event streams benchmark (not part of `npm test`): what do many open SSE streams on
 * tasks that are not moving cost? Starts a private Redis and the embedded API (one worker
 * slot, busy with a long task, so every other task stays queued and quiet), opens `--streams`
 * streams, then measures over `--seconds`:
 *  - Redis commands per second in total (INFO commandstats, all clients);
 *  - the API's RSS, sampled every second while the streams are held;
 *  - how soon a new event reaches its stream: `--probes` tasks are cancelled one by one and
 *    the time from the DELETE to the `cancelled` event on the stream is taken.
 *
 *   npm run bench:streams -- --streams 1000 --seconds 20
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request, type IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createClient } from 'redis';
import { CACHE_DIR, ensureDir } from '../infra/lib.ts';
import { envOf, startServices, stopServices } from '../infra/services.ts';
import { killAll, startApi } from '../test/support/processes.ts';

const { values } = parseArgs({
  options: {
    streams: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '20' },
    probes: { type: 'string', default: '50' },
  },
});
const STREAMS = Number(values.streams);
const SECONDS = Number(values.seconds);
const PROBES = Math.min(Number(values.probes), STREAMS);

const rssMb = (pid: number | undefined): number => {
  const m = readFileSync(`/proc/${pid ?? 0}/status`, 'utf8').match(/VmRSS:\s+(\d+)/);
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
};
const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] ?? NaN;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Stream {
  taskId: string;
  res: IncomingMessage;
  /** Resolves with the time the first `cancelled` event arrived. */
  cancelled: Promise<number>;
}

function openStream(base: string, taskId: string): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}/tasks/${taskId}/events`, { headers: { accept: 'text/event-stream' }, agent: false }, (res) => {
      if (res.statusCode !== 200) return reject(new Error(`stream of ${taskId} answered ${res.statusCode}`));
      res.setEncoding('utf8');
      let buf = '';
      const cancelled = new Promise<number>((done) => {
        res.on('data', (chunk: string) => {
          buf += chunk;
          if (buf.includes('event: cancelled')) done(performance.now());
          if (buf.length > 4096) buf = buf.slice(-64);
        });
      });
      resolve({ taskId, res, cancelled });
    });
    req.on('error', reject);
    req.end();
  });
}

const runDir = mkdtempSync(join(ensureDir(join(CACHE_DIR, 'bench-runs')), 'streams-'));
const handles = await startServices(['redis'], { runDir, log: (m) => process.stderr.write(`${m}\n`) });
try {
  const s = envOf(handles);
  const api = await startApi({ ...s, BROKER: 'memory', STORE: 'redis', WORKER_CONCURRENCY: '1', LOG_LEVEL: 'warn' });
  const redis = createClient({ socket: { host: s.REDIS_HOST, port: Number(s.REDIS_PORT) } });
  await redis.connect();
  const calls = async () => {
    const info = await redis.info('commandstats');
    return [...info.matchAll(/cmdstat_(\w+):calls=(\d+)/g)].reduce((n, m) => n + Number(m[2]), 0);
  };
  const post = async (content: string) => {
    const res = await fetch(`${api.url}/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'agent', input: { content, simulate_ms: 600_000 } }),
    });
    if (res.status !== 202) throw new Error(`POST answered ${res.status}: ${await res.text()}`);
    return ((await res.json()) as { task_id: string }).task_id;
  };
  // The first task takes the one worker slot for good; the rest stay queued.
  await post('the long one');
  const ids: string[] = [];
  for (let i = 0; i < STREAMS; i += 50) ids.push(...(await Promise.all(Array.from({ length: Math.min(50, STREAMS - i) }, (_, j) => post(`idle ${i + j}`)))));
  const rssBefore = rssMb(api.child.proc.pid);
  const streams: Stream[] = [];
  for (let i = 0; i < ids.length; i += 100) streams.push(...(await Promise.all(ids.slice(i, i + 100).map((id) => openStream(api.url, id)))));
  process.stderr.write(`${streams.length} streams open\n`);
  await sleep(2000);

  const rss: number[] = [];
  const c0 = await calls();
  const t0 = performance.now();
  for (let i = 0; i < SECONDS; i++) {
    await sleep(1000);
    rss.push(rssMb(api.child.proc.pid));
  }
  const c1 = await calls();
  const perSecond = ((c1 - c0 - 2) * 1000) / (performance.now() - t0); // less our own two INFO calls

  const delays: number[] = [];
  for (const st of streams.slice(0, PROBES)) {
    const sent = performance.now();
    const res = await fetch(`${api.url}/tasks/${st.taskId}`, { method: 'DELETE' });
    await res.arrayBuffer();
    delays.push((await st.cancelled) - sent);
  }
  const report = {
    streams: streams.length,
    seconds: SECONDS,
    redis_commands_per_s: +perSecond.toFixed(1),
    api_rss_mb: { before_streams: rssBefore, held_min: Math.min(...rss), held_max: Math.max(...rss), samples: rss },
    cancel_to_event_ms: { probes: delays.length, p50: +pct(delays, 50).toFixed(1), p99: +pct(delays, 99).toFixed(1), max: +Math.max(...delays).toFixed(1) },
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  for (const st of streams) st.res.destroy();
  await redis.close();
} finally {
  await killAll();
  await stopServices(handles);
  rmSync(runDir, { recursive: true, force: true });
}
