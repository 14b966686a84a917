/**
 * Following a task from the API: its history as a stream of events, and waiting for its end.
 * Both read Redis (through the store), never process memory, so any API replica can serve
 * any caller and a reconnect may land on another replica.
 */
import type { TaskStore } from '../common/store/port.ts';
import { TERMINAL_EVENTS, isTerminal, type TaskEvent, type TaskRecord } from '../common/task.ts';

export interface WatchOptions {
  /** Pause between reads when nothing new has come. */
  pollMs: number;
  signal?: AbortSignal;
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function pause(ms: number, signal?: AbortSignal): Promise<void> {
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

const PAGE = 200;
/** How often a quiet watch checks that its task still exists (it may expire meanwhile). */
const EXISTS_CHECK_MS = 5000;

/**
 * The events of task `id` after the event id `after` (all of them if null), as they come;
 * ends after the terminal event (done, failed, cancelled), when the task is gone, or on abort.
 */
export async function* followEvents(store: TaskStore, id: string, after: string | null, opts: WatchOptions): AsyncGenerator<TaskEvent> {
  let last = after;
  // Checked at once, then now and then: a resume after the terminal event gets nothing more,
  // and a task may expire while someone watches it.
  let lastCheck = 0;
  while (!opts.signal?.aborted) {
    const batch = await store.events(id, last, PAGE);
    for (const e of batch) {
      last = e.id;
      yield e;
      if (TERMINAL_EVENTS.has(e.type)) return;
    }
    if (batch.length === PAGE) continue;
    if (Date.now() - lastCheck > EXISTS_CHECK_MS) {
      lastCheck = Date.now();
      const task = await store.get(id);
      if (!task || isTerminal(task.status)) {
        // The end event may have landed between the two reads.
        for (const e of await store.events(id, last, PAGE)) yield e;
        return;
      }
    }
    await pause(opts.pollMs, opts.signal);
  }
}

/** The task once it is terminal, or as it is when `waitMs` has passed (null if it is gone). */
export async function waitForEnd(store: TaskStore, id: string, waitMs: number, opts: WatchOptions): Promise<TaskRecord | null> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const task = await store.get(id);
    if (!task || isTerminal(task.status)) return task;
    const left = deadline - Date.now();
    if (left <= 0 || opts.signal?.aborted) return task;
    await pause(Math.min(opts.pollMs, left), opts.signal);
  }
}
