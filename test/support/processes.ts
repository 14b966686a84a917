/** Runs the product's entry points as child processes, the way users run them. */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from '../../infra/lib.ts';
import { waitFor } from './wait.ts';

export interface Child {
  name: string;
  proc: ChildProcess;
  /** stdout and stderr, line by line, as they came. */
  lines: string[];
  /** JSON log records (LOG_FORMAT=json) among the lines. */
  records(): Record<string, unknown>[];
  alive(): boolean;
  /** Settles once the process has exited and all its output has been read. */
  closed: Promise<void>;
  waitForLine(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** Sends `signal` and waits for the exit; answers the exit code (null when killed by a signal). */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>;
}

const running = new Set<Child>();

export function startEntry(name: string, entry: 'run-api.ts' | 'run-worker.ts', env: Record<string, string>): Child {
  // `node --import tsx` is what `npm run api|worker` does through tsx, minus the npm wrapper.
  const proc = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, entry)], {
    cwd: REPO_ROOT,
    // AUTH=off unless a test asks for keys: the tests of tenants and keys do (tenants.test.ts).
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', LOG_FORMAT: 'json', AUTH: 'off', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  let exited = false;
  let exitCode: number | null = null;
  const exit = new Promise<void>((resolve) =>
    proc.once('exit', (code) => {
      exited = true;
      exitCode = code;
      resolve();
    }),
  );
  const closed = new Promise<void>((resolve) => proc.once('close', () => resolve()));
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
  const child: Child = {
    name,
    proc,
    lines,
    records: () =>
      lines.flatMap((l) => {
        if (!l.startsWith('{')) return [];
        try {
          return [JSON.parse(l) as Record<string, unknown>];
        } catch {
          return [];
        }
      }),
    alive: () => !exited,
    closed,
    waitForLine: (re, timeoutMs = 60_000) =>
      waitFor(
        `${name} to print ${String(re)}`,
        () => {
          if (exited) throw new Error(`${name} exited with ${String(exitCode)}:\n${lines.slice(-20).join('\n')}`);
          for (const l of lines) {
            const m = l.match(re);
            if (m) return m;
          }
          return undefined;
        },
        { timeoutMs, intervalMs: 50 },
      ),
    stop: async (signal = 'SIGTERM', timeoutMs = 30_000) => {
      if (!exited) proc.kill(signal);
      await Promise.race([exit, new Promise((r) => setTimeout(r, timeoutMs))]);
      if (!exited) {
        proc.kill('SIGKILL');
        await exit;
        throw new Error(`${name} did not exit within ${timeoutMs} ms of ${signal}`);
      }
      running.delete(child);
      return exitCode;
    },
  };
  running.add(child);
  return child;
}

/** Per task id, how many workers logged `task started` and `task done` (LOG_FORMAT=json). */
export function taskLogCounts(children: Child[]): { starts: Map<string, number>; done: Map<string, number> } {
  const starts = new Map<string, number>();
  const done = new Map<string, number>();
  for (const c of children) {
    for (const r of c.records()) {
      const id = String(r.task_id);
      if (r.msg === 'task done') done.set(id, (done.get(id) ?? 0) + 1);
      if (r.msg === 'task started') starts.set(id, (starts.get(id) ?? 0) + 1);
    }
  }
  return { starts, done };
}

/** Kills whatever a test left running. */
export async function killAll(): Promise<void> {
  await Promise.allSettled([...running].map((c) => c.stop('SIGKILL', 5000)));
}

export async function startApi(env: Record<string, string>): Promise<{ child: Child; url: string }> {
  const child = startEntry('api', 'run-api.ts', { API_HOST: '127.0.0.1', API_PORT: '0', ...env });
  const m = await child.waitForLine(/is up at (http:\/\/\S+)/);
  return { child, url: m[1] ?? '' };
}
