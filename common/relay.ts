/**
 * The outbox relay (see store/port.ts): publishes request messages whose outbox entry is due
 * — a submission whose API died before publishing, a retry whose time has come, a running
 * task whose worker died — and sweeps expired tasks out of the listing indexes. Every API
 * and worker process runs one; they never collide on an entry because taking one pushes it
 * back. Duplicates are harmless: the claim is idempotent.
 */
import type { Broker } from './broker/port.ts';
import { errorMessage } from './errors.ts';
import type { Logger } from './logger.ts';
import type { TaskStore } from './store/port.ts';
import { isTerminal } from './task.ts';
import { requestOutgoing, requestTopicFor } from './messages.ts';

export interface RelayOptions {
  store: TaskStore;
  broker: Broker;
  /** Base request topic; each task goes to the topic of its priority. */
  topic: string;
  logger: Logger;
  /** Pause between scans. Default 1000 ms. */
  intervalMs?: number;
  /** How long a taken entry is left alone before another relay may take it. Default 10 000 ms. */
  holdMs?: number;
  /** Entries per scan. Default 100. */
  batch?: number;
}

export interface Relay {
  /** One scan; answers how many messages it published. */
  runOnce(): Promise<number>;
  stop(): Promise<void>;
}

export function startRelay(opts: RelayOptions): Relay {
  const { store, broker, topic, logger } = opts;
  const holdMs = opts.holdMs ?? 10_000;
  const batch = opts.batch ?? 100;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let current: Promise<unknown> = Promise.resolve();

  async function runOnce(): Promise<number> {
    let published = 0;
    const ids = await store.outboxDue(batch, holdMs);
    for (const id of ids) {
      const task = await store.get(id);
      if (!task || isTerminal(task.status)) {
        await store.disarmOutbox(id, task?.attempt ?? 0);
        continue;
      }
      const now = Date.now();
      if (task.status === 'running' && (task.leaseUntil ?? 0) > now) continue;
      // A retry or a delayed task not due yet; a waiting workflow step has nothing to publish before its needs are done.
      if ((task.status === 'queued' || task.status === 'scheduled') && (task.retryAt ?? 0) > now) continue;
      if (task.status === 'waiting') continue;
      await broker.publish(requestTopicFor(topic, task.priority), requestOutgoing(task));
      await store.disarmOutbox(id, task.attempt);
      published++;
      const what = { running: 'relay: republished a task whose worker stopped', scheduled: 'relay: published a delayed task now due' }[task.status as string];
      logger.info(what ?? 'relay: published a queued task', {
        task_id: id,
        status: task.status,
      });
    }
    return published;
  }

  // While Redis or the broker is down every scan fails: say so once, then every 30 s.
  let failingSince = 0;
  let lastWarn = 0;
  const loop = () => {
    if (stopped) return;
    current = runOnce()
      // The sweeper rides along: expired tasks leave the listing indexes.
      .then(() => store.sweep(batch * 5))
      .then(() => {
        if (failingSince) logger.info('relay scans work again', { failed_for_ms: Date.now() - failingSince });
        failingSince = 0;
      })
      .catch((err: unknown) => {
        const now = Date.now();
        failingSince ||= now;
        if (now - lastWarn < 30_000) return;
        lastWarn = now;
        logger.warn('relay scan failed; retrying every second', { err: errorMessage(err), failing_for_ms: now - failingSince });
      })
      .finally(() => {
        if (!stopped) timer = setTimeout(loop, opts.intervalMs ?? 1000);
      });
  };
  timer = setTimeout(loop, opts.intervalMs ?? 1000);

  return {
    runOnce,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await current;
    },
  };
}
