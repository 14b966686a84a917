/** A worker process: one member of the consumer group. `npm run worker`. */
import { startTracing } from './common/tracing-sdk.ts';
import { startRelay } from './common/relay.ts';
import {
  closeAll,
  createBroker,
  createStore,
  ensureTopics,
  loadConfigOrExit,
  onShutdown,
  processLogger,
  reportStatsOnSignal,
  timedBroker,
  workerOptions,
} from './common/wiring.ts';
import { defaultRegistry } from './worker/task-types.ts';
import { Worker } from './worker/worker.ts';
import { Metrics } from './common/metrics.ts';
import { serveMetrics } from './common/metrics-server.ts';
import { createScheduleStore, startScheduler } from './common/schedules/wiring.ts';

const config = loadConfigOrExit();
// Traces are exported only when OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT) is set.
const tracing = await startTracing('agent-task-queue-worker', config.tracing);
const logger = processLogger(config, 'worker');
if (config.broker === 'memory') {
  logger.error('BROKER=memory lives inside one process: run `npm start` for the embedded mode, or set BROKER=kafka|rocketmq');
  process.exit(1);
}
const metrics = new Metrics({ types: defaultRegistry().names() });
const broker = timedBroker(await createBroker(config, logger), metrics, config);
const store = await createStore(config, logger);
await ensureTopics(broker, config, logger);
const worker = new Worker({ broker, store, registry: defaultRegistry(), logger, metrics, options: workerOptions(config) });
reportStatsOnSignal(store, broker, () => ({
  tasks_done: worker.stats.done,
  handler_runs: worker.stats.handlerRuns,
  duplicates: worker.stats.duplicates,
  throttled: worker.stats.throttled,
  worker_lost: worker.stats.workerLost,
}));
const metricsServer = config.metricsPort > 0 ? await serveMetrics(metrics, config.metricsPort, logger) : undefined;
const relay = startRelay({ store, broker, topic: config.topics.request, logger });
// Cron schedules: every API and worker process fires them (each slot once, across all of them).
const schedules = await createScheduleStore(config, logger);
const scheduler = startScheduler(config, { schedules, store, broker, registry: defaultRegistry(), logger, metrics });
onShutdown(logger, () =>
  closeAll(logger, [
    // No new firings while the process stops (the other replicas fire them).
    ['scheduler', () => scheduler?.stop()],
    ['worker', () => worker.shutdown()],
    ['metrics server', () => metricsServer?.close()],
    ['relay', () => relay.stop()],
    ['broker', () => broker.close({ graceMs: 1000 })],
    ['store', () => store.close()],
    ['schedule store', () => schedules.close()],
    ['tracing', () => tracing?.shutdown()],
  ]),
);
await worker.start();
