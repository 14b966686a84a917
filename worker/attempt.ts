/**
 * One attempt of a claimed task: the handler runs with its context (progress, log, partial,
 * an AbortSignal), under a renewed lease and a timeout. Answers the result or the error,
 * with the handler events not yet stored, which go with the transition that ends the attempt.
 */
import { NonRetryableError, TaskTimeoutError, errorMessage } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import type { HandlerContext, TaskType } from '../common/registry.ts';
import type { TaskStore, TransitionCode } from '../common/store/port.ts';
import type { HandlerEvent, TaskRecord } from '../common/task.ts';
import { EventRecorder } from './event-recorder.ts';

export interface AttemptOptions {
  /** This worker's id, the owner in the store. */
  worker: string;
  leaseMs: number;
  /** Time the attempt may take unless its type says otherwise. */
  taskTimeoutMs: number;
  /** ctx.needs: the results of the steps it needs. */
  needs?: Record<string, unknown>;
  /** ctx.spawn, bound to this task. */
  spawn?: HandlerContext['spawn'];
}

export type AttemptOutcome =
  | { ok: true; result: unknown; events: HandlerEvent[] }
  /** `ran` is false when the handler never started (its input no longer matches the schema). */
  | { ok: false; error: unknown; events: HandlerEvent[]; ran: boolean };

export async function runAttempt(
  store: TaskStore,
  task: TaskRecord,
  type: TaskType,
  controller: AbortController,
  opts: AttemptOptions,
  log: Logger,
): Promise<AttemptOutcome> {
  const lost = (code: TransitionCode) => {
    if (code !== 'ok' && !controller.signal.aborted) {
      log.warn('lost the task (lease taken over or task ended); stopping the handler', { code });
      controller.abort(new Error(`task lost: ${code}`));
    }
  };
  const renew = setInterval(
    () => {
      store.renewLease(task.id, opts.worker, opts.leaseMs).then(lost, (err: unknown) => {
        log.warn('lease renewal failed; will retry', { err: errorMessage(err) });
      });
    },
    Math.max(250, Math.floor(opts.leaseMs / 3)),
  );
  const recorder = new EventRecorder((events) => store.report(task.id, opts.worker, events), lost, log);
  const ctx: HandlerContext = {
    taskId: task.id,
    tenant: task.tenant,
    attempt: task.attempt,
    userId: task.userId,
    signal: controller.signal,
    progress: (percent, message) => {
      const p = Math.max(0, Math.min(100, Math.round(Number.isFinite(percent) ? percent : 0)));
      return recorder.add({ type: 'progress', data: { percent: p, message: message ?? null } });
    },
    log: (level, message, data) => {
      // The handler's data under `data`, so it cannot overwrite the line's own fields (task_id, attempt); redacted as any line's.
      log[level](message, data === undefined ? { attempt: task.attempt } : { data, attempt: task.attempt });
      void recorder.add({ type: 'log', data: data === undefined ? { level, message } : { level, message, data } });
    },
    partial: (chunk) => (typeof chunk === 'string' && chunk !== '' ? recorder.add({ type: 'partial', data: { chunk } }) : Promise.resolve()),
    needs: opts.needs ?? {},
    spawn: opts.spawn ?? (() => Promise.reject(new Error('ctx.spawn is not available in this worker'))),
  };

  let ran = false;
  try {
    const input = type.input.safeParse(task.input);
    if (!input.success) {
      throw new NonRetryableError(`input does not match the ${type.name} schema: ${input.error.issues[0]?.message ?? ''}`, 'invalid_input');
    }
    ran = true;
    const timeoutMs = type.timeoutMs ?? opts.taskTimeoutMs;
    const timer = setTimeout(() => controller.abort(new TaskTimeoutError(timeoutMs)), timeoutMs);
    let onAbort: (() => void) | undefined;
    try {
      const result = await Promise.race([
        type.handler(ctx, input.data),
        new Promise<never>((_, reject) => {
          onAbort = () => reject(controller.signal.reason as Error);
          if (controller.signal.aborted) onAbort();
          else controller.signal.addEventListener('abort', onAbort, { once: true });
        }),
      ]);
      return { ok: true, result, events: await recorder.end() };
    } finally {
      clearTimeout(timer);
      if (onAbort) controller.signal.removeEventListener('abort', onAbort);
    }
  } catch (error) {
    return { ok: false, error, events: await recorder.end(), ran };
  } finally {
    clearInterval(renew);
  }
}
