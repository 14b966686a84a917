/**
 * Child processes of the comparison benchmark: any .ts entry run with `node --import tsx`,
 * its output kept line by line, and its cost read on demand — the `process stats` line a
 * process prints on SIGUSR2, or /proc/<pid>/stat when it has no SIGUSR2 handler.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../infra/lib.ts';

/** Cumulative cost of a process since it started. */
export interface ProcStats {
  /** User + system CPU, microseconds. */
  cpuUs: number;
  rssBytes: number | undefined;
  redisRoundTrips: number | undefined;
  brokerRequests: number | undefined;
  /** Where the figures came from. */
  source: 'sigusr2' | 'proc';
}

export interface BenchChild {
  name: string;
  proc: ChildProcess;
  lines: string[];
  alive(): boolean;
  waitForLine(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  stop(timeoutMs?: number): Promise<void>;
  stats(): Promise<ProcStats>;
  rssMb(): number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const CLK_TCK = 100;

/** Resident memory from /proc, MB. */
export function rssMbOf(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/);
    return m ? Math.round(Number(m[1]) / 1024) : NaN;
  } catch {
    return NaN;
  }
}

/** utime + stime of /proc/<pid>/stat, microseconds (clock-tick resolution). */
export function procCpuUs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces), starting at field 3 (state).
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  return ((utime + stime) * 1_000_000) / CLK_TCK;
}

/** True when the process has a handler for SIGUSR2 (bit 12 of SigCgt); without one the signal would kill it. */
export function catchesSigusr2(pid: number): boolean {
  try {
    const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/SigCgt:\s+([0-9a-f]+)/i);
    return m?.[1] !== undefined && ((BigInt(`0x${m[1]}`) >> 11n) & 1n) === 1n;
  } catch {
    return false;
  }
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

export function startChild(name: string, entry: string, env: Record<string, string>): BenchChild {
  const proc = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, entry)], {
    cwd: REPO_ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_FORMAT: 'json', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  let exited = false;
  let exitCode: number | null = null;
  let exitSignal: string | null = null;
  const exit = new Promise<void>((resolve) =>
    proc.once('exit', (code, signal) => {
      exited = true;
      exitCode = code;
      exitSignal = signal;
      resolve();
    }),
  );
  proc.once('error', (err) => lines.push(`spawn error: ${err.message}`));
  for (const stream of [proc.stdout, proc.stderr]) {
    let buf = '';
    stream?.setEncoding('utf8');
    stream?.on('data', (chunk: string) => {
      buf += chunk;
      const parts = buf.split('\n');
      buf = parts.pop() ?? '';
      lines.push(...parts);
    });
  }
  const died = () => new Error(`${name} exited (code ${String(exitCode)}, signal ${String(exitSignal)}):\n${lines.slice(-15).join('\n')}`);

  const waitForLine = async (re: RegExp, timeoutMs = 60_000, from = 0): Promise<RegExpMatchArray> => {
    const deadline = Date.now() + timeoutMs;
    let seen = from;
    for (;;) {
      for (; seen < lines.length; seen++) {
        const m = lines[seen]?.match(re);
        if (m) return m;
      }
      if (exited) throw died();
      if (Date.now() > deadline) throw new Error(`${name} did not print ${String(re)} within ${timeoutMs} ms:\n${lines.slice(-15).join('\n')}`);
      await sleep(20);
    }
  };

  const stats = async (): Promise<ProcStats> => {
    const pid = proc.pid;
    if (pid === undefined || exited) throw died();
    if (catchesSigusr2(pid)) {
      const from = lines.length;
      proc.kill('SIGUSR2');
      try {
        const m = await waitForLine(/(\{.*"msg":\s*"process stats".*\})/, 3000, from);
        const r = JSON.parse(m[1] ?? '{}') as Record<string, unknown>;
        const user = num(r.cpu_user_us);
        const system = num(r.cpu_system_us);
        if (user !== undefined && system !== undefined) {
          return {
            cpuUs: user + system,
            rssBytes: num(r.rss_bytes),
            redisRoundTrips: num(r.redis_round_trips),
            brokerRequests: num(r.broker_requests),
            source: 'sigusr2',
          };
        }
      } catch (err) {
        if (exited) throw err;
        // No answer in time: fall back to /proc for this snapshot.
      }
    }
    return { cpuUs: procCpuUs(pid), rssBytes: rssMbOf(pid) * 1024 * 1024, redisRoundTrips: undefined, brokerRequests: undefined, source: 'proc' };
  };

  return {
    name,
    proc,
    lines,
    alive: () => !exited,
    waitForLine: (re, timeoutMs) => waitForLine(re, timeoutMs),
    stop: async (timeoutMs = 20_000) => {
      if (exited) return;
      proc.kill('SIGTERM');
      await Promise.race([exit, sleep(timeoutMs)]);
      if (!exited) {
        proc.kill('SIGKILL');
        await exit;
      }
    },
    stats,
    rssMb: () => rssMbOf(proc.pid),
  };
}
