/**
 * Per-partition bookkeeping for Kafka: which offsets are in flight, and the highest offset
 * that may be committed. Offsets are committed only up to the first unfinished one, so a
 * crash never skips a message that was still running (handlers finish out of order).
 */
export class OffsetTracker {
  /** Offsets taken, in ascending order, → finished? */
  private readonly entries = new Map<bigint, boolean>();

  has(offset: bigint): boolean {
    return this.entries.has(offset);
  }

  start(offset: bigint): void {
    this.entries.set(offset, false);
  }

  /**
   * Marks `offset` finished. Returns the offset to commit (last contiguous finished + 1) when
   * the committable point moved, else undefined.
   */
  finish(offset: bigint): bigint | undefined {
    if (!this.entries.has(offset)) return undefined;
    this.entries.set(offset, true);
    let committable: bigint | undefined;
    for (const [o, done] of this.entries) {
      if (!done) break;
      this.entries.delete(o);
      committable = o + 1n;
    }
    return committable;
  }

  get size(): number {
    return this.entries.size;
  }
}

/** A counting semaphore whose waiters can do work (Kafka heartbeats) while they wait. */
export class Slots {
  private used = 0;
  private waiters: (() => void)[] = [];

  constructor(private readonly size: number) {}

  get inUse(): number {
    return this.used;
  }

  /**
   * Waits for a free slot, calling `tick` every `tickMs` meanwhile. Resolves false, without a
   * slot, once `stop()` returns true.
   */
  async acquire(tick: () => Promise<void>, tickMs: number, stop: () => boolean): Promise<boolean> {
    while (this.used >= this.size) {
      if (stop()) return false;
      let wake!: () => void;
      const woke = new Promise<void>((r) => (wake = r));
      this.waiters.push(wake);
      const timer = setTimeout(wake, tickMs);
      await woke;
      clearTimeout(timer);
      this.waiters = this.waiters.filter((w) => w !== wake);
      if (this.used >= this.size && !stop()) await tick();
    }
    if (stop()) return false;
    this.used++;
    return true;
  }

  release(): void {
    this.used--;
    this.waiters.shift()?.();
  }

  /** Wakes every waiter (to notice a stop). */
  wakeAll(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}
