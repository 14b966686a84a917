/**
 * The request backlog per priority, as the broker tells it (Broker.backlog: Kafka consumer
 * lag, the memory broker's queue), asked lazily — at a scrape or a GET /stats — with a timeout,
 * and cached for a few seconds so that frequent scrapes cost the broker nothing more.
 */
import type { Broker } from './broker/port.ts';
import { withTimeout } from './errors.ts';
import { groupFor, requestTopicFor } from './messages.ts';
import { PRIORITIES, type Priority } from './task.ts';

export type Backlog = Record<Priority, number | null>;

export interface BacklogProbeOptions {
  /** Base request topic and consumer group (each priority has its own, see messages.ts). */
  topic: string;
  group: string;
  /** Longest wait on the broker; past it the priority answers null. Default 2000 ms. */
  timeoutMs?: number;
  /** How long an answer is reused. Default 5000 ms. */
  cacheMs?: number;
}

const NONE: Backlog = { high: null, normal: null, low: null };

/** A function answering the backlog per priority; null where the broker cannot tell (RocketMQ) or did not answer in time. */
export function backlogProbe(broker: Broker, opts: BacklogProbeOptions): () => Promise<Backlog> {
  const timeoutMs = opts.timeoutMs ?? 2000;
  const cacheMs = opts.cacheMs ?? 5000;
  let cached: { at: number; value: Promise<Backlog> } | undefined;
  const ask = async (): Promise<Backlog> => {
    if (!broker.backlog) return NONE;
    const backlog = broker.backlog.bind(broker);
    const values = await Promise.all(
      PRIORITIES.map((p) =>
        withTimeout(backlog(requestTopicFor(opts.topic, p), groupFor(opts.group, p)), timeoutMs, () => new Error('backlog timed out')).catch(() => null),
      ),
    );
    return { high: values[0] ?? null, normal: values[1] ?? null, low: values[2] ?? null };
  };
  return () => {
    const now = Date.now();
    if (!cached || now - cached.at >= cacheMs) cached = { at: now, value: ask() };
    return cached.value;
  };
}
