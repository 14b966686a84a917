/**
 * Workflows (fan-out / fan-in): a set of steps, each a task that needs others. The request
 * is checked and put in dependency order here; the store writes every step in one atomic
 * step (the ones that need nothing `queued`, the rest `waiting`) and readies a step in the
 * same transition that completes its last need (store/port.ts createWorkflow). The API's
 * POST /workflows and a handler's ctx.spawn both start workflows through startWorkflow.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { z } from 'zod';
import type { Broker } from './broker/port.ts';
import { UnavailableError, ValidationError, errorMessage, withTimeout } from './errors.ts';
import type { Logger } from './logger.ts';
import { submitOutcomeOf, type Metrics, type SubmitOutcome } from './metrics.ts';
import { requestOutgoing, requestTopicFor } from './messages.ts';
import { quotaExceededError, rateLimitedError } from './limits.ts';
import { costOf, type TaskRegistry } from './registry.ts';
import type { NewStep, NewWorkflow, RateState, TaskStore } from './store/port.ts';
import type { NewTask, Priority, TaskRecord } from './task.ts';
import { workflowStepsBody, workflowTemplateBody } from './workflow-schemas.ts';

export { MAX_STEPS, workflowStepSchema, workflowStepsBody, workflowTemplateBody, type WorkflowStepSpec } from './workflow-schemas.ts';
import { traceHeaders } from './tracing.ts';

/** A workflow request, checked: its steps in an order where each comes after its needs. */
export interface WorkflowSpec {
  name: string | null;
  userId: string | null;
  steps: { id: string; type: string; input: unknown; needs: string[]; priority: Priority; maxAttempts: number }[];
}

const fail = (path: string, message: string): never => {
  throw new ValidationError(`${path}: ${message}`, [{ path, message }]);
};

function issuesError(err: z.ZodError, prefix: (string | number)[] = []): ValidationError {
  const issues = err.issues.map((i) => ({ path: [...prefix, ...i.path].map(String).join('.'), message: i.message }));
  const first = issues[0];
  return new ValidationError(first ? `${first.path || 'body'}: ${first.message}` : 'invalid workflow', issues);
}

/** Checks a POST /workflows body (or a spawn's steps): known types, valid inputs, needs that exist, no cycle. */
export function resolveWorkflow(body: unknown, registry: TaskRegistry, defaultMaxAttempts: number): WorkflowSpec {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) fail('', 'must be a JSON object');
  if ('template' in (body as object)) {
    const parsed = workflowTemplateBody.safeParse(body);
    if (!parsed.success) throw issuesError(parsed.error);
    const t = registry.template(parsed.data.template);
    if (!t)
      return fail('template', `unknown workflow template ${JSON.stringify(parsed.data.template)}; known: ${registry.templateNames().join(', ') || 'none'}`);
    const input = t.input.safeParse(parsed.data.input);
    if (!input.success) throw issuesError(input.error, ['input']);
    const spec = resolveWorkflow({ steps: t.steps(input.data) }, registry, defaultMaxAttempts);
    return { ...spec, name: parsed.data.name ?? t.name, userId: parsed.data.user_id ?? null };
  }
  const parsed = workflowStepsBody.safeParse(body);
  if (!parsed.success) throw issuesError(parsed.error);
  const { steps } = parsed.data;
  const index = new Map<string, number>();
  steps.forEach((s, i) => {
    if (index.has(s.id)) fail(`steps.${i}.id`, `step id ${JSON.stringify(s.id)} is used twice`);
    index.set(s.id, i);
  });
  const resolved = steps.map((s, i) => {
    s.needs.forEach((n, j) => {
      if (!index.has(n)) fail(`steps.${i}.needs.${j}`, `no step ${JSON.stringify(n)} in this workflow`);
      if (n === s.id) fail(`steps.${i}.needs.${j}`, 'a step cannot need itself');
    });
    const type = registry.get(s.type);
    if (!type) return fail(`steps.${i}.type`, `unknown task type ${JSON.stringify(s.type)}; known: ${registry.names().join(', ')}`);
    const input = type.input.safeParse(s.input);
    if (!input.success) throw issuesError(input.error, ['steps', i, 'input']);
    return {
      id: s.id,
      type: s.type,
      input: input.data,
      needs: [...new Set(s.needs)],
      priority: s.priority,
      maxAttempts: s.max_attempts ?? type.maxAttempts ?? defaultMaxAttempts,
    };
  });
  // Dependency order (Kahn); what is left over is a cycle.
  const ordered: typeof resolved = [];
  const done = new Set<string>();
  let left = resolved;
  while (left.length > 0) {
    const ready = left.filter((s) => s.needs.every((n) => done.has(n)));
    if (ready.length === 0) return fail('steps', `the needs form a cycle among ${left.map((s) => s.id).join(', ')}`);
    for (const s of ready) done.add(s.id);
    ordered.push(...ready);
    left = left.filter((s) => !done.has(s.id));
  }
  return { name: parsed.data.name ?? null, userId: parsed.data.user_id ?? null, steps: ordered };
}

