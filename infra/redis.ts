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
  const pid = spawnDetached(
    'redis-server',
    ['--bind', '127.0.0.1', '--port', String(port), '--dir', dir, '--save', '', '--appendonly', 'no', '--daemonize', 'no'],
    { cwd: dir, logFile },
  );
  await waitForLogLine(logFile, 'Ready to accept connections', pid, 20_000, `redis-server on port ${port}`);
  ctx.log(`redis ready on 127.0.0.1:${port}`);
  return {
    name: 'redis',
    env: { REDIS_HOST: '127.0.0.1', REDIS_PORT: String(port) },
    pids: [pid],
    dir,
    startSeconds: (Date.now() - began) / 1000,
  };
};
