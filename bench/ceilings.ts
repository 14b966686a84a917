/**
 * The raw limits of the parts, measured on the same machine in the same run as the systems:
 * pipelined Redis writes, batched Kafka publishes (acks=all) and concurrent RocketMQ sends.
 * Each runs a short warm-up (half a second; RocketMQ's JVM 1.5 s), then measures for a fixed
 * time with a few batches or many sends in flight.
 */
import { Kafka, logLevel } from 'kafkajs';
import { createClient } from 'redis';
import { Producer } from 'rocketmq-client-nodejs';
import { createTopics } from '../infra/rocketmq.ts';

export interface Ceiling {
  part: 'redis' | 'kafka' | 'rocketmq';
  /** Writes (Redis) or messages (brokers) per second. */
  perSecond: number;
  unit: string;
  how: string;
}

/** Runs `lanes` loops of `step` (which answers how many operations it did) for `ms`; answers operations per second. */
async function measure(lanes: number, ms: number, step: () => Promise<number>, warmupMs = 500): Promise<number> {
  const drive = async (duration: number) => {
    let n = 0;
    const end = performance.now() + duration;
    await Promise.all(
      Array.from({ length: lanes }, async () => {
        while (performance.now() < end) {
          // Not `n += await step()`: that reads n before the await and loses the other lanes' counts.
          const done = await step();
          n += done;
        }
      }),
    );
    return n;
  };
  await drive(warmupMs);
  const t0 = performance.now();
  const n = await drive(ms);
  return (n * 1000) / (performance.now() - t0);
}

const PAYLOAD = JSON.stringify({
  id: '00000000-0000-4000-8000-000000000000',
  type: 'agent',
  input: { content: 'bench ceiling 机械键盘降价了' },
  pad: 'x'.repeat(120),
});

export async function redisCeiling(host: string, port: number, seconds = 2): Promise<Ceiling> {
  const client = createClient({ socket: { host, port } });
  client.on('error', () => undefined);
  await client.connect();
  try {
    const BATCH = 100;
    let k = 0;
    const perSecond = await measure(4, seconds * 1000, async () => {
      const m = client.multi();
      for (let i = 0; i < BATCH; i++) m.hSet(`ceiling:${k++ % 10_000}`, { status: 'done', payload: PAYLOAD });
      await m.execAsPipeline();
      return BATCH;
    });
    await client.flushAll();
    return { part: 'redis', perSecond, unit: 'writes/s', how: `node-redis, HSET pipelined in batches of ${BATCH}, 4 batches in flight, ${seconds} s` };
  } finally {
    client.destroy();
  }
}

export async function kafkaCeiling(brokers: string[], topic: string, seconds = 3): Promise<Ceiling> {
  const kafka = new Kafka({ clientId: 'bench-ceiling', brokers, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: 8 }], waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  try {
    const BATCH = 100;
    let k = 0;
    const perSecond = await measure(4, seconds * 1000, async () => {
      const messages = Array.from({ length: BATCH }, () => ({ key: `k${k++}`, value: PAYLOAD }));
      await producer.sendBatch({ acks: -1, topicMessages: [{ topic, messages }] });
      return BATCH;
    });
    return {
      part: 'kafka',
      perSecond,
      unit: 'msgs/s',
      how: `kafkajs sendBatch acks=-1, ${BATCH} messages a batch, 4 batches in flight, 8 partitions, ${seconds} s`,
    };
  } finally {
    await producer.disconnect();
  }
}

const silent = { info: () => undefined, warn: () => undefined, error: () => undefined, debug: () => undefined };

export async function rocketmqCeiling(endpoint: string, namesrv: string, topic: string, adminDir: string, seconds = 3): Promise<Ceiling> {
  await createTopics(namesrv, [topic], [], { dir: adminDir });
  const producer = new Producer({ endpoints: endpoint, namespace: '', logger: silent, requestTimeout: 10_000, topics: [topic] });
  await producer.startup();
  try {
    const LANES = 256;
    const body = Buffer.from(PAYLOAD, 'utf8');
    let k = 0;
    const perSecond = await measure(
      LANES,
      seconds * 1000,
      async () => {
        await producer.send({ topic, body, keys: [`k${k++}`], tag: 'agent' });
        return 1;
      },
      1500,
    );
    return { part: 'rocketmq', perSecond, unit: 'msgs/s', how: `rocketmq-client-nodejs Producer.send, ${LANES} sends in flight, ${seconds} s` };
  } finally {
    await producer.shutdown();
  }
}
