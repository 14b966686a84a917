/** A private redis-server (the binary on PATH) on a free loopback port with its own dir. */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { ensureDir, freePort, spawnDetached, waitForLogLine, type ServiceStarter } from './lib.ts';

export const startRedis: ServiceStarter = async (ctx) => {
  try {
    execFileSync('redis-server', ['--version'], { stdio: 'ignore' });
  } catch {
    throw new Error('redis-server is not on PATH: install it (Debian: apt-get install redis-server) or use TEST_INFRA=containers with Docker');
  }
  const dir = ensureDir(join(ctx.runDir, 'redis'));
  const port = await freePort();
  const logFile = join(dir, 'redis.log');
  const began = Date.now();
  // With persist, every write reaches the append-only file before Redis answers, so a
  // stop and restart loses nothing (outage tests); otherwise nothing is written to disk.
  const durability = ctx.persist ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
  const args = ['--bind', '127.0.0.1', '--port', String(port), '--dir', dir, '--save', '', ...durability, '--daemonize', 'no'];
  const pid = spawnDetached('redis-server', args, { cwd: dir, logFile });
  await waitForLogLine(logFile, 'Ready to accept connections', pid, 20_000, `redis-server on port ${port}`);
  ctx.log(`redis ready on 127.0.0.1:${port}`);
  return {
    name: 'redis',
    env: { REDIS_HOST: '127.0.0.1', REDIS_PORT: String(port) },
    pids: [pid],
    dir,
    startSeconds: (Date.now() - began) / 1000,
    relaunch: { cmd: 'redis-server', args, cwd: dir, logFile, ready: 'Ready to accept connections' },
  };
};
