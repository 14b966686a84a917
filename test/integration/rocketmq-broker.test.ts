import { brokerConformance } from '../../common/broker/broker.case.ts';
import { MIN_INVISIBLE_MS, RocketMqBroker } from '../../common/broker/rocketmq.ts';
import { createRocketTopics, services } from '../support/services.ts';

// The shortest invisible duration the proxy allows, so the long-handler case outlasts it twice.
const INVISIBLE_MS = MIN_INVISIBLE_MS;

brokerConformance('rocketmq', {
  make: () => Promise.resolve(new RocketMqBroker({ endpoint: services().MQ_ENDPOINT, invisibleMs: INVISIBLE_MS, awaitMs: 2000 })),
  prepare: (topics, groups) => createRocketTopics(topics, groups),
  holdMs: INVISIBLE_MS,
  quietMs: 3000,
  publishRequestsPerMessage: 1,
  deliveryTimeoutMs: 20_000,
});
