/**
 * Broker conformance cases: the memory, Kafka and RocketMQ adapters all run these, so the
 * pipeline can rely on the same behaviour from each. Every case uses its own random topic
 * and group names.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sleep, waitFor } from '../../test/support/wait.ts';
import type { Broker, Delivery, Subscription } from './port.ts';

export interface BrokerHarness {
  /** A new broker instance with its own connections. */
  make(): Promise<Broker>;
  /** Creates topics and consumer groups ahead of use, where the broker needs that. */
  prepare(topics: string[], groups: string[]): Promise<void>;
  /** The broker's hold on an unacknowledged message (Kafka session timeout, RocketMQ invisible duration). */
  holdMs: number;
  /** How long to keep watching for a delivery that must not come. */
  quietMs: number;
  /** Upper bound for one delivery to arrive. */
  deliveryTimeoutMs: number;
  /**
   * Most broker requests per message when many are published at once: below 1 for an adapter
   * that batches publishes (Kafka), 1 for one that cannot (RocketMQ: one send per message).
   */
  publishRequestsPerMessage: number;
}

const CASES = ['roundtrip', 'batch', 'share', 'fanout', 'retry', 'dies', 'long', 'close'] as const;
type CaseName = (typeof CASES)[number];

export function brokerConformance(name: string, h: BrokerHarness): void {
  describe(`Broker conformance: ${name}`, () => {
    const run = randomUUID().slice(0, 8);
    const topic = (c: CaseName) => `conf-${run}-${c}`;
    const group = (c: CaseName, n = 1) => `GID-conf-${run}-${c}-${n}`;
    let broker: Broker;
    const subs: Subscription[] = [];

    beforeAll(async () => {
      await h.prepare(
        CASES.map((c) => topic(c)),
        CASES.flatMap((c) => [group(c, 1), group(c, 2)]),
      );
      broker = await h.make();
    });
    afterAll(async () => {
      await Promise.allSettled(subs.map((s) => s.close({ graceMs: 0 })));
      await broker?.close({ graceMs: 0 });
    });

    const subscribe = async (b: Broker, t: string, g: string, fn: (d: Delivery) => Promise<void>, concurrency = 4) => {
      const s = await b.subscribe(t, g, fn, { concurrency });
      subs.push(s);
      return s;
    };

    it('round trip: key, tag, headers and body arrive as sent', async () => {
      const got: Delivery[] = [];
      await subscribe(broker, topic('roundtrip'), group('roundtrip'), (d) => {
        got.push(d);
        return Promise.resolve();
      });
      const key = randomUUID();
      await broker.publish(topic('roundtrip'), { key, body: '{"hello":"世界"}', tag: 'agent', headers: { traceparent: '00-abc-def-01', type: 'agent' } });
      const d = await waitFor('the message', () => got[0], { timeoutMs: h.deliveryTimeoutMs });
      expect(d).toMatchObject({ topic: topic('roundtrip'), key, body: '{"hello":"世界"}', tag: 'agent', attempt: 1 });
      expect(d.headers).toMatchObject({ traceparent: '00-abc-def-01', type: 'agent' });
    });

    it('publishes made together all arrive once, batched where the broker allows, and close() waits for those in flight', async () => {
      const t = topic('batch');
      const got = new Map<string, Delivery>();
      await subscribe(
        broker,
        t,
        group('batch'),
        (d) => {
          got.set(d.key, d);
          return Promise.resolve();
        },
        16,
      );
      const publisher = await h.make();
      const keys = Array.from({ length: 300 }, () => randomUUID());
      const before = publisher.stats.requests;
      // Bodies of different sizes, so batches are cut by bytes as well as by count.
      const sent = keys.map((key, i) => publisher.publish(t, { key, body: JSON.stringify({ i, pad: 'x'.repeat((i % 7) * 200) }), headers: { n: String(i) } }));
      // close() right away: what was published before it still goes out and is acknowledged.
      const closing = publisher.close();
      await Promise.all(sent);
      await closing;
      const requests = publisher.stats.requests - before;
      expect(requests).toBeLessThanOrEqual(keys.length * h.publishRequestsPerMessage);
      await expect(publisher.publish(t, { key: 'late', body: '{}' })).rejects.toThrow();
      await waitFor('every message', () => got.size === keys.length || undefined, { timeoutMs: h.deliveryTimeoutMs * 3 });
      keys.forEach((key, i) => {
        expect(JSON.parse(got.get(key)?.body ?? '{}')).toMatchObject({ i });
        expect(got.get(key)?.headers.n).toBe(String(i));
      });
      await sleep(h.quietMs);
      expect(got.size).toBe(keys.length);
    });

    it('one group of two members shares the load, and no message reaches both', async () => {
      const t = topic('share');
      const seen = { a: new Map<string, number>(), b: new Map<string, number>() };
      const count = (m: Map<string, number>) => (d: Delivery) => {
        m.set(d.key, (m.get(d.key) ?? 0) + 1);
        return sleep(20);
      };
      await subscribe(broker, t, group('share'), count(seen.a));
      const other = await h.make();
      try {
        await subscribe(other, t, group('share'), count(seen.b));
        // Warm up until both members have been handed work (Kafka rebalances as members join).
        let warm = 0;
        await waitFor(
          'both members to receive messages',
          async () => {
            await broker.publish(t, { key: `warm-${warm++}`, body: 'w' });
            const has = (m: Map<string, number>) => [...m.keys()].some((k) => k.startsWith('warm-'));
            return has(seen.a) && has(seen.b);
          },
          { timeoutMs: 90_000, intervalMs: 200 },
        );
        const keys = Array.from({ length: 40 }, (_, i) => `m-${i}`);
        for (const key of keys) await broker.publish(t, { key, body: key });
        await waitFor('all 40 messages', () => keys.every((k) => seen.a.has(k) || seen.b.has(k)), { timeoutMs: h.deliveryTimeoutMs * 2 });
        const both = keys.filter((k) => seen.a.has(k) && seen.b.has(k));
        expect(both).toEqual([]);
        expect(keys.filter((k) => seen.a.has(k)).length).toBeGreaterThan(0);
        expect(keys.filter((k) => seen.b.has(k)).length).toBeGreaterThan(0);
      } finally {
        await other.close({ graceMs: 0 });
      }
    });

    it('two groups each receive every message', async () => {
      const t = topic('fanout');
      const g1 = new Set<string>();
      const g2 = new Set<string>();
      await subscribe(broker, t, group('fanout', 1), (d) => {
        g1.add(d.key);
        return Promise.resolve();
      });
      await subscribe(broker, t, group('fanout', 2), (d) => {
        g2.add(d.key);
        return Promise.resolve();
      });
      const keys = Array.from({ length: 10 }, (_, i) => `f-${i}`);
      for (const key of keys) await broker.publish(t, { key, body: key });
      await waitFor('every message in both groups', () => keys.every((k) => g1.has(k) && g2.has(k)), { timeoutMs: h.deliveryTimeoutMs * 2 });
      expect(g1.size).toBe(10);
      expect(g2.size).toBe(10);
    });

    it('a handler that throws gets its message again with a higher attempt count', async () => {
      const attempts: number[] = [];
      await subscribe(broker, topic('retry'), group('retry'), (d) => {
        attempts.push(d.attempt);
        return d.attempt < 3 ? Promise.reject(new Error('transient')) : Promise.resolve();
      });
      await broker.publish(topic('retry'), { key: 'r1', body: 'retry me', headers: { keep: 'me' } });
      await waitFor('the third attempt', () => attempts.length >= 3, { timeoutMs: h.deliveryTimeoutMs * 3 });
      expect(attempts.slice(0, 3)).toEqual([1, 2, 3]);
      await sleep(h.quietMs);
      expect(attempts).toHaveLength(3);
    });

    it('a member that dies without acknowledging has its message redelivered to another member', async () => {
      const t = topic('dies');
      const g = group('dies');
      let firstGot: Delivery | undefined;
      const doomed = await h.make();
      try {
        const dying = await subscribe(doomed, t, g, (d) => {
          firstGot = d;
          return new Promise(() => undefined); // never finishes
        });
        await broker.publish(t, { key: 'd1', body: 'survive me' });
        await waitFor('the first member to take the message', () => firstGot, { timeoutMs: h.deliveryTimeoutMs });
        const second: Delivery[] = [];
        await subscribe(broker, t, g, (d) => {
          second.push(d);
          return Promise.resolve();
        });
        await dying.close({ graceMs: 0 });
        await doomed.close({ graceMs: 0 });
        const d = await waitFor('redelivery to the other member', () => second.find((x) => x.key === 'd1'), {
          timeoutMs: h.holdMs + h.deliveryTimeoutMs * 3,
        });
        expect(d.body).toBe('survive me');
      } finally {
        await doomed.close({ graceMs: 0 });
      }
    });

    it('a handler that runs longer than the broker hold is not redelivered while it runs', async () => {
      const t = topic('long');
      const calls: number[] = [];
      const started = Date.now();
      let finished = false;
      const warmed = [false, false];
      // Whichever member gets the message holds it past the hold; any second call is a redelivery.
      const handler = (member: number) => async (d: Delivery) => {
        if (d.key.startsWith('warm-')) {
          warmed[member] = true;
          return;
        }
        calls.push(d.attempt);
        if (calls.length === 1) {
          await sleep(h.holdMs * 2 + 1000);
          finished = true;
        }
      };
      await subscribe(broker, t, group('long'), handler(0));
      const other = await h.make();
      try {
        await subscribe(other, t, group('long'), handler(1));
        // A settled group first: on Kafka a member joining mid-task moves partitions (a rebalance
        // redelivers what is uncommitted; the worker's idempotent claim absorbs that).
        let warm = 0;
        await waitFor(
          'both members to receive messages',
          async () => {
            await broker.publish(t, { key: `warm-${warm++}`, body: 'w' });
            return warmed[0] && warmed[1];
          },
          { timeoutMs: 90_000, intervalMs: 200 },
        );
        await broker.publish(t, { key: 'l1', body: 'slow' });
        await waitFor('the long handler to finish', () => finished, { timeoutMs: h.holdMs * 2 + h.deliveryTimeoutMs * 3 + 90_000 });
        await sleep(h.quietMs);
        expect(Date.now() - started).toBeGreaterThan(h.holdMs * 2);
        expect(calls).toEqual([1]);
      } finally {
        await other.close({ graceMs: 0 });
      }
    });

    it('close() is safe to call twice and leaves no open sockets', async () => {
      const sockets = () => process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap' || r === 'TCPWRAP').length;
      const before = sockets();
      const b = await h.make();
      const got: string[] = [];
      const s = await b.subscribe(
        topic('close'),
        group('close'),
        (d) => {
          got.push(d.key);
          return Promise.resolve();
        },
        { concurrency: 1 },
      );
      await b.publish(topic('close'), { key: 'c1', body: 'x' });
      await waitFor('the message', () => got.length > 0, { timeoutMs: h.deliveryTimeoutMs });
      await s.close();
      await s.close();
      await b.close();
      await b.close();
      await waitFor(`sockets back to ${before}`, () => sockets() <= before, { timeoutMs: 10_000 });
      await expect(b.publish(topic('close'), { key: 'c2', body: 'y' })).rejects.toThrow();
    });
  });
}
