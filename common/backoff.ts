/**
 * Exponential backoff with "equal jitter": half of the step is fixed, half random, so
 * retries of many tasks that failed together spread out but never come back at once.
 */
export function backoffMs(attempt: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const step = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
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
      await new Promise((r) => setTimeout(r, backoffMs(attempt, opts.baseMs, opts.maxMs)));
    }
  }
}
