/**
 * Apache Kafka adapter (kafkajs).
 *
 * - Publishing: one idempotent producer per broker, acks=all. Concurrent publishes are
 *   coalesced into one `sendBatch` (common/batcher.ts): each caller resolves once the broker
 *   acknowledged the batch that carried its message, and a failed batch fails each caller.
 * - Consuming: eachMessage only hands the message to a pool of `concurrency` slots and
 *   returns, so the fetch loop (and with it the group heartbeats) keeps going while a task
 *   runs for minutes. When every slot is busy, eachMessage waits and heartbeats meanwhile.
 * - Offsets are committed by hand, up to the first unfinished offset of each partition; the
 *   commits that come while one is in flight are merged into the next (the highest per partition).
 * - A handler that throws: the message is published again to the same topic with an
 *   `x-attempt` header one higher (after a backoff) and its offset is then finished, so a
 *   failing message never blocks its partition.
 */
import { Kafka, logLevel, type Admin, type Consumer, type IHeaders, type LogEntry, type Message, type Producer } from 'kafkajs';
import { Batcher } from '../batcher.ts';
import { UnavailableError, errorMessage, withTimeout } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { silentLogger } from '../logger.ts';
import { OffsetTracker, Slots } from './offset-tracker.ts';
import type { Broker, CloseOptions, Delivery, DeliveryHandler, OutgoingMessage, SubscribeOptions, Subscription } from './port.ts';
import { sleep } from '../backoff.ts';
import { drainHandlers, messageBytes, redeliveryDelayMs, type BrokerStats } from './port.ts';

export const ATTEMPT_HEADER = 'x-attempt';
export const TAG_HEADER = 'tag';

export interface KafkaBrokerOptions {
  brokers: string[];
  clientId?: string;
  /** Partitions of topics created by ensureTopics. Default 8. */
  partitions?: number;
  /** Consumer session timeout. Default 30 000 ms. */
  sessionTimeoutMs?: number;
  /** Timeout of ping and of topic creation. Default 5000 ms. */
  opTimeoutMs?: number;
  /** Most messages in one produce request. Default 500. */
  maxBatch?: number;
  /** Most bytes of message bodies in one produce request; keep it under the broker's message.max.bytes. Default 512 KiB. */
  maxBatchBytes?: number;
  logger?: Logger;
}

function headersToRecord(h: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h ?? {})) {
    if (v === undefined) continue;
    const first = Array.isArray(v) ? v[0] : v;
    if (first !== undefined) out[k] = first.toString();
  }
  return out;
}

export class KafkaBroker implements Broker {
  readonly kind = 'kafka' as const;
  private readonly kafka: Kafka;
  private readonly logger: Logger;
  private readonly partitions: number;
  private readonly sessionTimeoutMs: number;
  private readonly opTimeoutMs: number;
  private producer: Producer | undefined;
  private producerReady: Promise<Producer> | undefined;
  private admin: Admin | undefined;
  private adminReady: Promise<Admin> | undefined;
  private readonly subs = new Set<Subscription>();
  private readonly publisher: Batcher<{ topic: string; message: Message }>;
  private closed = false;
  readonly stats: BrokerStats = { requests: 0 };

