/**
 * The testcontainers path of the test setup (TEST_INFRA=containers, or a Docker engine
 * answers): Redis, Kafka (KRaft) and RocketMQ 5 (name server + broker with proxy) in
 * containers. Not exercised on our own CI machines, which have no Docker engine.
 *
 * The Redis Cluster comes from the local launcher even here: cluster nodes in containers tell
 * clients their container addresses, which a client on the host cannot follow.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { KafkaContainer } from '@testcontainers/kafka';
import { RedisContainer } from '@testcontainers/redis';
import { GenericContainer, Network, Wait, type StartedNetwork, type StartedTestContainer } from 'testcontainers';
import { CACHE_DIR, ensureDir, stopService, type ServiceHandle } from '../../infra/lib.ts';
import { startRedisCluster } from '../../infra/redis-cluster.ts';
import type { ServiceEnv } from './services.ts';

const ROCKETMQ_IMAGE = 'apache/rocketmq:5.3.3';
const PROXY_PORT = 8081;

export async function startContainers(log: (m: string) => void): Promise<{ env: ServiceEnv; stop: () => Promise<void> }> {
  // First, as it fails fast when redis-server is missing, before any image is pulled.
  const runDir = mkdtempSync(join(ensureDir(join(CACHE_DIR, 'test-runs')), 'run-'));
  let cluster: ServiceHandle;
  try {
    cluster = await startRedisCluster({ runDir, log });
  } catch (err) {
    rmSync(runDir, { recursive: true, force: true });
    throw new Error(
      `integration tests need a Redis Cluster, which TEST_INFRA=containers also starts locally, and could not start it ` +
        `(needs redis-server and redis-cli on PATH): ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  const started: StartedTestContainer[] = [];
  let network: StartedNetwork | undefined;
  const stop = async () => {
    try {
      await Promise.allSettled(started.reverse().map((c) => c.stop()));
      await network?.stop();
    } finally {
      await stopService(cluster);
      rmSync(runDir, { recursive: true, force: true });
    }
  };
  try {
    network = await new Network().start();
    const redis = await new RedisContainer('redis:7.2-alpine').start();
    started.push(redis);
    const kafka = await new KafkaContainer('confluentinc/cp-kafka:7.7.1').withKraft().start();
    started.push(kafka);
    const namesrv = await new GenericContainer(ROCKETMQ_IMAGE)
      .withNetwork(network)
      .withNetworkAliases('namesrv')
      .withCommand(['sh', 'mqnamesrv'])
      .withExposedPorts(9876)
      .withWaitStrategy(Wait.forLogMessage('The Name Server boot success'))
      .start();
    started.push(namesrv);
    // The proxy must hand out the address the client used, not its container address.
    const proxyConf = JSON.stringify({ rocketMQClusterName: 'DefaultCluster', useEndpointPortFromRequest: true });
    const brokerConf = [
      'brokerClusterName=DefaultCluster',
      'brokerName=broker-a',
      'brokerId=0',
      'autoCreateTopicEnable=true',
      'autoCreateSubscriptionGroup=true',
    ].join('\n');
    const broker = await new GenericContainer(ROCKETMQ_IMAGE)
      .withNetwork(network)
      .withEnvironment({ NAMESRV_ADDR: 'namesrv:9876' })
      .withCopyContentToContainer([
        { content: brokerConf, target: '/home/rocketmq/broker.conf' },
        { content: proxyConf, target: '/home/rocketmq/rmq-proxy.json' },
      ])
      .withCommand(['sh', 'mqbroker', '--enable-proxy', '-c', '/home/rocketmq/broker.conf', '-pc', '/home/rocketmq/rmq-proxy.json'])
      .withExposedPorts(PROXY_PORT)
      .withWaitStrategy(Wait.forLogMessage('rocketmq-proxy startup successfully'))
      .start();
    started.push(broker);
    const env: ServiceEnv = {
      REDIS_HOST: redis.getHost(),
      REDIS_PORT: String(redis.getMappedPort(6379)),
      KAFKA_BROKERS: `${kafka.getHost()}:${kafka.getMappedPort(9093)}`,
      MQ_ENDPOINT: `${broker.getHost()}:${broker.getMappedPort(PROXY_PORT)}`,
      ROCKETMQ_NAMESRV: `${namesrv.getHost()}:${namesrv.getMappedPort(9876)}`,
      ROCKETMQ_CONTAINER: broker.getId(),
      REDIS_CLUSTER_URL: cluster.env.REDIS_CLUSTER_URL ?? '',
      REDIS_CLUSTER_NODES: cluster.env.REDIS_CLUSTER_NODES ?? '',
    };
    log(`containers ready: ${JSON.stringify(env)}`);
    return { env, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
