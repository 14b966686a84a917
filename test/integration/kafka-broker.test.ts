import { brokerConformance } from '../../common/broker/broker.case.ts';
import { kafkaBroker } from '../support/services.ts';

// Kafka's hold on a message is the group session: 6 s here (the broker's minimum), so the
// long-handler case runs past it twice.
const SESSION_MS = 6000;

brokerConformance('kafka', {
  make: () => Promise.resolve(kafkaBroker({ sessionTimeoutMs: SESSION_MS, partitions: 4 })),
  prepare: async (topics) => {
    const b = kafkaBroker({ partitions: 4 });
    try {
      await b.ensureTopics(topics);
    } finally {
      await b.close();
    }
  },
  holdMs: SESSION_MS,
  quietMs: 2000,
  publishRequestsPerMessage: 0.25,
  deliveryTimeoutMs: 20_000,
});