  constructor(opts: KafkaBrokerOptions) {
    this.logger = opts.logger ?? silentLogger;
    this.partitions = opts.partitions ?? 8;
    this.sessionTimeoutMs = opts.sessionTimeoutMs ?? 30_000;
    this.opTimeoutMs = opts.opTimeoutMs ?? 5000;
    const log = this.logger.child({ broker: 'kafka' });
    this.kafka = new Kafka({
      clientId: opts.clientId ?? 'agent-task-queue',
      brokers: opts.brokers,
      connectionTimeout: 3000,
      retry: { retries: 5, initialRetryTime: 200, maxRetryTime: 5000 },
      logLevel: logLevel.WARN,
      logCreator:
        () =>
        ({ level, log: entry }: LogEntry) => {
          const { message, ...rest } = entry;
          // kafkajs reports rebalances and reconnects as errors; they are routine here.
          const fields: Record<string, unknown> = { error: rest.error as unknown, groupId: rest.groupId as unknown };
          if (level <= logLevel.ERROR) log.warn(`kafkajs: ${message}`, fields);
          else log.debug(`kafkajs: ${message}`, fields);
        },
    });
    this.publisher = new Batcher({
      maxBatch: opts.maxBatch ?? 500,
      maxBatchBytes: opts.maxBatchBytes ?? 512 * 1024,
      // One sendBatch at a time, never cut short: the idempotent producer numbers each
      // partition's batches in order, and two batches in flight at once could carry the same
      // sequence, which the broker would take for a duplicate of the first and drop. A batch
      // stuck while the broker is away ends by the producer's own short retries (below).
      weigh: (m) => messageBytes(m.message.value as string),
      send: async (items) => {
        const producer = await this.getProducer();
        const byTopic = new Map<string, Message[]>();
        for (const { topic, message } of items) {
          const list = byTopic.get(topic);
          if (list) list.push(message);
          else byTopic.set(topic, [message]);
        }
        await producer.sendBatch({ acks: -1, topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })) });
        return items.map(() => undefined);
      },
    });
  }

  /** Counts every protocol request our clients send (produce, fetch, commit, heartbeat, metadata). */
  private readonly countRequest = () => {
    this.stats.requests++;
  };

  private getProducer(): Promise<Producer> {
    this.producerReady ??= (async () => {
      // Retries close together (at most 1 s apart, about 10 s in all), so that a batch caught by a
      // broker restart goes out soon after the broker is back; the callers' own timeout (the
      // API's 503) is shorter still.
      const p = this.kafka.producer({
        idempotent: true,
        maxInFlightRequests: 1,
        allowAutoTopicCreation: false,
        retry: { retries: 10, initialRetryTime: 100, maxRetryTime: 1000 },
      });
      p.on(p.events.REQUEST, this.countRequest);
      this.producer = p;
      await p.connect();
      return p;
    })().catch((err: unknown) => {
      this.producerReady = undefined;
      throw err;
    });
    return this.producerReady;
  }

  private getAdmin(): Promise<Admin> {
    this.adminReady ??= (async () => {
      const a = this.kafka.admin();
      a.on(a.events.REQUEST, this.countRequest);
      this.admin = a;
      await a.connect();
      return a;
    })().catch((err: unknown) => {
      this.adminReady = undefined;
      throw err;
    });
    return this.adminReady;
  }

  deadLetterTopic(group: string): string {
    return `${group}.DLQ`;
  }

  async ensureTopics(topics: string[]): Promise<void> {
    const admin = await this.getAdmin();
    const existing = new Set(await admin.listTopics());
    const missing = topics.filter((t) => !existing.has(t));
    if (missing.length === 0) return;
    try {
      await admin.createTopics({ topics: missing.map((topic) => ({ topic, numPartitions: this.partitions })), waitForLeaders: true });
      this.logger.info('kafka topics created', { topics: missing, partitions: this.partitions });
    } catch (err) {
      // Another process may have created them in the meantime.
      const now = new Set(await admin.listTopics());
      if (!missing.every((t) => now.has(t))) throw err;
    }
  }

  async publish(topic: string, message: OutgoingMessage): Promise<void> {
    if (this.closed) throw new Error('kafka broker is closed');
    const headers: Record<string, string> = { ...message.headers };
    if (message.tag !== undefined) headers[TAG_HEADER] = message.tag;
    await this.publisher.add({ topic, message: { key: message.key, value: message.body, headers } });
  }

  async subscribe(topic: string, group: string, handler: DeliveryHandler, opts: SubscribeOptions = {}): Promise<Subscription> {
    if (this.closed) throw new Error('kafka broker is closed');
    const log = this.logger.child({ topic, group });
    const consumer: Consumer = this.kafka.consumer({
      groupId: group,
      sessionTimeout: this.sessionTimeoutMs,
      heartbeatInterval: Math.max(200, Math.floor(this.sessionTimeoutMs / 10)),
      rebalanceTimeout: Math.max(60_000, this.sessionTimeoutMs * 2),
      maxWaitTimeInMs: 500,
      allowAutoTopicCreation: false,
    });
    consumer.on(consumer.events.REQUEST, this.countRequest);
    const slots = new Slots(opts.concurrency ?? 1);
    const trackers = new Map<number, OffsetTracker>();
    const running = new Set<Promise<void>>();
    let stopping = false;
    // One commit in flight at a time; the offsets finished meanwhile wait here, the highest
    // per partition, and go in the next commit.
    const due = new Map<number, bigint>();
    let commits: Promise<void> | undefined;
    const flushCommits = async () => {
      while (due.size > 0) {
        const offsets = [...due].map(([partition, offset]) => ({ topic, partition, offset: offset.toString() }));
        due.clear();
        // Fails when a partition moved to another member in a rebalance; that member
        // re-reads from the last commit and the idempotent claim drops what is finished.
        await consumer.commitOffsets(offsets).catch((err: unknown) => log.debug('offset commit failed', { offsets, err: errorMessage(err) }));
      }
      commits = undefined;
    };
    const commit = (partition: number, offset: bigint) => {
      if ((due.get(partition) ?? -1n) < offset) due.set(partition, offset);
      commits ??= flushCommits();
    };

    const runDelivery = async (partition: number, offset: bigint, d: Delivery): Promise<void> => {
      const tracker = trackers.get(partition);
      try {
        await handler(d);
      } catch (err) {
        log.warn('handler failed; message will be redelivered', { key: d.key, attempt: d.attempt, err: errorMessage(err) });
        // Hand the message back by publishing it again, then finish this offset.
        for (let i = 0; ; i++) {
          await sleep(redeliveryDelayMs(d.attempt + i));
          try {
            await this.publish(topic, { key: d.key, body: d.body, headers: { ...d.headers, [ATTEMPT_HEADER]: String(d.attempt + 1) } });
            break;
          } catch (pubErr) {
            // Leave the offset unfinished: it is redelivered after a restart or rebalance.
            if (stopping || this.closed) return;
            log.warn('could not hand a failed message back; retrying', { key: d.key, err: errorMessage(pubErr) });
          }
        }
      }
      const next = tracker?.finish(offset);
      if (next !== undefined) commit(partition, next);
    };

    const start = async () => {
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: opts.fromBeginning ?? true });
      await runConsumer();
    };
    // kafkajs restarts a consumer that crashed on a retriable error, but one that crashed on
    // any other (seen after a broker restart: the group coordinator's answers while it reloads)
    // stays stopped for good, and its partitions' messages would wait forever. Restart it here.
    let restarts = 0;
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      if (payload.restart || stopping || this.closed) return;
      const delay = Math.min(1000 * 2 ** Math.min(restarts++, 4), 15_000);
      log.warn('kafka consumer crashed; restarting it', { err: errorMessage(payload.error), in_ms: delay });
      const again = () => {
        if (stopping || this.closed) return;
        start().then(
          () => (restarts = 0),
          (err: unknown) => {
            log.warn('kafka consumer restart failed; trying again', { err: errorMessage(err) });
            setTimeout(again, Math.min(1000 * 2 ** Math.min(restarts++, 4), 15_000)).unref();
          },
        );
      };
      setTimeout(again, delay).unref();
    });
    const runConsumer = () =>
      consumer.run({
        autoCommit: false,
        eachMessage: async (payload) => {
          const { partition, message } = payload;
          const offset = BigInt(message.offset);
          let tracker = trackers.get(partition);
          if (!tracker) trackers.set(partition, (tracker = new OffsetTracker()));
          // Re-read after a rebalance while the first delivery still runs: skip it.
          if (tracker.has(offset)) return;
          const ok = await slots.acquire(
            () => payload.heartbeat(),
            1000,
            () => stopping,
          );
          if (!ok) return; // stopping: left uncommitted for the next member
          tracker.start(offset);
          const headers = headersToRecord(message.headers);
          const attempt = Number(headers[ATTEMPT_HEADER] ?? '1');
          const { [TAG_HEADER]: tag, [ATTEMPT_HEADER]: _attempt, ...userHeaders } = headers;
          const d: Delivery = {
            topic,
            key: message.key?.toString() ?? '',
            body: message.value?.toString() ?? '',
            tag,
            headers: userHeaders,
            attempt: Number.isFinite(attempt) && attempt >= 1 ? attempt : 1,
          };
          const run = runDelivery(partition, offset, d).finally(() => {
            slots.release();
            running.delete(run);
          });
          running.add(run);
        },
      });
    await start();

    let closing: Promise<void> | undefined;
    const sub: Subscription = {
      get inFlight() {
        return running.size;
      },
      close: (closeOpts: CloseOptions = {}) => {
        closing ??= (async () => {
          stopping = true;
          slots.wakeAll();
          try {
            consumer.pause([{ topic }]);
          } catch {
            /* not running */
          }
          // Drain while still a member (heartbeats go on), so the last commits are accepted.
          const drained = await drainHandlers(running, closeOpts.graceMs);
          if (!drained) log.warn('left running handlers behind; their messages will be redelivered', { inFlight: running.size });
          await commits;
          await consumer.stop().catch(() => undefined);
          await consumer.disconnect().catch((err: unknown) => log.warn('consumer disconnect failed', { err: errorMessage(err) }));
          this.subs.delete(sub);
        })();
        return closing;
      },
    };
    this.subs.add(sub);
    return sub;
  }

  /**
   * The group's lag on the topic: per partition, the high watermark less the committed offset
   * (less the low watermark when the group has committed nothing there), summed. Counts what
   * is in flight too: offsets are committed once a task ends. Two admin requests.
   */
  async backlog(topic: string, group: string): Promise<number | null> {
    const admin = await this.getAdmin();
    const [ends, committed] = await Promise.all([admin.fetchTopicOffsets(topic), admin.fetchOffsets({ groupId: group, topics: [topic] })]);
    const done = new Map((committed[0]?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
    let lag = 0;
    for (const p of ends) {
      const high = Number(p.high);
      const at = done.get(p.partition) ?? -1;
      lag += Math.max(0, high - (at >= 0 ? at : Number(p.low)));
    }
    return lag;
  }

  async ping(): Promise<void> {
    try {
      await withTimeout(
        (async () => {
          const admin = await this.getAdmin();
          await admin.describeCluster();
        })(),
        this.opTimeoutMs,
        () => new Error(`no answer within ${this.opTimeoutMs} ms`),
      );
    } catch (err) {
      throw new UnavailableError('broker', `kafka is unreachable: ${errorMessage(err)}`, { cause: err });
    }
  }

  async close(opts?: CloseOptions): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Every step runs even if one fails. Subscriptions first: their handlers may still publish.
    await Promise.allSettled([...this.subs].map((s) => s.close(opts)));
    await this.publisher.close();
    await Promise.allSettled([this.producer?.disconnect(), this.admin?.disconnect()]);
  }
}
