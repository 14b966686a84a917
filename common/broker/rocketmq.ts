/**
 * Apache RocketMQ 5 adapter (rocketmq-client-nodejs, the gRPC client of the 5.x proxy).
 *
 * - Publishing: one Producer; keys=[key], tag, headers as user properties; concurrent sends.
 * - Acks of one subscription are coalesced (common/batcher.ts) into one AckMessageRequest
 *   (rocketmq-batch.ts).
 * - Consuming: a SimpleConsumer per subscription. Messages are received with an invisible
 *   duration (the broker's hold); while a handler runs the hold is extended with
 *   changeInvisibleDuration; a handler that resolves acks; one that throws makes the message
 *   visible again after a short backoff. deliveryAttempt is the attempt count. After the
 *   group's max retries RocketMQ moves the message to %DLQ%<group> itself.
 * - The client's startup() waits for ever when the proxy is down: it is bounded here.
 */
import { exponentialMs, sleep } from '../backoff.ts';
import { format } from 'node:util';
import { FilterExpression, Producer, SimpleConsumer, type ILogger, type MessageView } from 'rocketmq-client-nodejs';
import { UnavailableError, errorMessage, withTimeout } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { silentLogger } from '../logger.ts';
import { Batcher } from '../batcher.ts';
import { ackMessages } from './rocketmq-batch.ts';
import type { Broker, BrokerStats, CloseOptions, Delivery, DeliveryHandler, OutgoingMessage, SubscribeOptions, Subscription } from './port.ts';
import { drainHandlers, redeliveryDelayMs } from './port.ts';

export interface RocketMqBrokerOptions {
  /** gRPC endpoint of the proxy, host:port. */
  endpoint: string;
  accessKey?: string;
  secretKey?: string;
  namespace?: string;
  /**
   * How long a received message stays invisible to others; renewed while it runs. Default
   * 30 000 ms; the 5.x proxy refuses less than 10 000 ms (minInvisibleTimeMillsForRecv).
   */
  invisibleMs?: number;
  /** Long-polling wait of one receive call. Default 5000 ms. */
  awaitMs?: number;
  /** Bound on client startup. Default 15 000 ms. */
  startupTimeoutMs?: number;
  /** Timeout of one RPC. Default 5000 ms. */
  requestTimeoutMs?: number;
  logger?: Logger;
}

/**
 * Adapts our logger to the client's printf-style ILogger; its info lines become debug. While
 * the proxy is down each client logs the same error every second: one line per kind of
 * error every 10 s is enough.
 */
function clientLogger(log: Logger): ILogger {
  const lastSeen = new Map<string, number>();
  const warnRarely = (line: string) => {
    const kind = line.replace(/clientId=\S+|endpoints=\S+|\d+/g, '').slice(0, 80);
    const now = Date.now();
    if (now - (lastSeen.get(kind) ?? 0) < 10_000) return;
    if (lastSeen.size > 100) lastSeen.clear();
    lastSeen.set(kind, now);
    log.warn(line);
  };
  return {
    info: (...a: unknown[]) => log.debug(format(...a)),
    debug: (...a: unknown[]) => log.debug(format(...a)),
    warn: (...a: unknown[]) => log.debug(format(...a)),
    error: (...a: unknown[]) => warnRarely(format(...a)),
  };
}

/** The proxy's default minimum invisible duration for a receive. */
export const MIN_INVISIBLE_MS = 10_000;

export class RocketMqBroker implements Broker {
  readonly kind = 'rocketmq' as const;
  private readonly opts: Required<Omit<RocketMqBrokerOptions, 'logger' | 'accessKey' | 'secretKey'>> & { accessKey: string; secretKey: string };
  private readonly logger: Logger;
  private producer: Producer | undefined;
  private producerReady: Promise<Producer> | undefined;
  private readonly subs = new Set<Subscription>();
  private closed = false;
  /** Sends not yet answered: close() waits for them before it shuts the producer down. */
  private readonly sending = new Set<Promise<unknown>>();
  /** Our own calls to the proxy (sends, receives, acks, invisible-duration changes); not the client's heartbeats. */
  readonly stats: BrokerStats = { requests: 0 };

