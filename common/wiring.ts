/**
 * Builds the adapters a Config asks for, and the process plumbing the entry points share.
 * Entry points only read config, build dependencies, start, and wire signals to close().
 */
import type { Broker } from './broker/port.ts';
import { KafkaBroker } from './broker/kafka.ts';
import { MemoryBroker } from './broker/memory.ts';
import type { Config } from './config.ts';
import { ConfigError, errorMessage } from './errors.ts';
import { loadConfig } from './config.ts';
import { allRequestTopics } from './messages.ts';
import { createLogger, type Logger } from './logger.ts';
import { instrumentBroker, topicKinds, type Metrics } from './metrics.ts';
import { MemoryTaskStore } from './store/memory.ts';
import type { TaskStore } from './store/port.ts';
import { RedisTaskStore } from './store/redis.ts';

/** The broker with its publishes timed in `metrics` by topic kind (request, result, dead_letter). */
export function timedBroker(broker: Broker, metrics: Metrics, config: Config): Broker {
  return instrumentBroker(broker, metrics, topicKinds(allRequestTopics(config.topics.request), config.topics.result, broker.deadLetterTopic(config.group)));
}

export async function createBroker(config: Config, logger: Logger): Promise<Broker> {
  switch (config.broker) {
    case 'memory':
      return new MemoryBroker();
    case 'kafka':
      return new KafkaBroker({ ...config.kafka, logger });
    case 'rocketmq': {
      // Loaded on demand: the gRPC client is heavy and only RocketMQ deployments need it.
      const { RocketMqBroker } = await import('./broker/rocketmq.ts');
      return new RocketMqBroker({ ...config.rocketmq, logger });
    }
  }
}

/** Where Redis is, for logs: never the password. */
function redisWhere(config: Config): string {
  const { url, host, port, cluster } = config.redis;
  const where = url ? new URL(url) : undefined;
  if (where) where.password = where.password ? '***' : '';
  return `${where ? where.toString() : `${host}:${port}`}${cluster ? ' (cluster)' : ''}`;
}

export async function createStore(config: Config, logger: Logger): Promise<TaskStore> {
  const opts = {
    resultTtlSeconds: config.resultTtlSeconds,
    historyLimit: config.historyLimit,
    outputLimitBytes: config.outputLimitBytes,
    readyPublishDelayMs: config.relayAfterMs,
  };
  if (config.store === 'memory') return new MemoryTaskStore(opts);
  const store = new RedisTaskStore({ ...config.redis, ...opts, opTimeoutMs: config.api.requestTimeoutMs, logger });
  if (!(await store.connect())) {
    logger.warn('redis is not reachable yet; starting anyway and retrying in the background', { redis: redisWhere(config) });
  }
  return store;
}

/** Creates the topics if the broker is up; otherwise logs and goes on (publishing retries). */
export async function ensureTopics(broker: Broker, config: Config, logger: Logger): Promise<void> {
  try {
    await broker.ensureTopics([...allRequestTopics(config.topics.request), config.topics.result, broker.deadLetterTopic(config.group)]);
  } catch (err) {
    logger.warn('could not check or create the topics yet', { err: errorMessage(err) });
  }
}

export function workerOptions(config: Config) {
  return {
    ...config.worker,
    maxRunningPerTenant: config.limits.maxRunning,
    throttleMs: config.throttleMs,
    heartbeatMs: config.heartbeatMs,
    requestTopic: config.topics.request,
    resultTopic: config.topics.result,
    group: config.group,
    publishTimeoutMs: config.api.requestTimeoutMs,
    relayAfterMs: config.relayAfterMs,
    limits: { submitsPerSecond: config.limits.submitsPerSecond, quotaUnits: config.limits.quotaUnits, quotaWindowSeconds: config.limits.quotaWindowSeconds },
  };
}

/** Reads the configuration, or prints what is wrong with it and exits 1. */
export function loadConfigOrExit(): Config {
  try {
    return loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\nSee .env.example for every setting.\n`);
      process.exit(1);
    }
    throw err;
  }
}

export function processLogger(config: Config, role: string): Logger {
  return createLogger(config.log, { role });
}

/**
 * Runs `close` on the first SIGINT/SIGTERM and exits 0 when it resolves (1 if it throws);
 * a second signal exits at once.
 */
export function onShutdown(logger: Logger, close: (signal: string) => Promise<void>): void {
  let closing = false;
  const handler = (signal: NodeJS.Signals) => {
    if (closing) {
      logger.warn('second signal: exiting now', { signal });
      process.exit(1);
    }
    closing = true;
    logger.info('shutting down', { signal });
    close(signal).then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error('shutdown failed', { err: errorMessage(err) });
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  process.on('unhandledRejection', (err) => logger.error('unhandled rejection', { err: errorMessage(err) }));
}

/** Closes every resource in order; a failing step is logged and the rest still run. */
export async function closeAll(logger: Logger, steps: [string, () => Promise<unknown> | undefined][]): Promise<void> {
  for (const [name, step] of steps) {
    try {
      await step();
    } catch (err) {
      logger.warn(`closing ${name} failed`, { err: errorMessage(err) });
    }
  }
}

/**
 * On SIGUSR2, writes one JSON line of this process's counters to stdout, whatever the log
 * level: CPU time, memory, and the round trips to Redis and the broker since start. The
 * comparison benchmark reads two of them to measure the cost per task.
 */
export function reportStatsOnSignal(store: TaskStore, broker: Broker, extra: () => Record<string, number> = () => ({})): void {
  process.on('SIGUSR2', () => {
    const cpu = process.cpuUsage();
    const line = {
      msg: 'process stats',
      pid: process.pid,
      cpu_user_us: cpu.user,
      cpu_system_us: cpu.system,
      rss_bytes: process.memoryUsage.rss(),
      redis_round_trips: store.stats.roundTrips,
      broker_requests: broker.stats.requests,
      ...extra(),
    };
    process.stdout.write(`${JSON.stringify(line)}\n`);
  });
}
