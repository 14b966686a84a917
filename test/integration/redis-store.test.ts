import { randomUUID } from 'node:crypto';
import { RedisTaskStore } from '../../common/store/redis.ts';
import { storeConformance } from '../../common/store/store.case.ts';
import { redisStore, services } from '../support/services.ts';

storeConformance('redis', (opts) => redisStore(opts));

// The same cases on a 3-master Redis Cluster: every key of a prefix shares its hash tag.
storeConformance('redis cluster', async (opts) => {
  const url = services().REDIS_CLUSTER_URL;
  const store = new RedisTaskStore({ url, cluster: true, keyPrefix: `{t${randomUUID().slice(0, 8)}}:`, ...opts });
  if (!(await store.connect(10_000))) throw new Error(`could not connect to the test Redis Cluster at ${url}`);
  return store;
});