  constructor(opts: RocketMqBrokerOptions) {
    this.logger = (opts.logger ?? silentLogger).child({ broker: 'rocketmq' });
    this.opts = {
      endpoint: opts.endpoint,
      accessKey: opts.accessKey ?? '',
      secretKey: opts.secretKey ?? '',
      namespace: opts.namespace ?? '',
      invisibleMs: Math.max(MIN_INVISIBLE_MS, opts.invisibleMs ?? 30_000),
      awaitMs: opts.awaitMs ?? 5000,
      startupTimeoutMs: opts.startupTimeoutMs ?? 15_000,
      requestTimeoutMs: opts.requestTimeoutMs ?? 5000,
    };
  }

  private base() {
    return {
      endpoints: this.opts.endpoint,
      namespace: this.opts.namespace,
      requestTimeout: this.opts.requestTimeoutMs,
      logger: clientLogger(this.logger),
      ...(this.opts.accessKey ? { sessionCredentials: { accessKey: this.opts.accessKey, accessSecret: this.opts.secretKey } } : {}),
    };
  }

  /** startup() with a bound; on timeout the half-started client is shut down. */
  private async start<C extends { startup(): Promise<void>; shutdown(): Promise<void> }>(client: C, what: string): Promise<C> {
    try {
      await withTimeout(client.startup(), this.opts.startupTimeoutMs, () => new Error(`${what} did not start within ${this.opts.startupTimeoutMs} ms`));
      return client;
    } catch (err) {
      void client.shutdown().catch(() => undefined);
      throw new UnavailableError('broker', `rocketmq ${what} could not start at ${this.opts.endpoint}: ${errorMessage(err)}`, { cause: err });
    }
  }

  private getProducer(): Promise<Producer> {
    this.producerReady ??= this.start(new Producer(this.base()), 'producer')
      .then((p) => (this.producer = p))
      .catch((err: unknown) => {
        this.producerReady = undefined;
        throw err;
      });
    return this.producerReady;
  }

  deadLetterTopic(group: string): string {
    return `%DLQ%${group}`;
  }

  /** Topics are created by the operator (mqadmin updateTopic / the dashboard); this checks they route. */
  async ensureTopics(topics: string[]): Promise<void> {
    const producer = await this.getProducer();
    // getRouteData is protected in the typings; a route lookup is the cheapest existence check.
    const routed = producer as unknown as { getRouteData(t: string): Promise<unknown> };
    for (const t of topics) await routed.getRouteData(t);
  }

  /**
   * One send per message, concurrently (gRPC multiplexes them on one connection). Not batched:
   * the 5.3 proxy gives every message of a multi-message SendMessageRequest the keys and user
   * properties of the first one (seen with 5.3.3), and each message carries its own.
   */
  async publish(topic: string, message: OutgoingMessage): Promise<void> {
    if (this.closed) throw new Error('rocketmq broker is closed');
    const producer = await this.getProducer();
    this.stats.requests++;
    const sending = producer.send({
      topic,
      body: Buffer.from(message.body, 'utf8'),
      keys: [message.key],
      ...(message.tag !== undefined ? { tag: message.tag } : {}),
      properties: new Map(Object.entries(message.headers ?? {})),
    });
    this.sending.add(sending);
    try {
      await sending;
    } finally {
      this.sending.delete(sending);
    }
  }

