/** The schedule store a Config asks for, and the Scheduler of a process (run-api.ts, run-worker.ts). */
import type { Broker } from '../broker/port.ts';
import type { Config } from '../config.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics.ts';
import type { TaskRegistry } from '../registry.ts';
import type { TaskStore } from '../store/port.ts';
import { MemoryScheduleStore } from './memory.ts';
import type { ScheduleStore } from './port.ts';
import { RedisScheduleStore } from './redis.ts';
import { Scheduler } from './scheduler.ts';

/** In process with STORE=memory; otherwise Redis, with the task store's connection settings and key prefix. */
export async function createScheduleStore(config: Config, logger: Logger): Promise<ScheduleStore> {
  if (config.store === 'memory') return new MemoryScheduleStore();
  const store = new RedisScheduleStore({ ...config.redis, opTimeoutMs: config.api.requestTimeoutMs, logger });
  // Never fails: while Redis is down the routes answer 503 and the scheduler's ticks retry.
  await store.connect();
  return store;
}

/**
 * The process's scheduler, ticking, or undefined with SCHEDULES_ENABLED=false. Its firings go
 * through the same submission path as POST /tasks, with the deployment's limits, so a
 * tenant's quota and rate limit count them.
 */
export function startScheduler(
  config: Config,
  deps: { schedules: ScheduleStore; store: TaskStore; broker: Broker; registry: TaskRegistry; logger: Logger; metrics?: Metrics },
): Scheduler | undefined {
  if (!config.schedules.enabled) return undefined;
  const s = config.schedules;
  return new Scheduler({
    schedules: deps.schedules,
    logger: deps.logger,
    defaultMaxAttempts: config.worker.maxAttempts,
    tickMs: s.tickMs,
    catchUpMs: s.catchUpSeconds * 1000,
    maxCatchUp: s.catchUpMax,
    submit: {
      store: deps.store,
      broker: deps.broker,
      logger: deps.logger,
      registry: deps.registry,
      requestTopic: config.topics.request,
      publishTimeoutMs: config.api.requestTimeoutMs,
      relayAfterMs: config.relayAfterMs,
      // A firing may be submitted again until its slot is older than the catch-up window (a
      // replica taking over after a crash): its Idempotency-Key must live at least that long.
      idempotencyTtlSeconds: Math.max(config.idempotencyTtlSeconds, s.catchUpSeconds + 600),
      limits: config.limits,
      // Firings count in the process's atq_tasks_submitted_total, source `schedule`.
      metrics: deps.metrics,
    },
  }).start();
}
