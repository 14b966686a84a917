/**
 * Retention benchmark (not part of `npm test`): does Redis memory stay bounded under a long
 * run? Starts a private Redis, runs the embedded API + worker on it (BROKER=memory,
 * STORE=redis) with a short RESULT_TTL_SECONDS, posts tasks at a steady rate, and samples
 * Redis's used memory and key count. With a steady rate, both should level off once the
 * first tasks expire (after the TTL) instead of growing with the number of tasks.
 *
 *   npm run bench:retention -- --seconds 120 --rate 40 --ttl 15
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createClient } from 'redis';
import { CACHE_DIR, ensureDir } from '../infra/lib.ts';
import { envOf, startServices, stopServices } from '../infra/services.ts';
import { killAll, startApi } from '../test/support/processes.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '120' },
    rate: { type: 'string', default: '40' },
    ttl: { type: 'string', default: '15' },
  },
});
const SECONDS = Number(values.seconds);
const RATE = Number(values.rate);
const TTL = Number(values.ttl);

const runDir = mkdtempSync(join(ensureDir(join(CACHE_DIR, 'bench-runs')), 'retention-'));
const handles = await startServices(['redis'], { runDir, log: (m) => process.stderr.write(`${m}\n`) });
try {
  const s = envOf(handles);
  const api = await startApi({ ...s, BROKER: 'memory', STORE: 'redis', RESULT_TTL_SECONDS: String(TTL), WORKER_CONCURRENCY: '16', LOG_LEVEL: 'warn' });
  const redis = createClient({ socket: { host: s.REDIS_HOST, port: Number(s.REDIS_PORT) } });
  await redis.connect();
  const usedMb = async () => Number((await redis.info('memory')).match(/used_memory:(\d+)/)?.[1] ?? NaN) / 1024 / 1024;
  const baseline = await usedMb();

  let posted = 0;
  let failed = 0;
  const samples: { t: number; posted: number; keys: number; used_mb: number }[] = [];
  const began = Date.now();
  const sampler = setInterval(() => {
    void Promise.all([redis.dbSize(), usedMb()]).then(([keys, mb]) => {
      samples.push({ t: Math.round((Date.now() - began) / 1000), posted, keys, used_mb: +mb.toFixed(2) });
      process.stderr.write(`t=${samples.at(-1)?.t}s posted=${posted} keys=${keys} used=${mb.toFixed(2)} MB\n`);
    });
  }, 5000);
  // A steady rate: one request every 1000/RATE ms, a few in flight at most.
  while (Date.now() - began < SECONDS * 1000) {
    const tick = Date.now();
    const res = await fetch(`${api.url}/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'agent', user_id: `u${posted % 20}`, input: { content: `retention ${posted} 机械键盘降价了, great discount` } }),
    });
    if (res.status === 202 || res.status === 200) posted++;
    else failed++;
    await res.arrayBuffer();
    const left = 1000 / RATE - (Date.now() - tick);
    if (left > 0) await new Promise((r) => setTimeout(r, left));
  }
  clearInterval(sampler);
  // After the load: everything should expire and be swept.
  const drainBegan = Date.now();
  while (Date.now() - drainBegan < (TTL + 10) * 1000 && (await redis.dbSize()) > 0) await new Promise((r) => setTimeout(r, 1000));
  const after = { keys: await redis.dbSize(), used_mb: +(await usedMb()).toFixed(2) };
  const steady = samples.filter((x) => x.t > TTL + 10);
  const report = {
    seconds: SECONDS,
    rate_per_s: RATE,
    ttl_s: TTL,
    posted,
    failed,
    baseline_used_mb: +baseline.toFixed(2),
    steady_state: steady.length
      ? {
          keys: { min: Math.min(...steady.map((x) => x.keys)), max: Math.max(...steady.map((x) => x.keys)) },
          used_mb: { min: Math.min(...steady.map((x) => x.used_mb)), max: Math.max(...steady.map((x) => x.used_mb)) },
        }
      : null,
    after_ttl: after,
    samples,
  };
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  await redis.close();
} finally {
  await killAll();
  await stopServices(handles);
  rmSync(runDir, { recursive: true, force: true });
}
