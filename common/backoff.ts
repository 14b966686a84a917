/**
 * The one retry module: backoff formulas, `retrying`, and `sleep`.
 */

/** Exponential steps without jitter: base, 2 × base, 4 × base, … at most `maxMs`. */
export function exponentialMs(attempt: number, baseMs: number, maxMs: number): number {
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
}

/**
 * Exponential backoff with "equal jitter": half of the step is fixed, half random, so
 * retries of many tasks that failed together spread out but never come back at once.
 */
export function backoffMs(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const step = exponentialMs(attempt, baseMs, maxMs);
  return Math.round(step / 2 + (random() * step) / 2);
}

/** Runs `fn` until it succeeds, `retriable(err)` says no, or `tries` are used up. */
export async function retrying<T>(
  fn: () => Promise<T>,
  opts: { tries: number; baseMs: number; maxMs: number; retriable: (err: unknown) => boolean },
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= opts.tries || !opts.retriable(err)) throw err;
      await sleep(backoffMs(attempt, opts.baseMs, opts.maxMs));
    }
  }
}

/** Resolves after `ms`, or at once when `signal` aborts (it never rejects). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * Waits `ms`, or rejects with the signal's reason (an Error) as soon as it aborts: what a
 * handler's simulated work uses, so a cancel or timeout ends it at once. Leaves no listener behind.
 */
export function delay(ms: number, signal: AbortSignal): Promise<void> {
  const reason = () => (signal.reason instanceof Error ? signal.reason : new Error('aborted'));
  if (signal.aborted) return Promise.reject(reason());
  if (ms <= 0) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(t);
      reject(reason());
    };
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
