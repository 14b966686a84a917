/**
 * Following a task from the API: its history as a stream of events, and waiting for its end.
 * Both read Redis (through the store), never process memory, so any API replica can serve
 * any caller and a reconnect may land on another replica.
 */
import type { TaskStore, WorkflowEvent } from '../common/store/port.ts';
import { TERMINAL_EVENTS, isTerminal, type TaskEvent, type TaskRecord } from '../common/task.ts';

export interface WatchOptions {
  /**
   * How long a watch waits for news before it reads the store anyway: the safety net for
   * news lost while the store's subscription reconnected. Not a poll: news comes at once.
   */
  pollMs: number;
  signal?: AbortSignal;
}

const PAGE = 200;
/** How often a quiet watch checks that its task still exists (it may expire meanwhile). */
const EXISTS_CHECK_MS = 300_000;

/**
 * The events of task `id` after the event id `after` (all of them if null), as they come;
 * ends after the terminal event (done, failed, cancelled), when the task is gone, or on abort.
 */
export async function* followEvents(store: TaskStore, id: string, after: string | null, opts: WatchOptions): AsyncGenerator<TaskEvent> {
  // Subscribed before the first read, so nothing added after that read goes unheard.
  const watch = await store.watch(id);
  try {
    let last = after;
    let lastCheck = 0;
    while (!opts.signal?.aborted) {
      const batch = await store.events(id, last, PAGE);
      for (const e of batch) {
        last = e.id;
        yield e;
        if (TERMINAL_EVENTS.has(e.type)) return;
      }
      if (batch.length === PAGE) continue;
      // Checked at once, then now and then: a resume after the terminal event gets nothing
      // more, and a task may expire while someone watches it.
      if (Date.now() - lastCheck > EXISTS_CHECK_MS) {
        lastCheck = Date.now();
        const task = await store.get(id);
        if (!task || isTerminal(task.status)) {
          // The end event may have landed between the two reads.
          for (const e of await store.events(id, last, PAGE)) yield e;
          return;
        }
      }
      await watch.changed(opts.pollMs, opts.signal);
    }
  } finally {
    watch.close();
  }
}

/** The events of `source`, each turned into `f(e)`. */
export async function* mapEvents<E, V>(source: AsyncIterable<E>, f: (e: E) => V): AsyncGenerator<V> {
  for await (const e of source) yield f(e);
}

/**
 * The events of all steps of workflow `id` after `after`, as they come; ends after the
 * workflow's own end event, when it is gone, or on abort.
 */
export async function* followWorkflowEvents(store: TaskStore, id: string, after: string | null, opts: WatchOptions): AsyncGenerator<WorkflowEvent> {
  const watch = await store.watchWorkflow(id);
  try {
    let last = after;
    let lastCheck = 0;
    while (!opts.signal?.aborted) {
      const batch = await store.workflowEvents(id, last, PAGE);
      for (const e of batch) {
        last = e.id;
        yield e;
        if (e.type === 'workflow') return;
      }
      if (batch.length === PAGE) continue;
      if (Date.now() - lastCheck > EXISTS_CHECK_MS) {
        lastCheck = Date.now();
        const wf = await store.getWorkflow(id);
        if (!wf || wf.status !== 'running') {
          for (const e of await store.workflowEvents(id, last, PAGE)) yield e;
          return;
        }
      }
      await watch.changed(opts.pollMs, opts.signal);
    }
  } finally {
    watch.close();
  }
}

/** The task once it is terminal, or as it is when `waitMs` has passed (null if it is gone). */
export async function waitForEnd(store: TaskStore, id: string, waitMs: number, opts: WatchOptions): Promise<TaskRecord | null> {
  const deadline = Date.now() + waitMs;
  const watch = await store.watch(id);
  try {
    for (;;) {
      const task = await store.get(id);
      if (!task || isTerminal(task.status)) return task;
      const left = deadline - Date.now();
      if (left <= 0 || opts.signal?.aborted) return task;
      await watch.changed(Math.min(opts.pollMs, left), opts.signal);
    }
  } finally {
    watch.close();
  }
}
