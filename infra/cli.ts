/**
 * `npm run infra -- up [redis] [redis-cluster] [kafka] [rocketmq]` starts private services on
 * free loopback ports (default: redis kafka) and prints their settings as KEY=VALUE lines,
 * usable as .env; `npm run infra -- down` stops them; `status` shows what runs.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CACHE_DIR, ensureDir, isAlive, type ServiceHandle } from './lib.ts';
import { envOf, parseServiceNames, startServices, stopServices } from './services.ts';

const STATE_DIR = join(CACHE_DIR, 'infra');
const STATE_FILE = join(STATE_DIR, 'state.json');
const log = (msg: string) => process.stderr.write(`${msg}\n`);

/** The recorded services with at least one live process (see `healthy`). */
function readState(): ServiceHandle[] {
  if (!existsSync(STATE_FILE)) return [];
  return (JSON.parse(readFileSync(STATE_FILE, 'utf8')) as ServiceHandle[]).filter((h) => h.pids.some(isAlive));
}

/** All of a service's processes run; one with some gone (a crashed cluster node) is stopped by `up` and `down`. */
const healthy = (h: ServiceHandle) => h.pids.every(isAlive);

function writeState(handles: ServiceHandle[]): void {
  ensureDir(STATE_DIR);
  writeFileSync(STATE_FILE, JSON.stringify(handles, null, 2));
}

function printEnv(handles: ServiceHandle[]): void {
  const env = envOf(handles);
  const brokers = handles.filter((h) => h.name !== 'redis' && h.name !== 'redis-cluster').map((h) => h.name);
  const lines = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  if (brokers.length === 1) lines.unshift(`BROKER=${brokers[0]}`);
  else if (brokers.length > 1) lines.unshift(`# BROKER=${brokers.join(' or BROKER=')}`);
  // The product reaches a cluster through REDIS_URL and REDIS_CLUSTER=true.
  const cluster = handles.find((h) => h.name === 'redis-cluster')?.env.REDIS_CLUSTER_URL;
  const productCluster = [`REDIS_URL=${cluster}`, 'REDIS_CLUSTER=true'];
  if (cluster && !handles.some((h) => h.name === 'redis')) lines.push(...productCluster);
  else if (cluster) lines.push(`# for the cluster instead of REDIS_HOST/REDIS_PORT: ${productCluster.join(' ')}`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

async function main(argv: string[]): Promise<void> {
  const [cmd = 'help', ...rest] = argv;
  switch (cmd) {
    case 'up': {
      const wanted = parseServiceNames(rest.length > 0 ? rest : ['redis', 'kafka']);
      const recorded = readState();
      const broken = recorded.filter((h) => !healthy(h));
      for (const h of broken) log(`${h.name} is partly down (pids ${h.pids.filter((p) => !isAlive(p)).join(', ')} gone): stopping the rest`);
      await stopServices(broken);
      const running = recorded.filter(healthy);
      const missing = wanted.filter((n) => !running.some((h) => h.name === n));
      for (const h of running) if (wanted.includes(h.name)) log(`${h.name} already running (pids ${h.pids.join(', ')})`);
      const runDir = ensureDir(join(STATE_DIR, `run-${Date.now()}`));
      const started = await startServices(missing, { runDir, log });
      for (const h of started) log(`${h.name} ready in ${h.startSeconds.toFixed(1)} s (data and logs in ${h.dir})`);
      const all = [...running, ...started];
      writeState(all);
      printEnv(all.filter((h) => wanted.includes(h.name)));
      return;
    }
    case 'down': {
      const running = readState();
      await stopServices(running);
      rmSync(STATE_FILE, { force: true });
      log(running.length === 0 ? 'nothing was running' : `stopped ${running.map((h) => h.name).join(', ')}`);
      return;
    }
    case 'status':
    case 'env': {
      const recorded = readState();
      for (const h of recorded.filter((r) => !healthy(r))) log(`${h.name} is partly down (pids ${h.pids.filter((p) => !isAlive(p)).join(', ')} gone)`);
      const running = recorded.filter(healthy);
      if (running.length === 0) log('nothing is running; start with: npm run infra -- up redis kafka');
      else printEnv(running);
      return;
    }
    default:
      log('usage: npm run infra -- up [redis] [redis-cluster] [kafka] [rocketmq] | down | status');
      if (cmd !== 'help') process.exitCode = 2;
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  log(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
