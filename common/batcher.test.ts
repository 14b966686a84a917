import { describe, expect, it } from 'vitest';
import { BatchTimeoutError, Batcher, BatcherClosedError } from './batcher.ts';

/** A batch sender under the test's control: each batch waits until released. */
function controlled<T>() {
  const batches: T[][] = [];
  const gates: { resolve(): void; reject(err: Error): void }[] = [];
  const send = (items: T[]) => {
    batches.push(items);
    return new Promise<void[]>((resolve, reject) => gates.push({ resolve: () => resolve(items.map(() => undefined)), reject }));
  };
  const next = async (): Promise<{ resolve(): void; reject(err: Error): void }> => {
    while (gates.length === 0) await new Promise((r) => setImmediate(r));
    return gates.shift() as { resolve(): void; reject(err: Error): void };
  };
  return { batches, send, next };
}

describe('Batcher', () => {
  it('sends the calls of one turn together, and the calls made during a batch in the next one', async () => {
    const c = controlled<number>();
    const b = new Batcher<number>({ send: c.send });
    const first = [1, 2, 3].map((n) => b.add(n));
    const gate1 = await c.next();
    expect(c.batches).toEqual([[1, 2, 3]]);
    const second = [4, 5].map((n) => b.add(n));
    await new Promise((r) => setImmediate(r));
    // One batch in flight at a time: 4 and 5 wait.
    expect(c.batches).toHaveLength(1);
    gate1.resolve();
    await Promise.all(first);
    const gate2 = await c.next();
    expect(c.batches).toEqual([
      [1, 2, 3],
      [4, 5],
    ]);
    gate2.resolve();
    await Promise.all(second);
    expect(b.batches).toBe(2);
  });

  it('resolves each caller with its own result', async () => {
    const b = new Batcher<number, string>({ send: (items) => Promise.resolve(items.map((n) => `#${n}`)) });
    expect(await Promise.all([b.add(1), b.add(2), b.add(3)])).toEqual(['#1', '#2', '#3']);
  });

  it('fails every caller of a failed batch, and only those', async () => {
    const c = controlled<number>();
    const b = new Batcher<number>({ send: c.send });
    const doomed = [b.add(1), b.add(2)];
    const gate1 = await c.next();
    const later = b.add(3);
    gate1.reject(new Error('broker said no'));
    for (const p of doomed) await expect(p).rejects.toThrow('broker said no');
    (await c.next()).resolve();
    await expect(later).resolves.toBeUndefined();
  });

  it('fails the callers when the sender answers the wrong number of results', async () => {
    const b = new Batcher<number, number>({ send: () => Promise.resolve([1]) });
    await expect(Promise.all([b.add(1), b.add(2)])).rejects.toThrow('a batch of 2 answered 1 results');
  });

  it('keeps a batch within maxBatch items and maxBatchBytes, and sends an oversized item alone', async () => {
    const sizes: number[][] = [];
    const b = new Batcher<string>({
      maxBatch: 3,
      maxBatchBytes: 10,
      weigh: (s) => s.length,
      send: (items) => {
        sizes.push(items.map((s) => s.length));
        return Promise.resolve(items.map(() => undefined));
      },
    });
    await Promise.all(['a', 'b', 'c', 'd', 'e'].map((s) => b.add(s)));
    expect(sizes).toEqual([
      [1, 1, 1],
      [1, 1],
    ]);
    sizes.length = 0;
    await Promise.all(['xxxx', 'yyyy', 'zzzz', 'w'.repeat(50), 'v'].map((s) => b.add(s)));
    expect(sizes).toEqual([[4, 4], [4], [50], [1]]);
  });

  it('runs up to maxInFlight batches at once', async () => {
    const c = controlled<number>();
    const b = new Batcher<number>({ send: c.send, maxBatch: 1, maxInFlight: 2 });
    const all = [1, 2, 3].map((n) => b.add(n));
    const g1 = await c.next();
    const g2 = await c.next();
    expect(c.batches).toEqual([[1], [2]]);
    g1.resolve();
    (await c.next()).resolve();
    g2.resolve();
    await Promise.all(all);
    expect(c.batches).toEqual([[1], [2], [3]]);
  });

  it('on close, sends what is queued, waits for the batch in flight, then refuses new calls', async () => {
    const c = controlled<number>();
    const b = new Batcher<number>({ send: c.send });
    const inFlight = b.add(1);
    const gate1 = await c.next();
    const queued = b.add(2);
    let closed = false;
    const closing = b.close().then(() => (closed = true));
    await expect(b.add(3)).rejects.toBeInstanceOf(BatcherClosedError);
    await new Promise((r) => setImmediate(r));
    expect(closed).toBe(false);
    gate1.resolve();
    (await c.next()).resolve();
    await closing;
    await expect(inFlight).resolves.toBeUndefined();
    await expect(queued).resolves.toBeUndefined();
    expect(c.batches).toEqual([[1], [2]]);
    await b.close();
  });
});

describe('Batcher timeouts', () => {
  it('fails the callers of a batch that is not answered in time, and lets the next batch go', async () => {
    let calls = 0;
    const b = new Batcher<number>({
      timeoutMs: 50,
      send: (items) => {
        calls++;
        // The first send never answers (a client stuck retrying a broker that went away).
        return calls === 1 ? new Promise<void[]>(() => undefined) : Promise.resolve(items.map(() => undefined));
      },
    });
    const stuck = b.add(1);
    await new Promise((r) => setImmediate(r));
    const next = b.add(2);
    await expect(stuck).rejects.toBeInstanceOf(BatchTimeoutError);
    await expect(next).resolves.toBeUndefined();
    expect(calls).toBe(2);
  });
});
