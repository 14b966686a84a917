/**
 * Shares a worker's slots among its priority lanes (one subscription per priority topic):
 * a free slot goes to the highest lane that has a delivery waiting, first come first served
 * within a lane. Under a backlog, high-priority tasks start first.
 */
import type { Priority } from '../common/task.ts';

export class GateClosedError extends Error {
  constructor() {
    super('the worker is stopping');
  }
}

interface Waiter {
  resolve(): void;
  reject(err: Error): void;
}

export class PriorityGate {
  private free: number;
  private readonly lanes: Record<Priority, Waiter[]> = { high: [], normal: [], low: [] };
  private scheduled = false;
  private closed = false;

  constructor(readonly capacity: number) {
    this.free = capacity;
  }

  /** Resolves when this delivery may run; call release() when it is done. */
  acquire(priority: Priority): Promise<void> {
    if (this.closed) return Promise.reject(new GateClosedError());
    return new Promise((resolve, reject) => {
      this.lanes[priority].push({ resolve, reject });
      this.schedule();
    });
  }

  release(): void {
    this.free++;
    this.schedule();
  }

  /** Deliveries waiting for a slot, per lane. */
  get waiting(): Record<Priority, number> {
    return { high: this.lanes.high.length, normal: this.lanes.normal.length, low: this.lanes.low.length };
  }

  /** Turns away every waiting delivery and any later one (their messages go back to the broker). */
  close(): void {
    this.closed = true;
    for (const lane of Object.values(this.lanes)) for (const w of lane.splice(0)) w.reject(new GateClosedError());
  }

  // Grants wait for the next turn of the event loop, so that deliveries of several lanes that
  // arrive together are ranked together instead of first-come.
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      while (this.free > 0 && !this.closed) {
        const next = this.lanes.high.shift() ?? this.lanes.normal.shift() ?? this.lanes.low.shift();
        if (!next) return;
        this.free--;
        next.resolve();
      }
    });
  }
}
