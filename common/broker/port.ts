/**
 * The broker port: the only way api/ and worker/ talk to a message broker. A handler that
 * resolves acknowledges its message; one that throws asks for redelivery. No offsets or
 * receipt handles cross this line: adapters own them.
 */
import { exponentialMs } from '../backoff.ts';

export interface OutgoingMessage {
  /** Partitioning / lookup key: the task id. RocketMQ: keys=[key]. */
  key: string;
  /** UTF-8 body, JSON in this product. */
  body: string;
  /** RocketMQ tag; carried as the `tag` header elsewhere. */
  tag?: string;
  /** Headers (Kafka) / user properties (RocketMQ). */
  headers?: Record<string, string>;
}

export interface Delivery {
  topic: string;
  key: string;
  body: string;
  tag: string | undefined;
  headers: Record<string, string>;
  /** 1 on first delivery, then one more per redelivery of this message. */
  attempt: number;
}

export type DeliveryHandler = (delivery: Delivery) => Promise<void>;

export interface SubscribeOptions {
  /** Handlers of this subscription running at once. Default 1. */
  concurrency?: number;
  /** Start a new group from the oldest retained message instead of the newest. Default true. */
  fromBeginning?: boolean;
}

export interface CloseOptions {
  /**
   * How long to wait for running handlers before leaving them behind; their messages are not
   * acknowledged and come back to another member. Default 30 000 ms.
   */
  graceMs?: number;
}

export interface Subscription {
  /** Stops taking messages, waits for running handlers (up to the grace), leaves. Safe twice. */
  close(opts?: CloseOptions): Promise<void>;
  /** Handlers running now. */
  readonly inFlight: number;
}

/** Counters since the broker was made, for the process statistics. */
export interface BrokerStats {
  /** Requests sent to the broker (publish batches, fetches or receives, acks or commits, ...). */
  requests: number;
}

export interface Broker {
  readonly kind: 'memory' | 'kafka' | 'rocketmq';
  readonly stats: BrokerStats;
  /**
   * The dead-letter topic of a consumer group: RocketMQ's `%DLQ%<group>` (where the broker
   * itself also moves messages after the group's max retries), `<group>.DLQ` elsewhere.
   */
  deadLetterTopic(group: string): string;
  /** Creates topics that are missing (a no-op where the broker manages them). */
  ensureTopics(topics: string[]): Promise<void>;
  /** Resolves once the broker has the message (Kafka acks=all, RocketMQ send receipt). */
  publish(topic: string, message: OutgoingMessage): Promise<void>;
  subscribe(topic: string, group: string, handler: DeliveryHandler, opts?: SubscribeOptions): Promise<Subscription>;
  /**
   * Messages of `topic` that `group` has not consumed yet (Kafka: the consumer lag, summed
   * over partitions), or null when the broker cannot tell. Optional: without it, null.
   */
  backlog?(topic: string, group: string): Promise<number | null>;
  /** Throws an UnavailableError when the broker cannot be reached. */
  ping(): Promise<void>;
  /** Closes every subscription and connection; runs every step even if one fails. Safe twice. */
  close(opts?: CloseOptions): Promise<void>;
}

/** UTF-8 size of a body, for batch limits. */
export const messageBytes = (body: string): number => Buffer.byteLength(body, 'utf8');

/** Exponential backoff before a failed delivery comes back: 200 ms, 400 ms, … at most 5 s. */
export const redeliveryDelayMs = (attempt: number): number => exponentialMs(attempt, 200, 5000);

/**
 * Waits for a subscription's running handlers, at most `graceMs` (default 30 000 ms).
 * Answers whether they all finished; what is left behind is not acknowledged and comes back.
 */
export async function drainHandlers(running: ReadonlySet<Promise<unknown>>, graceMs = 30_000): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([Promise.allSettled([...running]).then(() => true), new Promise<boolean>((r) => (timer = setTimeout(() => r(false), graceMs)))]);
  } finally {
    clearTimeout(timer);
  }
}
