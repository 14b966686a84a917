/**
 * Helpers shared by the local service launchers: free ports, detached child processes
 * with their own log file, waiting for a boot line, and stopping a process group.
 *
 * Services are started detached (own process group) so `npm run infra -- up` can exit
 * and leave them running; `down` (or the test teardown) kills the whole group.
 */
import { sleep } from '../common/backoff.ts';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, mkdirSync, openSync, readFileSync, closeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** Git-ignored folder for downloaded jars, service data and logs. */
export const CACHE_DIR = join(REPO_ROOT, '.cache');

export type ServiceName = 'redis' | 'redis-cluster' | 'kafka' | 'rocketmq';
export const SERVICE_NAMES: readonly ServiceName[] = ['redis', 'redis-cluster', 'kafka', 'rocketmq'];

/** What a started service leaves behind: its settings and the process groups to stop. */
export interface ServiceHandle {
  name: ServiceName;
  /** Settings as KEY=VALUE pairs, usable as .env lines. */
  env: Record<string, string>;
  /** Leaders of the detached process groups, stopped in reverse order. */
  pids: number[];
  /** Folder with the service's data and logs. */
  dir: string;
  /** Seconds from spawn to ready. */
  startSeconds: number;
  /**
   * How to start the last process again on the same ports and data, for outage tests
   * (see restartService). Absent for services that cannot be restarted that way.
   */
  relaunch?: { cmd: string; args: string[]; cwd: string; logFile: string; ready: string; env?: Record<string, string> };
}

export interface StartContext {
  /** Folder for this run's data and logs; each service makes a subfolder. */
  runDir: string;
  log: (msg: string) => void;
  /** Keep data across a restart (Redis: append-only file, fsync always). Default false. */
  persist?: boolean;
}

export type ServiceStarter = (ctx: StartContext) => Promise<ServiceHandle>;

/** Asks the OS for a free loopback port. */
export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr === null || typeof addr === 'string') {
        srv.close();
        rej(new Error('could not read the port of a probe socket'));
        return;
      }
      const { port } = addr;
      srv.close(() => res(port));
    });
  });
}

export function ensureDir(dir: string): string {
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Starts a detached process with stdout and stderr appended to `logFile`. */
export function spawnDetached(cmd: string, args: string[], opts: { cwd: string; logFile: string; env?: NodeJS.ProcessEnv }): number {
  const fd = openSync(opts.logFile, 'a');
  try {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: { ...process.env, ...opts.env },
      detached: true,
      stdio: ['ignore', fd, fd],
    });
    if (child.pid === undefined) throw new Error(`could not start ${cmd}`);
    child.unref();
    return child.pid;
  } finally {
    closeSync(fd);
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Waits until `logFile` contains `needle`. Fails early when the process exits, and with
 * the log's tail when `timeoutMs` passes, so a failed boot says why.
 */
export async function waitForLogLine(logFile: string, needle: string | RegExp, pid: number, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = existsSync(logFile) ? readFileSync(logFile, 'utf8') : '';
    if (typeof needle === 'string' ? text.includes(needle) : needle.test(text)) return;
    if (!isAlive(pid)) throw new Error(`${what} exited before it was ready; log ${logFile}:\n${tail(text)}`);
    if (Date.now() > deadline) throw new Error(`${what} was not ready after ${timeoutMs} ms; log ${logFile}:\n${tail(text)}`);
    await sleep(200);
  }
}

export function tail(text: string, lines = 30): string {
  return text.split('\n').slice(-lines).join('\n');
}

/** Stops a detached process group: SIGTERM, then SIGKILL after `graceMs`. */
export async function stopGroup(pid: number, graceMs = 10_000): Promise<void> {
  const signal = (sig: NodeJS.Signals) => {
    try {
      process.kill(-pid, sig);
    } catch {
      /* already gone */
    }
  };
  if (!isAlive(pid)) return;
  signal('SIGTERM');
  const deadline = Date.now() + graceMs;
  while (isAlive(pid) && Date.now() < deadline) await sleep(100);
  if (isAlive(pid)) signal('SIGKILL');
  while (isAlive(pid)) await sleep(50);
}

export async function stopService(handle: Pick<ServiceHandle, 'pids'>): Promise<void> {
  for (const pid of [...handle.pids].reverse()) await stopGroup(pid);
}

/**
 * Starts the last process of a stopped service again, on the same ports and data, and waits
 * until its log says it is ready. Replaces that process's pid in `handle.pids`.
 */
export async function restartService(handle: ServiceHandle, timeoutMs = 90_000): Promise<void> {
  const r = handle.relaunch;
  if (!r) throw new Error(`${handle.name} cannot be restarted in place`);
  const before = existsSync(r.logFile) ? readFileSync(r.logFile, 'utf8').length : 0;
  const pid = spawnDetached(r.cmd, r.args, { cwd: r.cwd, logFile: r.logFile, ...(r.env ? { env: r.env } : {}) });
  handle.pids[handle.pids.length - 1] = pid;
  // Only lines written after the restart count.
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = readFileSync(r.logFile, 'utf8').slice(before);
    if (text.includes(r.ready)) return;
    if (!isAlive(pid)) throw new Error(`${handle.name} exited during its restart; log ${r.logFile}:\n${tail(text)}`);
    if (Date.now() > deadline) throw new Error(`${handle.name} was not ready ${timeoutMs} ms after its restart; log ${r.logFile}:\n${tail(text)}`);
    await sleep(200);
  }
}
