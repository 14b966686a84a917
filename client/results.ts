/**
 * For downstream services: consume the result topic, once per task.
 *
 * Results arrive at least once (a worker that dies after publishing and before acking
 * publishes again), so the subscriber drops a result whose task it has already handled. That
 * memory is per subscriber process and holds the last `dedupWindow` task ids: a duplicate
 * that reaches another member of the group, arrives after a restart, or comes later than
 * `dedupWindow` other tasks is handled again. Make `onResult` idempotent (e.g. an upsert by
 * task id) if that matters; the dedup here saves the repeated work in the common case.
 */
import { KafkaBroker } from '../common/broker/kafka.ts';
import type { Broker, Subscription } from '../common/broker/port.ts';
import { createLogger, type Logger } from '../common/logger.ts';
import type { ResultMessage } from '../common/task.ts';

export type { ResultMessage };

export interface ResultSubscriptionOptions {
  /** The result topic, e.g. `TopicResult`. */
  topic: string;
  /** Your consumer group: each group gets every result. */
  group: string;
  /** Resolve to acknowledge; throw to have the result delivered again. */
  onResult: (msg: ResultMessage) => Promise<void> | void;
  /** Results handled at once. Default 1. */
  concurrency?: number;
  /** Task ids remembered as handled, the least recently seen forgotten first. Default 10 000. */
  dedupWindow?: number;
  /** Where dropped messages are reported. Default: warnings to stderr. */
  logger?: Logger;
}

const RESULT_STATUSES: ReadonlySet<unknown> = new Set(['done', 'failed', 'cancelled']);

/** A bounded set that forgets the least recently seen id first. */
class RecentIds {
  private readonly ids = new Set<string>();

  constructor(private readonly max: number) {}

  /** Whether `id` is here; a hit counts as a use. */
  has(id: string): boolean {
    if (!this.ids.delete(id)) return false;
    this.ids.add(id);
    return true;
  }

  add(id: string): void {
    this.ids.delete(id);
    this.ids.add(id);
    for (const oldest of this.ids) {
      if (this.ids.size <= this.max) break;
      this.ids.delete(oldest);
    }
  }
}

function parseResult(body: string): ResultMessage | undefined {
  let v: unknown;
  try {
    v = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (typeof v !== 'object' || v === null) return undefined;
  const m = v as Record<string, unknown>;
  const ok = m.v === 1 && typeof m.task_id === 'string' && m.task_id !== '' && typeof m.type === 'string' && RESULT_STATUSES.has(m.status);
  if (!ok) return undefined;
  // Results published before tenants carry none.
  if (typeof m.tenant !== 'string') m.tenant = 'default';
  return v as ResultMessage;
}

/** Subscribes `onResult` to the result topic, each task's result once (see the module comment). */
export async function subscribeResults(broker: Broker, opts: ResultSubscriptionOptions): Promise<Subscription> {
  const seen = new RecentIds(opts.dedupWindow ?? 10_000);
  const running = new Map<string, Promise<void>>();
  const logger = opts.logger ?? createLogger({ level: 'warn' }, { component: 'result-subscriber' });

  return broker.subscribe(
    opts.topic,
    opts.group,
    async (d) => {
      const msg = parseResult(d.body);
      if (!msg) {
        // Redelivering it would not make it a result: acknowledge and move on.
        logger.warn('dropped a message that is not a result message', { topic: d.topic, key: d.key, body: d.body.slice(0, 200) });
        return;
      }
      const id = msg.task_id;
      // A copy that arrives while the first is being handled waits for its outcome.
      for (let first = running.get(id); first; first = running.get(id)) await first.catch(() => undefined);
      if (seen.has(id)) return;
      const run = (async () => opts.onResult(msg))();
      running.set(id, run);
      try {
        await run;
        // Only now: a result whose handler threw must be handled when it comes back.
        seen.add(id);
      } finally {
        running.delete(id);
      }
    },
    { concurrency: opts.concurrency ?? 1 },
  );
}

export type ResultBrokerOptions =
  | { kind: 'kafka'; brokers: string[]; clientId?: string; logger?: Logger }
  | { kind: 'rocketmq'; endpoint: string; accessKey?: string; secretKey?: string; logger?: Logger };

/** A broker to read the result topic with, for services outside this package's config. */
export async function createResultBroker(opts: ResultBrokerOptions): Promise<Broker> {
  switch (opts.kind) {
    case 'kafka':
      return new KafkaBroker({ brokers: opts.brokers, clientId: opts.clientId, logger: opts.logger });
    case 'rocketmq': {
      // Loaded on demand, as in common/wiring.ts: the gRPC client is heavy.
      const { RocketMqBroker } = await import('../common/broker/rocketmq.ts');
      return new RocketMqBroker({ endpoint: opts.endpoint, accessKey: opts.accessKey, secretKey: opts.secretKey, logger: opts.logger });
    }
  }
}
