import { afterEach, describe, expect, it, vi } from 'vitest';
import { KafkaBroker } from '../common/broker/kafka.ts';
import { MemoryBroker, MemoryBus } from '../common/broker/memory.ts';
import type { Delivery, DeliveryHandler } from '../common/broker/port.ts';
import { silentLogger, type Logger } from '../common/logger.ts';
import type { ResultMessage } from '../common/task.ts';
import { waitFor } from '../test/support/wait.ts';
import { createResultBroker, subscribeResults } from './results.ts';

const TOPIC = 'results';
const GROUP = 'downstream';

function result(taskId: string, over: Partial<ResultMessage> = {}): ResultMessage {
  return {
    v: 1,
    task_id: taskId,
    tenant: 'default',
    type: 'agent',
    status: 'done',
    result: { summary: `result of ${taskId}` },
    user_id: 'user123',
    attempt: 1,
    started_at: '2026-11-22T02:14:38.613Z',
    finished_at: '2026-11-22T02:14:38.638Z',
    duration_ms: 25,
    ...over,
  };
}

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const step of cleanup.splice(0)) await step();
});

/**
 * A memory broker that redelivers at once, and a record of every delivery the subscriber
 * started and finished (resolved or threw).
 */
function setup() {
  const bus = new MemoryBus(() => 0);
  const broker = new MemoryBroker({ bus });
  cleanup.push(async () => {
    await broker.close({ graceMs: 100 });
    bus.stop();
  });
  const started: Delivery[] = [];
  const finished: Delivery[] = [];
  const subscribe = broker.subscribe.bind(broker);
  vi.spyOn(broker, 'subscribe').mockImplementation((topic, group, handler: DeliveryHandler, opts) =>
    subscribe(
      topic,
      group,
      async (d) => {
        started.push(d);
        try {
          await handler(d);
        } finally {
          finished.push(d);
        }
      },
      opts,
    ),
  );
  const publish = (...msgs: ResultMessage[]) => Promise.all(msgs.map((m) => broker.publish(TOPIC, { key: m.task_id, body: JSON.stringify(m) })));
  const finishedCount = (n: number) => waitFor(`${n} finished deliveries`, () => finished.length >= n, { timeoutMs: 2000, intervalMs: 5 });
  return { broker, started, finished, publish, finishedCount };
}

describe('subscribeResults', () => {
  it('hands each task to onResult once: a duplicate is acknowledged and dropped', async () => {
    const { broker, publish, finishedCount } = setup();
    const handled: string[] = [];
    await subscribeResults(broker, { topic: TOPIC, group: GROUP, onResult: (m) => void handled.push(m.task_id) });

    await publish(
      result('a'),
      result('b'),
      result('a'),
      result('b', { attempt: 2 }),
      result('c', { status: 'failed', error: { code: 'x', message: 'y', retriable: false } }),
    );
    await finishedCount(5);
    expect(handled).toEqual(['a', 'b', 'c']);
  });

  it('forgets the least recently seen task first when the window is full', async () => {
    const { broker, publish, finishedCount } = setup();
    const handled: string[] = [];
    await subscribeResults(broker, { topic: TOPIC, group: GROUP, dedupWindow: 2, onResult: (m) => void handled.push(m.task_id) });

    // Window of 2: the copy of `a` makes `a` recent again, so `c` pushes `b` out, not `a`.
    await publish(...['a', 'b', 'a', 'c', 'a', 'b'].map((id) => result(id)));
    await finishedCount(6);
    expect(handled).toEqual(['a', 'b', 'c', 'b']);
  });

  it('does not count a result whose handler threw as seen: the redelivery is handled', async () => {
    const { broker, publish, finished, finishedCount } = setup();
    const handled: [string, 'ok' | 'threw'][] = [];
    await subscribeResults(broker, {
      topic: TOPIC,
      group: GROUP,
      onResult: (m) => {
        if (handled.length === 0) {
          handled.push([m.task_id, 'threw']);
          throw new Error('database down');
        }
        handled.push([m.task_id, 'ok']);
      },
    });

    await publish(result('a'));
    await finishedCount(2);
    expect(finished.map((d) => d.attempt)).toEqual([1, 2]);
    await publish(result('a'));
    await finishedCount(3);
    expect(handled).toEqual([
      ['a', 'threw'],
      ['a', 'ok'],
    ]);
  });

  it.each([
    ['succeeds', 1],
    ['throws', 2],
  ])('holds a copy that arrives while the first is running until the first %s', async (outcome, calls) => {
    const { broker, publish, started, finishedCount } = setup();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let n = 0;
    await subscribeResults(broker, {
      topic: TOPIC,
      group: GROUP,
      concurrency: 2,
      onResult: async () => {
        if (++n > 1) return;
        await gate;
        if (outcome === 'throws') throw new Error('failed once');
      },
    });

    await publish(result('a'), result('a'));
    await waitFor('both copies delivered', () => started.length === 2, { timeoutMs: 2000, intervalMs: 5 });
    expect(n).toBe(1);
    release();
    // Both copies, plus the redelivery of the one that threw.
    await finishedCount(outcome === 'throws' ? 3 : 2);
    expect(n).toBe(calls);
  });

  it('acknowledges and logs a body that is not a result message instead of having it redelivered', async () => {
    const broker = new MemoryBroker();
    cleanup.push(() => broker.close());
    let handler: DeliveryHandler | undefined;
    vi.spyOn(broker, 'subscribe').mockImplementation((_t, _g, h) => {
      handler = h;
      return Promise.resolve({ close: () => Promise.resolve(), inFlight: 0 });
    });
    const warn = vi.fn();
    const logger: Logger = { ...silentLogger, warn };
    const onResult = vi.fn();
    await subscribeResults(broker, { topic: TOPIC, group: GROUP, onResult, logger });

    const bodies = [
      'not json',
      'null',
      '[]',
      JSON.stringify({ v: 1, task_id: 'a' }),
      JSON.stringify({ ...result('a'), v: 2 }),
      JSON.stringify({ ...result('a'), status: 'running' }),
    ];
    for (const body of bodies) {
      await expect(handler?.({ topic: TOPIC, key: 'a', body, tag: undefined, headers: {}, attempt: 1 })).resolves.toBeUndefined();
    }
    expect(onResult).not.toHaveBeenCalled();
    expect(warn).toHaveBeenCalledTimes(bodies.length);

    await handler?.({ topic: TOPIC, key: 'a', body: JSON.stringify(result('a')), tag: undefined, headers: {}, attempt: 1 });
    expect(onResult).toHaveBeenCalledWith(result('a'));
  });
});

describe('createResultBroker', () => {
  it('builds the Kafka adapter, and the RocketMQ one on demand', async () => {
    const kafka = await createResultBroker({ kind: 'kafka', brokers: ['127.0.0.1:1'], clientId: 'downstream' });
    const rocketmq = await createResultBroker({ kind: 'rocketmq', endpoint: '127.0.0.1:1' });
    cleanup.push(
      () => kafka.close(),
      () => rocketmq.close(),
    );

    expect(kafka).toBeInstanceOf(KafkaBroker);
    expect(rocketmq.kind).toBe('rocketmq');
    expect(rocketmq.deadLetterTopic(GROUP)).toBe(`%DLQ%${GROUP}`);
  });
});
