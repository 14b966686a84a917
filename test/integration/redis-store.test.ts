import { randomUUID } from 'node:crypto';
import { createClient } from 'redis';
import { describe, expect, it } from 'vitest';
import { createApp } from '../../api/app.ts';
import { newApiKey } from '../../common/api-keys.ts';
import { MemoryBroker } from '../../common/broker/memory.ts';
import { silentLogger } from '../../common/logger.ts';
import { defaultRegistry } from '../../worker/task-types.ts';
import { RedisTaskStore } from '../../common/store/redis.ts';
import { newTask, storeConformance } from '../../common/store/store.case.ts';
import { redisStore, services } from '../support/services.ts';

storeConformance('redis', (opts) => redisStore(opts));

// The same cases on a 3-master Redis Cluster: every key of a prefix shares its hash tag.
storeConformance('redis cluster', async (opts) => {
  const url = services().REDIS_CLUSTER_URL;
  const store = new RedisTaskStore({ url, cluster: true, keyPrefix: `{t${randomUUID().slice(0, 8)}}:`, ...opts });
  if (!(await store.connect(10_000))) throw new Error(`could not connect to the test Redis Cluster at ${url}`);
  return store;
});

// Managed Redis: an ACL user and a URL, as such services hand them out.
describe('Redis store with an ACL user from REDIS_URL', () => {
  it('logs in as the user, works, and is refused with a wrong password', async () => {
    const { REDIS_HOST: host, REDIS_PORT: port } = services();
    const admin = createClient({ socket: { host, port: Number(port) } });
    await admin.connect();
    const user = `atq-${randomUUID().slice(0, 8)}`;
    await admin.sendCommand(['ACL', 'SETUSER', user, 'on', '>s3cret pass', '~*', '&*', '+@all']);
    try {
      const store = new RedisTaskStore({ url: `redis://${user}:${encodeURIComponent('s3cret pass')}@${host}:${port}/0`, keyPrefix: `{acl${user}}:` });
      expect(await store.connect(10_000)).toBe(true);
      const t = newTask();
      expect(await store.create(t, Date.now() + 60_000)).toEqual({ outcome: 'created', downgraded: false });
      expect((await store.get(t.id))?.status).toBe('queued');
      expect(await admin.sendCommand(['ACL', 'WHOAMI'])).toBe('default');
      await store.close();
      const wrong = new RedisTaskStore({ url: `redis://${user}:nope@${host}:${port}`, opTimeoutMs: 1000 });
      expect(await wrong.connect(2000)).toBe(false);
      await wrong.close();
    } finally {
      await admin.sendCommand(['ACL', 'DELUSER', user]);
      await admin.close();
    }
  });
});

// Issue 10's hot-path promise: with keys, quota and rate limits on, a submit's rate limit, quota
// and create are one Redis round trip before the publish (the verified key is cached).
describe('a submit on Redis, with keys, a quota and a rate limit', () => {
  it('makes one Redis round trip before it publishes', async () => {
    const store = await redisStore({ keyPrefix: `{rt${randomUUID().slice(0, 8)}}:` });
    const broker = new MemoryBroker();
    const before: number[] = [];
    const publish = broker.publish.bind(broker);
    broker.publish = (topic, m) => {
      before.push(store.stats.roundTrips);
      return publish(topic, m);
    };
    const app = createApp({
      store,
      broker,
      registry: defaultRegistry(),
      logger: silentLogger,
      options: {
        requestTopic: 'req',
        bodyLimit: 1 << 20,
        requestTimeoutMs: 2000,
        relayAfterMs: 5000,
        maxAttempts: 3,
        auth: { mode: 'keys', cacheMs: 60_000 },
        limits: { quotaUnits: 100, submitsPerSecond: 50, readsPerSecond: 50 },
      },
    });
    try {
      const { secret, hash, key } = newApiKey('acme', ['tasks:write', 'tasks:read'], null);
      await store.createKey(key, hash);
      const submit = async () => {
        await new Promise((r) => setTimeout(r, 50)); // the last submit's outbox disarm (batched, after its 202) is out
        const start = store.stats.roundTrips;
        const res = await app.request('http://localhost/tasks', {
          method: 'POST',
          headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json', 'idempotency-key': randomUUID() },
          body: JSON.stringify({ type: 'stock_screening_workflow', input: { sector: 'Technology', limit: 20 } }), // 5 units
        });
        expect(res.status).toBe(202);
        expect(res.headers.get('ratelimit')).toMatch(/^"submits";r=\d+;t=\d+$/);
        return (before.at(-1) ?? 0) - start;
      };
      await submit(); // the first verifies the key (one more round trip), then caches it
      for (let i = 0; i < 3; i++) expect(await submit()).toBe(1);
      expect((await store.quotaUsage('acme', { quotaUnits: 100, quotaWindowSeconds: 86_400 })).spent).toBe(20);
    } finally {
      await broker.close({ graceMs: 0 });
      await store.close();
    }
  });
});
