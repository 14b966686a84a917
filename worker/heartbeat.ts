/**
 * A worker's entry in the live-worker list (GET /stats): written at start and every
 * `intervalMs`, with a time to live of two intervals, so a worker that dies leaves the list
 * within two heartbeats; removed on a graceful shutdown.
 */
import { hostname } from 'node:os';
import { errorMessage } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import type { TaskStore, WorkerInfo } from '../common/store/port.ts';
import { PRODUCT_VERSION } from '../common/version.ts';

export interface Heartbeat {
  /** Stops beating and removes the entry. */
  stop(): Promise<void>;
}

export function startHeartbeat(
  store: TaskStore,
  worker: { id: string; concurrency: number; running(): number },
  intervalMs: number,
  logger: Logger,
): Heartbeat {
  const startedAt = Date.now();
  const info = (): WorkerInfo => ({
    id: worker.id,
    host: hostname(),
    concurrency: worker.concurrency,
    running: worker.running(),
    startedAt,
    version: PRODUCT_VERSION,
  });
  let failing = false;
  let current: Promise<void> = Promise.resolve();
  const beat = () => {
    current = store.heartbeat(info(), 2 * intervalMs).then(
      () => {
        if (failing) logger.info('worker heartbeat works again');
        failing = false;
      },
      (err: unknown) => {
        if (!failing) logger.warn('worker heartbeat failed; retrying', { err: errorMessage(err) });
        failing = true;
      },
    );
  };
  beat();
  const timer = setInterval(beat, intervalMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await current;
      await store.removeWorker(worker.id).catch((err: unknown) => logger.warn('could not remove the worker entry', { err: errorMessage(err) }));
    },
  };
}
