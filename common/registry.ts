/**
 * Task types: how users plug their own agent logic in. A type has an input schema (checked by
 * the API before a task is accepted, and again by the worker), a handler, and its retry and
 * timeout settings.
 */
import type { z } from 'zod';
import type { LogLevel } from './logger.ts';

export interface HandlerContext {
  taskId: string;
  /** The tenant that owns the task (of the API key that created it). */
  tenant: string;
  /** 1 on the first attempt. */
  attempt: number;
  userId: string | null;
  /**
   * Fires when the task is cancelled (DELETE /tasks/:id), times out, is taken over by another
   * worker, or the worker stops. Its reason is a TaskCancelledError for a cancellation.
   */
  signal: AbortSignal;
  /** Reports progress (0-100) and what the handler is doing; stored, in the history, and streamed to callers. */
  progress(percent: number, message?: string): Promise<void>;
  /** A line for the worker's log and the task's history (GET /tasks/:id?history=true, SSE `log`). */
  log(level: LogLevel, message: string, data?: Record<string, unknown>): void;
  /**
   * Incremental output — LLM tokens, one agent's section of a report: streamed to callers as
   * SSE `partial` events and appended to the task's `output`.
   */
  partial(chunk: string): Promise<void>;
  /** The results of the workflow steps this step needs, by step id; {} for a task that is not a step (or needs nothing). */
  needs: Record<string, unknown>;
  /**
   * Starts child tasks as a workflow of their own (seed 002: an agent that decides at run time
   * how many parts there are), with an optional `then` step that runs once they are all done,
   * their results in its ctx.needs. No slot is held while they run: this handler can return.
   * The workflow's id derives from this task and the call's order, so an attempt run again
   * after a crash gets the same workflow back instead of a second one.
   */
  spawn(children: SpawnStep[], opts?: { then?: SpawnStep; name?: string }): Promise<SpawnedWorkflow>;
}

/** A step ctx.spawn starts: a task type and its input (`id`: its step id, default `child-<n>`, and `then`). */
export interface SpawnStep {
  id?: string;
  type: string;
  input: unknown;
  priority?: 'high' | 'normal' | 'low';
}

export interface SpawnedWorkflow {
  workflowId: string;
  /** Step id → task id. */
  steps: Record<string, string>;
}

/** A built-in workflow (POST /workflows {"template": name, "input": …}). */
export interface WorkflowTemplate<I = unknown> {
  name: string;
  description: string;
  input: z.ZodType<I>;
  /** The steps, as POST /workflows takes them. */
  steps: Bivariant<(input: I) => { id: string; type: string; input: unknown; needs?: string[] }[]>;
}

/** A function type checked like a method (bivariantly), so a TaskType<I> is a TaskType<unknown> in the registry. */
type Bivariant<F extends (...args: never[]) => unknown> = { check(...args: Parameters<F>): ReturnType<F> }['check'];

export interface TaskType<I = unknown, O = unknown> {
  /** Name used in `type` on submit, e.g. `agent`. */
  name: string;
  /** Schema of `input`. */
  input: z.ZodType<I>;
  /** The work. Throw {@link NonRetryableError} for a failure another attempt cannot fix. */
  handler(ctx: HandlerContext, input: I): Promise<O>;
  /** Attempts before the task fails. Default: MAX_ATTEMPTS. */
  maxAttempts?: number;
  /** Time one attempt may take. Default: TASK_TIMEOUT_MS. */
  timeoutMs?: number;
  /**
   * Quota units one task of this type spends from its tenant's budget, fixed or computed from
   * its (validated) input; a whole number >= 0. Default 1.
   */
  cost?: number | Bivariant<(input: I) => number>;
  /**
   * A cheaper input this type can run instead when the tenant's quota is short of the full
   * cost (seed 000: a multi-agent report downgrades to single-agent). Answers null when this
   * input has no cheaper form. The downgraded input's cost is computed with `cost`.
   */
  downgrade?(input: I): I | null;
}

/** The quota units a task of `type` with `input` costs (see TaskType.cost). */
export function costOf<I>(type: TaskType<I>, input: I): number {
  const c = typeof type.cost === 'function' ? type.cost(input) : (type.cost ?? 1);
  if (!Number.isInteger(c) || c < 0) throw new TypeError(`task type ${type.name}: cost must be a whole number >= 0 (got ${c})`);
  return c;
}

export const defineTaskType = <I, O>(t: TaskType<I, O>): TaskType<I, O> => t;

export class TaskRegistry {
  private readonly types = new Map<string, TaskType>();
  private readonly templates = new Map<string, WorkflowTemplate>();

  registerTemplate<I>(t: WorkflowTemplate<I>): this {
    if (this.templates.has(t.name)) throw new TypeError(`workflow template ${t.name} is registered twice`);
    this.templates.set(t.name, t);
    return this;
  }

  template(name: string): WorkflowTemplate | undefined {
    return this.templates.get(name);
  }

  templateNames(): string[] {
    return [...this.templates.keys()];
  }

  register<I, O>(type: TaskType<I, O>): this {
    if (!/^[a-z][a-z0-9_.-]{0,63}$/.test(type.name)) throw new TypeError(`invalid task type name ${JSON.stringify(type.name)}`);
    if (this.types.has(type.name)) throw new TypeError(`task type ${type.name} is registered twice`);
    this.types.set(type.name, type);
    return this;
  }

  get(name: string): TaskType | undefined {
    return this.types.get(name);
  }

  names(): string[] {
    return [...this.types.keys()];
  }
}
