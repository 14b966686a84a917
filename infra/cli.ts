/**
 * `npm run infra -- up [redis] [kafka] [rocketmq]` starts private services on free loopback
 * ports (default: redis kafka) and prints their settings as KEY=VALUE lines, usable as .env;
 * `npm run infra -- down` stops them; `status` shows what runs.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CACHE_DIR, ensureDir, isAlive, type ServiceHandle } from './lib.ts';
import { envOf, parseServiceNames, startServices, stopServices } from './services.ts';

const STATE_DIR = join(CACHE_DIR, 'infra');
const STATE_FILE = join(STATE_DIR, 'state.json');
const log = (msg: string) => process.stderr.write(`${msg}\n`);

function readState(): ServiceHandle[] {
  if (!existsSync(STATE_FILE)) return [];
  return (JSON.parse(readFileSync(STATE_FILE, 'utf8')) as ServiceHandle[]).filter((h) => h.pids.every(isAlive));
}

function writeState(handles: ServiceHandle[]): void {
  ensureDir(STATE_DIR);
  writeFileSync(STATE_FILE, JSON.stringify(handles, null, 2));
}

function printEnv(handles: ServiceHandle[]): void {
  const env = envOf(handles);
  const brokers = handles.filter((h) => h.name !== 'redis').map((h) => h.name);
  const lines = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  if (brokers.length === 1) lines.unshift(`BROKER=${brokers[0]}`);
  else if (brokers.length > 1) lines.unshift(`# BROKER=${brokers.join(' or BROKER=')}`);
  process.stdout.write(`${lines.join('\n')}\n`);
}

async function main(argv: string[]): Promise<void> {
  const [cmd = 'help', ...rest] = argv;
  switch (cmd) {
    case 'up': {
      const wanted = parseServiceNames(rest.length > 0 ? rest : ['redis', 'kafka']);
      const running = readState();
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
      const running = readState();
      if (running.length === 0) log('nothing is running; start with: npm run infra -- up redis kafka');
      else printEnv(running);
      return;
    }
    default:
      log('usage: npm run infra -- up [redis] [kafka] [rocketmq] | down | status');
      if (cmd !== 'help') process.exitCode = 2;
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  log(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
