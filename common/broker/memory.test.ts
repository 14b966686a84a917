import { brokerConformance } from './broker.case.ts';
import { MemoryBroker, MemoryBus } from './memory.ts';

// One bus stands for the server; each make() is a separate client of it.
const bus = new MemoryBus(() => 20);

brokerConformance('memory', {
  make: () => Promise.resolve(new MemoryBroker({ bus })),
  prepare: () => Promise.resolve(),
  holdMs: 500,
  quietMs: 300,
  publishRequestsPerMessage: 0,
  deliveryTimeoutMs: 2000,
});
