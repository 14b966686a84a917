/**
 * The dual write under a crash: the broker stalls, requests are mid-publish (record written,
 * message not yet out), and the API is SIGKILLed. No task may stay queued for ever: the
 * relay of another process publishes what the dead API could not.
 */
import { createClient } from 'redis';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { killAll, startApi, startEntry } from '../support/processes.ts';
import { isolatedRun, redisStore, services } from '../support/services.ts';
import { waitFor } from '../support/wait.ts';

const IN_FLIGHT = 5;

describe('submission when the API dies between the two writes', () => {
  const redis = createClient({ socket: { host: services().REDIS_HOST, port: Number(services().REDIS_PORT) } });
  let paused: number[] = [];
  afterAll(async () => {
    for (const pid of paused) process.kill(pid, 'SIGCONT');
    await redis.close();
    await killAll();
  });

  it('publishes through the relay the tasks a killed API had written but not published', async () => {
    const kafkaPids = inject('servicePids').kafka;
    if (!kafkaPids?.length) throw new Error(`this test pauses the local Kafka process; it needs TEST_INFRA=local (now ${inject('infraMode')})`);
    const { prefix, env } = isolatedRun('sub', 'kafka', {
      RELAY_AFTER_MS: '2000',
      // Long enough that the API is still waiting on the publish when it is killed.
      API_REQUEST_TIMEOUT_MS: '60000',
    });
    await redis.connect();
    const store = await redisStore({ keyPrefix: prefix });
    const api = await startApi(env);
    const worker = startEntry('worker', 'run-worker.ts', env);
    await worker.waitForLine(/worker started/);
    const post = () =>
      fetch(`${api.url}/tasks`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ user_id: 'u', content: 'survive the crash' }),
      });
    expect((await post()).status).toBe(202); // the producer is connected

    const taskKeys = async () => {
      const keys: string[] = [];
      for await (const batch of redis.scanIterator({ MATCH: `${prefix}task:*`, COUNT: 1000 })) keys.push(...batch);
      return keys;
    };
    paused = kafkaPids;
    for (const pid of paused) process.kill(pid, 'SIGSTOP');
    const pending = Array.from({ length: IN_FLIGHT }, () =>
      post().then(
        (r) => r.status,
        () => 'no answer',
      ),
    );
    await waitFor(`${IN_FLIGHT} records written while the publish hangs`, async () => (await taskKeys()).length >= IN_FLIGHT + 1);
    await api.child.stop('SIGKILL');
    const answers = await Promise.all(pending);
    expect(answers.every((a) => a === 'no answer')).toBe(true); // neither 202 nor 5xx: the API died
    for (const pid of paused) process.kill(pid, 'SIGCONT');
    paused = [];

    const ids = (await taskKeys()).map((k) => k.slice(`${prefix}task:`.length));
    expect(ids).toHaveLength(IN_FLIGHT + 1);
    await waitFor('every written task done', async () => (await Promise.all(ids.map((id) => store.get(id)))).every((t) => t?.status === 'done'), {
      timeoutMs: 90_000,
      intervalMs: 250,
    });
    const relayed = worker.records().filter((r) => r.msg === 'relay: published a queued task').length;
    process.stderr.write(`[submission] ${IN_FLIGHT} tasks written by an API killed mid-publish: all done; ${relayed} published by the worker's relay\n`);
    await store.close();
  });
});
