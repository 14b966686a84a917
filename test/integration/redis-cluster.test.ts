/**
 * The Redis Cluster of the test setup: three masters that serve every slot, keys spread over
 * all of them, and multi-key commands on keys that share a hash tag.
 */
import { randomUUID } from 'node:crypto';
import { createCluster } from 'redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { services } from '../support/services.ts';

describe('redis cluster', () => {
  const cluster = createCluster({ rootNodes: [{ url: services().REDIS_CLUSTER_URL }] });
  const run = `rc-${randomUUID().slice(0, 8)}`;
  beforeAll(async () => {
    await cluster.connect();
  });
  afterAll(async () => {
    await cluster.close();
  });

  it('has three masters and all slots served', async () => {
    const info = await cluster.clusterInfo();
    expect(info).toContain('cluster_state:ok');
    expect(info).toContain('cluster_slots_assigned:16384');
    expect(info).toContain('cluster_known_nodes:3');
    expect(info).toContain('cluster_size:3');
    expect(cluster.masters).toHaveLength(3);
  });

  it('writes keys to every master and reads them back', async () => {
    // One key per master: the first keys whose slots belong to a master not yet covered.
    const byMaster = new Map<string, { key: string; slot: number }>();
    for (let i = 0; byMaster.size < cluster.masters.length && i < 100; i++) {
      const key = `${run}:k${i}`;
      const slot = await cluster.clusterKeySlot(key);
      const master = cluster.slots[slot]?.master;
      if (master && !byMaster.has(master.address)) byMaster.set(master.address, { key, slot });
    }
    expect(byMaster.size).toBe(3);
    for (const { key } of byMaster.values()) await cluster.set(key, `v-${key}`, { EX: 60 });
    for (const { key } of byMaster.values()) expect(await cluster.get(key)).toBe(`v-${key}`);
    // Each key is stored on its own master: a plain GET there answers without a redirect.
    for (const master of cluster.masters) {
      const entry = byMaster.get(master.address);
      if (!entry) throw new Error(`no key landed on master ${master.address}`);
      const node = await cluster.nodeClient(master);
      expect(await node.get(entry.key)).toBe(`v-${entry.key}`);
    }
  });

  it('runs multi-key commands on keys that share a hash tag', async () => {
    const [a, b, both] = ['a', 'b', 'both'].map((k) => `{t}:${run}:${k}`) as [string, string, string];
    expect(new Set(await Promise.all([a, b, both].map((k) => cluster.clusterKeySlot(k)))).size).toBe(1);
    await cluster.mSet([
      [a, '1'],
      [b, '2'],
    ]);
    expect(await cluster.mGet([a, b])).toEqual(['1', '2']);
    await cluster.del([a, b]);
    await cluster.sAdd(a, ['x', 'y']);
    await cluster.sAdd(b, ['y', 'z']);
    expect(await cluster.sInterStore(both, [a, b])).toBe(1);
    expect(await cluster.sMembers(both)).toEqual(['y']);
    expect(await cluster.del([a, b, both])).toBe(3);
    // Without a shared tag, keys in different slots cannot meet in one command.
    await expect(cluster.sInterStore(`${run}:k0`, [`${run}:k1`, `${run}:k2`])).rejects.toThrow(/CROSSSLOT/);
  });
});
