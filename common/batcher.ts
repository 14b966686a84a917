/**
 * Coalesces concurrent calls into batches: the first call is sent at the next turn of the
 * event loop, and calls that come while a batch is in flight wait for it and go together in
 * the next one (no timer: an idle batcher adds no latency, a busy one sends bigger batches).
 *
 * Each caller resolves with the result of its own item, only once the batch that carried it
 * succeeded; a batch that fails rejects every caller in it with the batch's error.
 */

export interface BatcherOptions<T, R> {
  /** Sends one batch; answers one result per item, in order, or throws to fail them all. */
  send(items: T[]): Promise<R[]>;
  /** Most items in one batch. Default 500. */
  maxBatch?: number;
  /** Batches in flight at once. Default 1. */
  maxInFlight?: number;
  /** Size of an item, for `maxBatchBytes`. Default: every item weighs 0. */
  weigh?: (item: T) => number;
  /** Most bytes in one batch (an item bigger than this goes alone). Default: no limit. */
  maxBatchBytes?: number;
  /**
   * A batch not answered within this long fails its callers and frees its slot, so one send
   * stuck in a client's retries (a broker that went away) cannot hold back every later batch.
   * The send itself may still land later: callers must treat the failure as "unknown", as they
   * treat a timeout. Default: no limit.
   */
  timeoutMs?: number;
}

interface Pending<T, R> {
  item: T;
  resolve(r: R): void;
  reject(err: unknown): void;
}

export class BatcherClosedError extends Error {
  constructor() {
    super('the batcher is closed');
  }
}

export class BatchTimeoutError extends Error {
  constructor(timeoutMs: number) {
    super(`the batch was not answered within ${timeoutMs} ms`);
  }
}

export class Batcher<T, R = void> {
  private readonly queue: Pending<T, R>[] = [];
  private readonly maxBatch: number;
  private readonly maxInFlight: number;
  private readonly inFlight = new Set<Promise<void>>();
  private scheduled = false;
  private closed = false;
  /** Batches sent so far (for the process statistics). */
  batches = 0;

  constructor(private readonly opts: BatcherOptions<T, R>) {
    this.maxBatch = opts.maxBatch ?? 500;
    this.maxInFlight = opts.maxInFlight ?? 1;
    if (this.maxBatch < 1 || this.maxInFlight < 1) throw new RangeError('maxBatch and maxInFlight must be at least 1');
  }

  add(item: T): Promise<R> {
    if (this.closed) return Promise.reject(new BatcherClosedError());
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.schedule();
    });
  }

  /** Sends what is queued and waits for every batch in flight; later calls are refused. Safe twice. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.queue.length > 0 || this.inFlight.size > 0) {
      this.pump();
      await Promise.allSettled([...this.inFlight]);
    }
  }

  // Waits for the next turn so that the calls of one turn (e.g. the requests parsed from one
  // read of the sockets) go out together.
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    while (this.queue.length > 0 && this.inFlight.size < this.maxInFlight) {
      const batch = this.queue.splice(0, this.takeCount());
      this.batches++;
      const run = this.sendBatch(batch);
      this.inFlight.add(run);
      void run.finally(() => {
        this.inFlight.delete(run);
        if (this.queue.length > 0) this.pump();
      });
    }
  }

  /** How many queued items the next batch takes: up to maxBatch and maxBatchBytes, at least one. */
  private takeCount(): number {
    const { weigh, maxBatchBytes } = this.opts;
    const n = Math.min(this.queue.length, this.maxBatch);
    if (!weigh || maxBatchBytes === undefined) return n;
    let bytes = 0;
    for (let i = 0; i < n; i++) {
      bytes += weigh((this.queue[i] as Pending<T, R>).item);
      if (bytes > maxBatchBytes) return Math.max(1, i);
    }
    return n;
  }

  private async sendBatch(batch: Pending<T, R>[]): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      const sending = this.opts.send(batch.map((p) => p.item));
      const { timeoutMs } = this.opts;
      const results =
        timeoutMs === undefined
          ? await sending
          : await Promise.race([
              sending,
              new Promise<never>((_, reject) => {
                timer = setTimeout(() => reject(new BatchTimeoutError(timeoutMs)), timeoutMs);
              }),
            ]);
      if (results.length !== batch.length) throw new Error(`a batch of ${batch.length} answered ${results.length} results`);
      batch.forEach((p, i) => p.resolve(results[i] as R));
    } catch (err) {
      for (const p of batch) p.reject(err);
    } finally {
      clearTimeout(timer);
    }
  }
}
