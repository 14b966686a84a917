/**
 * What the BullMQ front and workers of the comparison share: settings from the environment,
 * a node-redis connection (BullMQ 6 takes a node-redis client as is; ioredis is not installed),
 * the `process stats` line on SIGUSR2 (the same contract as run-api.ts and run-worker.ts), and
 * a clean stop on SIGTERM/SIGINT.
 */
import { createClient } from 'redis';

export const settings = {
  redisHost: process.env.REDIS_HOST ?? '127.0.0.1',
  redisPort: Number(process.env.REDIS_PORT ?? '6379'),
  queue: process.env.BULLMQ_QUEUE ?? 'bench-agent',
  prefix: process.env.BULLMQ_PREFIX ?? 'bull',
  apiHost: process.env.API_HOST ?? '127.0.0.1',
  apiPort: Number(process.env.API_PORT ?? '0'),
  concurrency: Number(process.env.WORKER_CONCURRENCY ?? '16'),
  maxAttempts: Number(process.env.MAX_ATTEMPTS ?? '3'),
};

export const connection = () => createClient({ socket: { host: settings.redisHost, port: settings.redisPort } });

/** On SIGUSR2, one line on stdout: cumulative CPU and RSS (Redis commands are counted by the benchmark from INFO commandstats). */
export function installStatsSignal(): void {
  process.on('SIGUSR2', () => {
    const cpu = process.cpuUsage();
    process.stdout.write(
      `${JSON.stringify({ msg: 'process stats', cpu_user_us: cpu.user, cpu_system_us: cpu.system, rss_bytes: process.memoryUsage.rss() })}\n`,
    );
  });
}

export function onStop(close: () => Promise<void>): void {
  let closing = false;
  const handler = () => {
    if (closing) process.exit(1);
    closing = true;
    close().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`close failed: ${err instanceof Error ? err.message : String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
}
