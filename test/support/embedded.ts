/**
 * The embedded stack for unit tests: the memory store and broker, a worker, optionally a
 * relay, and the app, wired as run-api.ts wires them with BROKER=memory. Callers get the
 * parts and push nothing themselves: `cleanups` takes what must be stopped after the test.
 */
import { createApp, type AppDeps } from '../../api/app.ts';
import { MemoryBroker } from '../../common/broker/memory.ts';
import { silentLogger } from '../../common/logger.ts';
import type { TaskRegistry } from '../../common/registry.ts';
import { startRelay } from '../../common/relay.ts';
import { MemoryTaskStore } from '../../common/store/memory.ts';
import type { TaskStoreOptions } from '../../common/store/port.ts';
import { Worker } from '../../worker/worker.ts';

export interface EmbeddedOptions {
  registry: TaskRegistry;
  store?: TaskStoreOptions;
  /** Worker slots. Default 4. */
  concurrency?: number;
  /** Start the worker now. Default true. */
  startWorker?: boolean;
  /** Run a relay (delayed tasks, readied workflow steps after a crash) scanning every 50 ms. Default false. */
  relay?: boolean;
  /** App options over the defaults below. */
  app?: Partial<AppDeps['options']>;
}

export async function embeddedStack(cleanups: (() => Promise<unknown>)[], opts: EmbeddedOptions) {
  const store = new MemoryTaskStore(opts.store);
  const broker = new MemoryBroker();
  const { registry } = opts;
  const worker = new Worker({
    broker,
    store,
    registry,
    logger: silentLogger,
    options: {
      id: 'w1',
      requestTopic: 'req',
      resultTopic: 'res',
      group: 'g',
      concurrency: opts.concurrency ?? 4,
      leaseMs: 5000,
      shutdownGraceMs: 1000,
      retryBaseMs: 20,
      retryMaxMs: 50,
      taskTimeoutMs: 10_000,
    },
  });
  if (opts.startWorker !== false) await worker.start();
  const stopping = new AbortController();
  cleanups.push(
    () => broker.close({ graceMs: 0 }),
    () => worker.shutdown(),
    () => Promise.resolve(stopping.abort()),
  );
  if (opts.relay) {
    const relay = startRelay({ store, broker, topic: 'req', logger: silentLogger, intervalMs: 50 });
    cleanups.push(() => relay.stop());
  }
  const app = createApp({
    store,
    broker,
    registry,
    logger: silentLogger,
    shutdownSignal: stopping.signal,
    options: { requestTopic: 'req', resultTopic: 'res', bodyLimit: 1 << 20, requestTimeoutMs: 1000, relayAfterMs: 5000, maxAttempts: 3, ...opts.app },
  });
  return { store, broker, registry, worker, app };
}
