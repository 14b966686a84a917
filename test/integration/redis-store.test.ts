import { randomUUID } from 'node:crypto';
import { createClient } from 'redis';
import { describe, expect, it } from 'vitest';
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