  async subscribe(topic: string, group: string, handler: DeliveryHandler, opts: SubscribeOptions = {}): Promise<Subscription> {
    if (this.closed) throw new Error('rocketmq broker is closed');
    const log = this.logger.child({ topic, group });
    const { invisibleMs } = this.opts;
    const consumer = await this.start(
      new SimpleConsumer({
        ...this.base(),
        consumerGroup: group,
        subscriptions: new Map([[topic, FilterExpression.SUB_ALL]]),
        awaitDuration: this.opts.awaitMs,
      }),
      `consumer ${group}`,
    );
    const concurrency = opts.concurrency ?? 1;
    const acks = new Batcher<MessageView>({
      maxBatch: 256,
      timeoutMs: this.opts.requestTimeoutMs,
      send: async (views) => {
        this.stats.requests++;
        await ackMessages(consumer, group, views, this.opts.requestTimeoutMs);
        return views.map(() => undefined);
      },
    });
    const running = new Set<Promise<void>>();
    let stopping = false;
    let wake: (() => void) | undefined;

    const runDelivery = async (mv: MessageView): Promise<void> => {
      // Keep the message invisible to the rest of the group while its handler runs.
      let renewing: Promise<void> = Promise.resolve();
      const renew = setInterval(
        () => {
          renewing = consumer
            .changeInvisibleDuration(mv, invisibleMs)
            .catch((err: unknown) => log.warn('could not extend the hold on a message', { key: mv.keys[0], err: errorMessage(err) }));
        },
        Math.max(1000, Math.floor(invisibleMs / 3)),
      );
      const props = Object.fromEntries(mv.properties);
      const d: Delivery = { topic, key: mv.keys[0] ?? '', body: mv.body.toString('utf8'), tag: mv.tag, headers: props, attempt: mv.deliveryAttempt ?? 1 };
      let ok = false;
      try {
        await handler(d);
        ok = true;
      } catch (err) {
        log.warn('handler failed; message will be redelivered', { key: d.key, attempt: d.attempt, err: errorMessage(err) });
      } finally {
        clearInterval(renew);
        await renewing;
      }
      try {
        if (ok) await acks.add(mv);
        else {
          this.stats.requests++;
          await consumer.changeInvisibleDuration(mv, redeliveryDelayMs(d.attempt));
        }
      } catch (err) {
        // Not acked: the message comes back when its invisible duration ends.
        log.warn(ok ? 'ack failed; the message will come back' : 'could not release a failed message early', { key: d.key, err: errorMessage(err) });
      }
    };

    const loop = (async () => {
      let failures = 0;
      while (!stopping) {
        const free = concurrency - running.size;
        if (free <= 0) {
          await new Promise<void>((r) => (wake = r));
          continue;
        }
        let batch: MessageView[];
        try {
          this.stats.requests++;
          batch = await consumer.receive(Math.min(free, 32), invisibleMs);
          failures = 0;
        } catch (err) {
          failures++;
          if (failures === 1 || failures % 30 === 0) log.warn('receive failed; retrying', { err: errorMessage(err), failures });
          await sleep(exponentialMs(failures + 1, 200, 3000));
          continue;
        }
        for (const mv of batch) {
          if (stopping) {
            // Hand back at once what arrived during shutdown rather than hold it for the full duration.
            void consumer.changeInvisibleDuration(mv, 1000).catch(() => undefined);
            continue;
          }
          const run = runDelivery(mv).finally(() => {
            running.delete(run);
            wake?.();
          });
          running.add(run);
        }
      }
    })();

    let closing: Promise<void> | undefined;
    const sub: Subscription = {
      get inFlight() {
        return running.size;
      },
      close: (closeOpts: CloseOptions = {}) => {
        closing ??= (async () => {
          stopping = true;
          wake?.();
          const drained = await drainHandlers(running, closeOpts.graceMs);
          if (!drained) log.warn('left running handlers behind; their messages will be redelivered', { inFlight: running.size });
          // The receive loop ends after its current long poll.
          await Promise.race([loop, sleep(this.opts.awaitMs + this.opts.requestTimeoutMs)]);
          await acks.close();
          await consumer.shutdown().catch((err: unknown) => log.warn('consumer shutdown failed', { err: errorMessage(err) }));
          this.subs.delete(sub);
        })();
        return closing;
      },
    };
    this.subs.add(sub);
    return sub;
  }

  /**
   * Not known: the Node client (rocketmq-client-nodejs 1.0.8) has no public call for a
   * group's lag. The proxy's gRPC protocol does have QueryOffset (a queue's max offset) and
   * GetOffset (a group's consume offset), reachable only through the client's protected
   * internals, and with pop consumption the consume offset moves when a message is popped,
   * not when it is acked, so it would not count messages in flight. See the README.
   */
  backlog(): Promise<number | null> {
    return Promise.resolve(null);
  }

  async ping(): Promise<void> {
    await withTimeout(
      this.routesAnswer(),
      this.opts.requestTimeoutMs,
      () => new UnavailableError('broker', `rocketmq did not answer within ${this.opts.requestTimeoutMs} ms`),
    );
  }

  /** A round trip to the proxy: the routes of the topics in use, asked again (not from the cache). */
  private async routesAnswer(): Promise<void> {
    try {
      const producer = await this.getProducer();
      await (producer as unknown as { updateRoutes(): Promise<void> }).updateRoutes();
    } catch (err) {
      if (err instanceof UnavailableError) throw err;
      throw new UnavailableError('broker', `rocketmq is unreachable: ${errorMessage(err)}`, { cause: err });
    }
  }

  async close(opts?: CloseOptions): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.subs].map((s) => s.close(opts)));
    await Promise.allSettled([...this.sending]);
    await this.producer?.shutdown().catch((err: unknown) => this.logger.warn('producer shutdown failed', { err: errorMessage(err) }));
  }
}
