import { describe, expect, it } from 'vitest';
import { OffsetTracker, Slots } from './offset-tracker.ts';

describe('OffsetTracker', () => {
  it('commits only up to the first unfinished offset', () => {
    const t = new OffsetTracker();
    for (const o of [5n, 6n, 7n]) t.start(o);
    expect(t.finish(6n)).toBeUndefined();
    expect(t.finish(7n)).toBeUndefined();
    expect(t.finish(5n)).toBe(8n);
    expect(t.size).toBe(0);
  });

  it('moves the commit point one by one in order and ignores unknown offsets', () => {
    const t = new OffsetTracker();
    t.start(1n);
    t.start(2n);
    expect(t.finish(1n)).toBe(2n);
    expect(t.finish(9n)).toBeUndefined();
    expect(t.has(2n)).toBe(true);
    expect(t.finish(2n)).toBe(3n);
  });
});

describe('Slots', () => {
  it('bounds concurrency, ticks while waiting, and gives up on stop', async () => {
    const s = new Slots(1);
    let ticks = 0;
    let stop = false;
    expect(
      await s.acquire(
        () => Promise.resolve(void ticks++),
        10,
        () => stop,
      ),
    ).toBe(true);
    const waiting = s.acquire(
      () => Promise.resolve(void ticks++),
      10,
      () => stop,
    );
    await new Promise((r) => setTimeout(r, 60));
    expect(ticks).toBeGreaterThan(0);
    s.release();
    expect(await waiting).toBe(true);
    stop = true;
    const gaveUp = s.acquire(
      () => Promise.resolve(),
      10,
      () => stop,
    );
    s.wakeAll();
    expect(await gaveUp).toBe(false);
    expect(s.inUse).toBe(1);
  });
});
