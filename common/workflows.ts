/**
 * Workflows (fan-out / fan-in): a set of steps, each a task that needs others. The request
 * is checked and put in dependency order here; the store writes every step in one atomic
 * step (the ones that need nothing `queued`, the rest `waiting`) and readies a step in the
 * same transition that completes its last need (store/port.ts createWorkflow). The API's
 * POST /workflows and a handler's ctx.spawn both start workflows through startWorkflow.
 */
import { createHash, randomUUID } from 'node:crypto';
import type { z } from 'zod';
import { sleep } from './backoff.ts';
import type { Broker } from './broker/port.ts';
import { fingerprintOf } from './canonical.ts';
import { UnavailableError, ValidationError, WorkflowKeyReusedError, errorMessage, withTimeout } from './errors.ts';
import type { Logger } from './logger.ts';
import { submitOutcomeOf, type Metrics, type SubmitOutcome } from './metrics.ts';
import { requestOutgoing, requestTopicFor } from './messages.ts';
import { publishResult } from './results.ts';
import { quotaExceededError, rateLimitedError } from './limits.ts';
import { costOf, type TaskRegistry } from './registry.ts';
import type { IdempotencyClaim, NewStep, NewWorkflow, RateState, TaskStore, WorkflowStatus } from './store/port.ts';
import type { NewTask, Priority, TaskRecord } from './task.ts';
import { workflowStepsBody, workflowTemplateBody } from './workflow-schemas.ts';

export { MAX_STEPS, workflowStepSchema, workflowStepsBody, workflowTemplateBody, type WorkflowStepSpec } from './workflow-schemas.ts';
import { traceHeaders } from './tracing.ts';

