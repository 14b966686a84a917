/** Access to the services the global setup started, for integration tests. */
import { randomUUID } from 'node:crypto';
import { createClient } from 'redis';
import { inject } from 'vitest';
import { KafkaBroker } from '../../common/broker/kafka.ts';
import { allRequestTopics, groupFor } from '../../common/messages.ts';
import { RedisTaskStore } from '../../common/store/redis.ts';
import { PRIORITIES } from '../../common/task.ts';
import type { TaskStoreOptions } from '../../common/store/port.ts';
import type { ServiceEnv } from '../setup/services.ts';

export function services(): ServiceEnv {
  return inject('services');
}

export interface IsolatedRun {
  /** Redis key prefix of this run. */
  prefix: string;
  names: { request: string; requests: string[]; result: string; group: string; groups: string[]; deadLetter: string };
  /** Environment for the product's processes: the test services, and names no other test uses. */
  env: Record<string, string>;
}

/** Settings for running the product against the test services, isolated from every other test. */
export function isolatedRun(label: string, broker: 'kafka' | 'rocketmq', overrides: Record<string, string> = {}): IsolatedRun {
  const s = services();
  const run = `${label}-${randomUUID().slice(0, 8)}`;
  const group = `GID-${run}`;
  const request = `${run}-req`;
  const names = {
    request,
    /** The request topics of the three priorities (normal is `request`). */
    requests: allRequestTopics(request),
    result: `${run}-res`,
    group,
    /** The worker groups of the three priorities (normal is `group`). */
    groups: PRIORITIES.map((p) => groupFor(group, p)),
    deadLetter: broker === 'kafka' ? `${group}.DLQ` : `%DLQ%${group}`,
  };
  const prefix = `${run}:`;
  const env = {
    BROKER: broker,
    REDIS_HOST: s.REDIS_HOST,
    REDIS_PORT: s.REDIS_PORT,
    REDIS_KEY_PREFIX: prefix,
    KAFKA_BROKERS: s.KAFKA_BROKERS,
    MQ_ENDPOINT: s.MQ_ENDPOINT,
    MQ_TOPIC_REQUEST: names.request,
    MQ_TOPIC_RESULT: names.result,
    MQ_GROUP_AGENT: names.group,
    ...overrides,
  };
  return { prefix, names, env };
}

/** A Redis store with its own key prefix, so tests never see each other's keys. */
export async function redisStore(opts: TaskStoreOptions & { keyPrefix?: string } = {}): Promise<RedisTaskStore> {
  const env = services();
  const store = new RedisTaskStore({ host: env.REDIS_HOST, port: Number(env.REDIS_PORT), keyPrefix: `t${randomUUID().slice(0, 8)}:`, ...opts });
  if (!(await store.connect(10_000))) throw new Error(`could not connect to the test Redis at ${env.REDIS_HOST}:${env.REDIS_PORT}`);
  return store;
}

export function kafkaBroker(opts: { sessionTimeoutMs?: number; partitions?: number } = {}): KafkaBroker {
  return new KafkaBroker({ brokers: services().KAFKA_BROKERS.split(','), clientId: 'test', ...opts });
}

/** Creates RocketMQ topics and groups: with the admin jar locally, or mqadmin inside the container. */
export async function createRocketTopics(topics: string[], groups: string[]): Promise<void> {
  const env = services();
  if (env.ROCKETMQ_CONTAINER) {
    const { execFileSync } = await import('node:child_process');
    const mq = (args: string[]) => execFileSync('docker', ['exec', env.ROCKETMQ_CONTAINER ?? '', 'sh', 'mqadmin', ...args], { encoding: 'utf8' });
    for (const t of topics) mq(['updateTopic', '-n', 'namesrv:9876', '-c', 'DefaultCluster', '-t', t, '-a', '+message.type=NORMAL']);
    for (const g of groups) mq(['updateSubGroup', '-n', 'namesrv:9876', '-c', 'DefaultCluster', '-g', g]);
    return;
  }
  const { createTopics } = await import('../../infra/rocketmq.ts');
  await createTopics(env.ROCKETMQ_NAMESRV, topics, groups);
}

/** Every key of the test Redis that matches `pattern` (SCAN, so safe on a busy server). */
export async function redisKeys(pattern: string): Promise<string[]> {
  const env = services();
  const client = createClient({ socket: { host: env.REDIS_HOST, port: Number(env.REDIS_PORT) } });
  await client.connect();
  try {
    const keys: string[] = [];
    for await (const batch of client.scanIterator({ MATCH: pattern, COUNT: 1000 })) keys.push(...batch);
    return keys;
  } finally {
    await client.close();
  }
}
