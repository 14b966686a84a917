/**
 * The API process (`npm run api`). With BROKER=memory — the default, `npm start` — it is the
 * embedded mode: the API and a worker in one process, nothing else to install.
 */
import { startTracing } from './common/tracing-sdk.ts';
import { serve } from '@hono/node-server';
import { createApp } from './api/app.ts';
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
import { newApiKey } from './common/api-keys.ts';
import { DEFAULT_TENANT } from './common/task.ts';
import { defaultRegistry } from './worker/task-types.ts';
import { Worker } from './worker/worker.ts';
import { Metrics } from './common/metrics.ts';
import { backlogProbe } from './common/backlog.ts';
import { createScheduleStore, startScheduler } from './common/schedules/wiring.ts';

const config = loadConfigOrExit();
// Traces are exported only when OTEL_EXPORTER_OTLP_ENDPOINT (or _TRACES_ENDPOINT) is set.
const tracing = await startTracing('agent-task-queue-api', config.tracing);
const embedded = config.broker === 'memory';
const logger = processLogger(config, embedded ? 'embedded' : 'api');
// One registry for the process: with the worker in process, /metrics shows both.
const metrics = new Metrics({ types: defaultRegistry().names() });
const broker = timedBroker(await createBroker(config, logger), metrics, config);
const backlog = backlogProbe(broker, { topic: config.topics.request, group: config.group });
metrics.trackBacklog(backlog);
const store = await createStore(config, logger);
await ensureTopics(broker, config, logger);
const registry = defaultRegistry();
reportStatsOnSignal(store, broker);

const worker = embedded ? new Worker({ broker, store, registry, logger, metrics, options: workerOptions(config) }) : undefined;
await worker?.start();
const relay = startRelay({ store, broker, topic: config.topics.request, logger });
// Cron schedules: every API and worker process fires them (each slot once, across all of them).
const schedules = await createScheduleStore(config, logger);
const scheduler = startScheduler(config, { schedules, store, broker, registry, logger, metrics });

const stopping = new AbortController();
const app = createApp({
  shutdownSignal: stopping.signal,
  metrics,
  backlog,
  store,
  schedules,
  broker,
  registry,
  logger,
  options: {
    requestTopic: config.topics.request,
    bodyLimit: config.api.bodyLimit,
    requestTimeoutMs: config.api.requestTimeoutMs,
    relayAfterMs: config.relayAfterMs,
    maxAttempts: config.worker.maxAttempts,
    idempotencyTtlSeconds: config.idempotencyTtlSeconds,
    resultTopic: config.topics.result,
    maxWaitSeconds: config.api.maxWaitSeconds,
    recheckMs: config.api.recheckMs,
    keepAliveMs: config.api.keepAliveMs,
    auth: { mode: config.auth },
    limits: config.limits,
  },
});

if (config.auth === 'off') {
  logger.warn('AUTH=off: the API takes no keys, and anyone who reaches it can read, stream and cancel every task', { tenant: 'default' });
  process.stderr.write(`\n  *** AUTH=off: no API keys are checked; every caller is tenant "default". Set AUTH=keys for anything but a laptop. ***\n`);
} else if (config.store === 'memory') {
  // Keys live in this process with the embedded store, so the CLI cannot reach them: start with one admin key.
  const { secret, hash, key } = newApiKey(DEFAULT_TENANT, ['tasks:write', 'tasks:read', 'admin'], 'bootstrap');
  await store.createKey(key, hash);
  process.stderr.write(
    `\n  AUTH=keys with the in-process store: a key for tenant "default" with every scope (shown once; make others with POST /admin/keys):\n  ${secret}\n`,
  );
}

const server = serve({ fetch: app.fetch, hostname: config.api.host, port: config.api.port }, (info) => {
  const host = config.api.host === '0.0.0.0' || config.api.host === '::' ? 'localhost' : config.api.host;
  const url = config.api.publicUrl ?? `http://${host}:${info.port}`;
  logger.info(`API listening on ${url}`, { broker: config.broker, store: config.store, embedded });
  // stdout, for people: the URL and a first request to try.
  process.stdout.write(
    `\nAgent task queue is up at ${url}  (broker: ${config.broker}, store: ${config.store}${embedded ? ', worker in process' : ''})\n\n` +
      `Try:\n  curl -s -X POST ${url}/tasks -H 'Content-Type: application/json' -d '{"user_id":"user123","content":"机械键盘降价了"}'\n` +
      `  curl -s ${url}/tasks/<task_id>\n\n`,
  );
});

onShutdown(logger, () =>
  closeAll(logger, [
    // No new firings while the process stops (the other replicas fire them).
    ['scheduler', () => scheduler?.stop()],
    // Open event streams and waits end first, or the server would wait for them.
    ['http server', () => (stopping.abort(), new Promise<void>((resolve) => server.close(() => resolve())))],
    ['worker', () => worker?.shutdown()],
    ['relay', () => relay.stop()],
    ['broker', () => broker.close({ graceMs: 1000 })],
    ['store', () => store.close()],
    ['schedule store', () => schedules.close()],
    ['tracing', () => tracing?.shutdown()],
  ]),
);
