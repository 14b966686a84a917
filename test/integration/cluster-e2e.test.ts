/**
 * End to end on a Redis Cluster: the API and a worker as processes on Kafka, their store on the
 * 3-master cluster the test setup started (REDIS_URL + REDIS_CLUSTER=true, a hash-tagged key
 * prefix). Tasks run to done with their results, an SSE stream hears a running task's events
 * through the shared subscription, a cancel reaches the worker, and a ?wait answers at the end.
 */
import { randomUUID } from 'node:crypto';
import { createClient } from 'redis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TaskClient } from '../../client/index.ts';
import { RedisTaskStore } from '../../common/store/redis.ts';
import { killAll, startApi, startEntry, type Child } from '../support/processes.ts';
import { isolatedRun, services } from '../support/services.ts';
import { waitFor } from '../support/wait.ts';

describe('pipeline on a Redis Cluster (Kafka)', () => {
  const prefix = `{cl${randomUUID().slice(0, 8)}}:`;
  const { env } = isolatedRun('cluster', 'kafka', {
    REDIS_URL: services().REDIS_CLUSTER_URL,
    REDIS_CLUSTER: 'true',
    REDIS_KEY_PREFIX: prefix,
    WORKER_CONCURRENCY: '4',
  });
  let api: { child: Child; url: string };
  let store: RedisTaskStore;

  beforeAll(async () => {
    api = await startApi(env);
    const worker = startEntry('worker', 'run-worker.ts', env);
    await worker.waitForLine(/worker started/);
    store = new RedisTaskStore({ url: services().REDIS_CLUSTER_URL, cluster: true, keyPrefix: prefix });
    await store.connect(10_000);
  });
  afterAll(async () => {
    await store?.close();
    await killAll();
  });

  it('runs tasks to done, streams, waits and cancels with every key in one slot of the cluster', async () => {
    const client = new TaskClient({ baseUrl: api.url });
    const ids = await Promise.all(
      Array.from({ length: 20 }, (_, i) => client.submit({ type: 'agent', input: { content: `cluster task ${i} 机械键盘降价了` } })),
    );
    const done = await Promise.all(ids.map((a) => client.wait(a.task_id, { timeoutMs: 60_000 })));
    expect(done.map((t) => t.status)).toEqual(ids.map(() => 'done'));
    expect(done[0]?.result).toMatchObject({ sentiment: 'positive' });

    // A slow task: its stream hears progress as it happens, then a cancel ends it.
    const slow = await client.submit({ type: 'agent', input: { content: 'slow on the cluster', simulate_ms: 1500 } });
    const seen: string[] = [];
    const streaming = (async () => {
      for await (const e of client.stream(slow.task_id)) seen.push(e.event);
    })();
    await waitFor('the first progress event on the stream', () => seen.includes('progress') || undefined, { timeoutMs: 20_000 });
    await client.cancel(slow.task_id);
    await streaming;
    expect(seen.at(-1)).toBe('cancelled');
    const rec = await store.get(slow.task_id);
    expect(rec?.status).toBe('cancelled');

    const res = await fetch(`${api.url}/tasks/${ids[0]?.task_id ?? ''}?wait=5`);
    expect(((await res.json()) as { status: string }).status).toBe('done');

    // Every key the run wrote carries the hash tag: all of them live on one master.
    const perNode = await Promise.all(
      services()
        .REDIS_CLUSTER_NODES.split(',')
        .map(async (node) => {
          const c = createClient({ url: `redis://${node}` });
          await c.connect();
          try {
            const keys: string[] = [];
            for await (const batch of c.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) keys.push(...batch);
            return keys.length;
          } finally {
            await c.close();
          }
        }),
    );
    expect(perNode.filter((n) => n > 0)).toHaveLength(1);
    expect(Math.max(...perNode)).toBeGreaterThan(20);
  });
});