/** A workflow request, checked: its steps in an order where each comes after its needs. */
export interface WorkflowSpec {
  name: string | null;
  userId: string | null;
  steps: { id: string; type: string; input: unknown; needs: string[]; priority: Priority; maxAttempts: number }[];
  /** A template's request: its name and its input as checked (defaults filled in). */
  template?: { name: string; input: unknown };
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
    return { ...spec, name: parsed.data.name ?? t.name, userId: parsed.data.user_id ?? null, template: { name: parsed.data.template, input: input.data } };
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

/**
 * What a replay of POST /workflows under the same Idempotency-Key must match: the name, the
 * user and the steps as resolved (each step's id, type, checked input, needs, priority and
 * attempts), or for a template its name and checked input instead of the steps it expands to
 * (so a retry that lands on a replica whose template changed is still the same request).
 */
export function workflowFingerprint(spec: WorkflowSpec): string {
  const what = spec.template ? { template: spec.template.name, input: spec.template.input } : { steps: spec.steps };
  return fingerprintOf({ ...what, name: spec.name, user_id: spec.userId });
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
  /** False when a workflow of this id existed already (a spawn run again), or on a replay: nothing new was started. */
  created: boolean;
  /**
   * An Idempotency-Key replay: `workflowId` and `steps` are the workflow the key started, and
   * this its status now (`running` if its record has expired since).
   */
  replay?: { status: WorkflowStatus };
  /** The tenant's submit rate after this one, when it has a limit (for the RateLimit headers). */
  rate?: RateState;
}

/** The reason a workflow is cancelled with when its first steps could not be published (a replay looks for it). */
export const START_FAILED_REASON = 'its first steps could not be published';

export interface StartOptions {
  /** Given by ctx.spawn (derived from the spawning task); random otherwise. */
  id?: string;
  parentTaskId?: string;
  /** POST /workflows' Idempotency-Key, with the request's workflowFingerprint. */
  idempotency?: IdempotencyClaim;
}

/**
 * Creates the workflow and publishes the steps that need nothing. `id` is random unless
 * given (ctx.spawn derives it from the spawning task, so a re-run finds the same one); the
 * step task ids derive from it. If the first steps cannot be published in time, the workflow
 * is cancelled (releasing its Idempotency-Key) and an UnavailableError (503) thrown, as for a
 * task. With `idempotency`, a key bound already answers the workflow it started (`replay`),
 * once that start's first steps are published (see replayOutcome), or a 422 for another request.
 */
export async function startWorkflow(deps: WorkflowDeps, tenant: string, spec: WorkflowSpec, opts: StartOptions = {}): Promise<StartedWorkflow> {
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

/** Step id → task id of workflow `id`: each step's task id derives from the workflow's. */
function stepTaskIds(id: string, spec: WorkflowSpec): Record<string, string> {
  return Object.fromEntries(spec.steps.map((s) => [s.id, uuidFrom(`${id}/${s.id}`)]));
}

async function startUncounted(deps: WorkflowDeps, tenant: string, spec: WorkflowSpec, opts: StartOptions): Promise<StartedWorkflow> {
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
  const idem = opts.idempotency;
  // Rate limit, idempotency, quota and every record: one round trip.
  const created = await deps.store.createWorkflow(wf, createdAt + deps.relayAfterMs, {
    admission: { ...deps.limits, cost },
    ...(idem ? { idempotency: idem } : {}),
  });
  if (created.outcome === 'exists') return { workflowId: id, steps: stepIds, created: false };
  if (created.outcome === 'rate_limited') throw rateLimitedError(tenant, 'submits', created.rate);
  if (created.outcome === 'quota_exceeded') throw quotaExceededError(tenant, created.usage, created.retryAfterMs, `this workflow's steps cost ${cost}`);
  if (created.outcome === 'replay') {
    if (created.fingerprint !== idem?.fingerprint) throw new WorkflowKeyReusedError(created.workflowId);
    const first = await replayOutcome(deps, created.workflowId, spec);
    return {
      workflowId: created.workflowId,
      steps: first.steps,
      created: false,
      replay: { status: first.status },
      ...(created.rate ? { rate: created.rate } : {}),
    };
  }
  const roots = steps.filter((s) => s.needs.length === 0).map((s) => s.task);
  try {
    await withTimeout(
      Promise.all(roots.map((t) => deps.broker.publish(requestTopicFor(deps.requestTopic, t.priority), requestOutgoing(t)))),
      deps.publishTimeoutMs,
      () => new Error(`no ack within ${deps.publishTimeoutMs} ms`),
    );
  } catch (err) {
    // The key goes with it, so the client's retry (with the same key) starts a workflow instead of replaying this one.
    await deps.store.cancelWorkflow(id, START_FAILED_REASON, tenant, idem?.key).catch((e: unknown) =>
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
 * A replay answers what the first request answered, as replayOutcome in api/submit.ts does for
 * a task: while that request is still publishing the workflow's first steps (one of them is
 * queued and its message not yet acknowledged), it waits for the outcome. A publish that failed
 * cancelled the workflow (START_FAILED_REASON) before the first request's 503, so the replay
 * answers 503 too (and the key was released: the next retry starts a workflow). A first step
 * still unpublished after the first request's publish timeout (its API died, or could not
 * cancel) is a 503 as well: retry with the same key, and get 202 once the relay has published it.
 */
async function replayOutcome(deps: WorkflowDeps, id: string, spec: WorkflowSpec): Promise<{ steps: Record<string, string>; status: WorkflowStatus }> {
  const deadline = Date.now() + deps.publishTimeoutMs + 1000;
  for (let pause = 10; ; pause = Math.min(pause * 2, 200)) {
    const wf = await deps.store.getWorkflow(id);
    // Expired since (IDEMPOTENCY_TTL_SECONDS > RESULT_TTL_SECONDS): the first answer, its step ids derived as they were.
    if (!wf) return { steps: stepTaskIds(id, spec), status: 'running' };
    const steps = Object.fromEntries(wf.steps.map((s) => [s.step, s.taskId]));
    const rootIds = spec.steps.flatMap((s) => (s.needs.length === 0 && steps[s.id] !== undefined ? [steps[s.id] as string] : []));
    const roots = (await Promise.all(rootIds.map((t) => deps.store.get(t)))).filter((t): t is TaskRecord => t !== null);
    if (wf.status === 'cancelled' && (await startFailed(deps.store, roots))) {
      throw new UnavailableError('broker', `the broker did not accept the first steps of workflow ${id}; retry with the same Idempotency-Key`);
    }
    const unpublished = wf.status === 'running' && roots.some((t) => t.status === 'queued' && t.attempt === 0 && !t.requestPublished);
    if (!unpublished) return { steps, status: wf.status };
    if (Date.now() >= deadline) {
      throw new UnavailableError(
        'broker',
        `the first request with this Idempotency-Key has not published the first steps of workflow ${id} yet; retry with the same key`,
      );
    }
    await sleep(pause);
  }
}

/** Whether a first step was cancelled, never published, because its start's publish failed (not by a DELETE). */
async function startFailed(store: TaskStore, roots: TaskRecord[]): Promise<boolean> {
  for (const t of roots) {
    if (t.status !== 'cancelled' || t.attempt !== 0 || t.requestPublished) continue;
    const events = await store.events(t.id, null, 1000);
    if (events.some((e) => e.type === 'cancelled' && e.data.reason === START_FAILED_REASON)) return true;
  }
  return false;
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

/** What endCancelledSteps needs: the store, and the metrics and result topic when the process has them. */
export interface StepEndDeps {
  store: TaskStore;
  broker: Broker;
  logger: Logger;
  metrics?: Metrics | undefined;
  resultTopic?: string | undefined;
  /** How long a result publish may take before it is left (logged). */
  publishTimeoutMs: number;
}

/**
 * The steps a workflow's end cancelled (DELETE /workflows/:id, a DELETE of one of its steps, a
 * step that failed) that were not running then have no worker to end them: each is counted in
 * atq_tasks_finished_total and its `cancelled` result message published here, once. A running
 * step's worker does both for its own. `steps`: the workflow's step records after it ended;
 * `except`: the step that ended it, which its caller ends. Answers how many it ended.
 */
export async function endCancelledSteps(deps: StepEndDeps, steps: readonly (TaskRecord | null)[], except?: string): Promise<number> {
  const { store, metrics, resultTopic, logger } = deps;
  const unrun = await Promise.all(
    steps.map(async (t) => {
      if (!t || t.id === except || t.status !== 'cancelled') return null;
      // A step never claimed was not running; one claimed before was running, or waiting for its retry: its history says which.
      if (t.attempt === 0) return t;
      const events = await store.events(t.id, null, 1000);
      const cancelled = events.filter((e) => e.type === 'cancelled').at(-1);
      return cancelled !== undefined && cancelled.data.was !== 'running' ? t : null;
    }),
  );
  const ended = unrun.filter((t): t is TaskRecord => t !== null);
  for (const t of ended) metrics?.finished.inc({ type: metrics.type(t.type), outcome: 'cancelled' });
  if (resultTopic) {
    await Promise.all(
      ended
        .filter((t) => !t.resultPublished)
        .map((t) =>
          withTimeout(publishResult(deps.broker, store, resultTopic, t), deps.publishTimeoutMs, () => new Error('no ack in time')).catch((err: unknown) =>
            logger.warn('could not publish the result of a cancelled step', { task_id: t.id, err: errorMessage(err) }),
          ),
        ),
    );
  }
  return ended.length;
}

/** The step records of workflow `id` (null for one expired), for endCancelledSteps. */
export async function workflowSteps(store: TaskStore, id: string): Promise<(TaskRecord | null)[]> {
  const wf = await store.getWorkflow(id);
  return wf ? Promise.all(wf.steps.map((s) => store.get(s.taskId))) : [];
}