/** A UUID derived from `seed`, so a handler's ctx.spawn run again makes the same workflow, not a second one. */
export function uuidFrom(seed: string): string {
  const h = createHash('sha256').update(seed).digest('hex');
  const variant = ((parseInt(h.slice(16, 17), 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

export interface WorkflowDeps {
  store: TaskStore;
  broker: Broker;
  logger: Logger;
  requestTopic: string;
  registry: TaskRegistry;
  /** Time the publish of the first steps may take before the workflow is cancelled (503). */
  publishTimeoutMs: number;
  /** When the relay publishes a first step whose publisher died first. */
  relayAfterMs: number;
  /** The deployment's default limits (a tenant's own win, in the store). */
  limits: { submitsPerSecond: number; quotaUnits: number; quotaWindowSeconds: number };
  /** Counts every step in atq_tasks_submitted_total (source `workflow`, or `spawn` for a child workflow) when given. */
  metrics?: Metrics | undefined;
}

export interface StartedWorkflow {
  workflowId: string;
  /** Step id → task id. */
  steps: Record<string, string>;
  /** False when a workflow of this id existed already (a spawn run again): nothing new was started. */
  created: boolean;
  /** The tenant's submit rate after this one, when it has a limit (for the RateLimit headers). */
  rate?: RateState;
}

/**
 * Creates the workflow and publishes the steps that need nothing. `id` is random unless
 * given (ctx.spawn derives it from the spawning task, so a re-run finds the same one); the
 * step task ids derive from it. If the first steps cannot be published in time, the workflow
 * is cancelled and an UnavailableError (503) thrown, as for a task.
 */
export async function startWorkflow(
  deps: WorkflowDeps,
  tenant: string,
  spec: WorkflowSpec,
  opts: { id?: string; parentTaskId?: string } = {},
): Promise<StartedWorkflow> {
  const m = deps.metrics;
  if (!m) return startUncounted(deps, tenant, spec, opts);
  const count = (outcome: SubmitOutcome) => {
    const source = opts.parentTaskId === undefined ? 'workflow' : 'spawn';
    for (const s of spec.steps) m.submitted.inc({ type: m.type(s.type), outcome, source });
  };
  try {
    const started = await startUncounted(deps, tenant, spec, opts);
    count(started.created ? 'accepted' : 'replayed');
    return started;
  } catch (err) {
    count(submitOutcomeOf(err));
    throw err;
  }
}

async function startUncounted(deps: WorkflowDeps, tenant: string, spec: WorkflowSpec, opts: { id?: string; parentTaskId?: string }): Promise<StartedWorkflow> {
  const id = opts.id ?? randomUUID();
  const createdAt = Date.now();
  const traceContext = traceHeaders();
  const steps: NewStep[] = spec.steps.map((s) => {
    const task: NewTask = {
      id: uuidFrom(`${id}/${s.id}`),
      tenant,
      type: s.type,
      input: s.input,
      userId: spec.userId,
      priority: s.priority,
      maxAttempts: s.maxAttempts,
      createdAt,
      traceContext,
    };
    return { step: s.id, task, needs: s.needs };
  });
  const stepIds = Object.fromEntries(steps.map((s) => [s.step, s.task.id]));
  const cost = spec.steps.reduce((n, s) => {
    const type = deps.registry.get(s.type);
    return n + (type ? costOf(type, s.input) : 1);
  }, 0);
  const wf: NewWorkflow = { id, tenant, name: spec.name, userId: spec.userId, parentTaskId: opts.parentTaskId ?? null, createdAt, steps };
  const created = await deps.store.createWorkflow(wf, createdAt + deps.relayAfterMs, { admission: { ...deps.limits, cost } });
  if (created.outcome === 'exists') return { workflowId: id, steps: stepIds, created: false };
  if (created.outcome === 'rate_limited') throw rateLimitedError(tenant, 'submits', created.rate);
  if (created.outcome === 'quota_exceeded') throw quotaExceededError(tenant, created.usage, created.retryAfterMs, `this workflow's steps cost ${cost}`);
  const roots = steps.filter((s) => s.needs.length === 0).map((s) => s.task);
  try {
    await withTimeout(
      Promise.all(roots.map((t) => deps.broker.publish(requestTopicFor(deps.requestTopic, t.priority), requestOutgoing(t)))),
      deps.publishTimeoutMs,
      () => new Error(`no ack within ${deps.publishTimeoutMs} ms`),
    );
  } catch (err) {
    await deps.store.cancelWorkflow(id, 'its first steps could not be published').catch((e: unknown) =>
      deps.logger.error('could not cancel a workflow whose first steps were not published; the relay may still start it', {
        workflow_id: id,
        err: errorMessage(e),
      }),
    );
    throw new UnavailableError('broker', `the broker did not accept the workflow's first steps: ${errorMessage(err)}`, { cause: err });
  }
  for (const t of roots) {
    deps.store.disarmOutbox(t.id, 0).catch((err: unknown) => deps.logger.warn('could not disarm the outbox entry', { task_id: t.id, err: errorMessage(err) }));
  }
  return { workflowId: id, steps: stepIds, created: true, ...(created.rate ? { rate: created.rate } : {}) };
}

/**
 * Publishes the steps a completion readied (TransitionResult.ready). If this fails, their
 * outbox entries are armed: the relay publishes them (store option readyPublishDelayMs).
 */
export async function publishReady(store: TaskStore, broker: Broker, requestTopic: string, ids: readonly string[], logger: Logger): Promise<void> {
  await Promise.all(
    ids.map(async (id) => {
      try {
        const t = await store.get(id);
        if (!t || t.status !== 'queued') return;
        await broker.publish(requestTopicFor(requestTopic, t.priority), requestOutgoing(t));
        await store.disarmOutbox(id, t.attempt);
      } catch (err) {
        logger.warn('could not publish a workflow step that became ready; the relay will', { task_id: id, err: errorMessage(err) });
      }
    }),
  );
}

/**
 * Counts in atq_tasks_finished_total the steps a workflow's end cancelled (DELETE /workflows/:id,
 * a DELETE of one of its steps, a step that failed) that were not running then: a running
 * step's worker counts its own end. `steps`: the workflow's step records after it ended;
 * `except`: the step that ended it, which its caller counts. Answers how many it counted.
 */
export async function countCancelledSteps(store: TaskStore, metrics: Metrics, steps: readonly (TaskRecord | null)[], except?: string): Promise<number> {
  const ended = await Promise.all(
    steps.map(async (t) => {
      if (!t || t.id === except || t.status !== 'cancelled') return false;
      // A step never claimed was not running; one claimed before was running, or waiting for its retry: its history says which.
      if (t.attempt === 0) return true;
      const events = await store.events(t.id, null, 1000);
      const cancelled = events.filter((e) => e.type === 'cancelled').at(-1);
      return cancelled !== undefined && cancelled.data.was !== 'running';
    }),
  );
  let n = 0;
  ended.forEach((counted, i) => {
    const t = steps[i];
    if (!counted || !t) return;
    metrics.finished.inc({ type: metrics.type(t.type), outcome: 'cancelled' });
    n++;
  });
  return n;
}

/** The step records of workflow `id` (null for one expired), for countCancelledSteps. */
export async function workflowSteps(store: TaskStore, id: string): Promise<(TaskRecord | null)[]> {
  const wf = await store.getWorkflow(id);
  return wf ? Promise.all(wf.steps.map((s) => store.get(s.taskId))) : [];
}
