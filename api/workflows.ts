/**
 * Workflows, reruns and dead letters over HTTP: POST/GET/DELETE /workflows and its event
 * stream, POST /tasks/:id/retry, GET /dead-letters and POST /dead-letters/redrive. Every
 * route acts for the caller's tenant: another tenant's workflow or task is a 404.
 */
import type { Context, Hono } from 'hono';
import { z } from 'zod';
import type { Broker } from '../common/broker/port.ts';
import { ConflictError, NotFoundError, TooManyRequestsError, ValidationError, errorMessage, withTimeout } from '../common/errors.ts';
import { quotaExceededError, rateLimitHeaders } from '../common/limits.ts';
import type { Logger } from '../common/logger.ts';
import { requestOutgoing, requestTopicFor } from '../common/messages.ts';
import { costOf, type TaskRegistry } from '../common/registry.ts';
import type { TaskStore, WorkflowRecord } from '../common/store/port.ts';
import { isTaskId, type TaskRecord } from '../common/task.ts';
import {
  toDeadLetterView,
  toTaskView,
  toWorkflowEventView,
  toWorkflowSummary,
  toWorkflowView,
  type DeadLetterListView,
  type RedriveView,
  type WorkflowAcceptedView,
  type WorkflowListView,
} from '../common/views.ts';
import { endCancelledSteps, resolveWorkflow, startWorkflow, workflowFingerprint, type WorkflowDeps } from '../common/workflows.ts';
import type { AppEnv, Principal } from './auth.ts';
import { validationError } from './errors.ts';
import { idempotencyKeyOf, readJsonBody } from './request.ts';
import { decodeCursor, encodeCursor } from './schemas.ts';
import { resumeFrom, serveEvents } from './sse.ts';
import { followWorkflowEvents, mapEvents } from './watch.ts';

type Env = AppEnv;

/** The routes of this module and the methods each takes, for the 405s. */
export const WORKFLOW_METHODS: readonly [string, string][] = [
  ['/workflows', 'GET, POST'],
  ['/workflows/:id', 'GET, DELETE'],
  ['/workflows/:id/events', 'GET'],
  ['/tasks/:id/retry', 'POST'],
  ['/dead-letters', 'GET'],
  ['/dead-letters/redrive', 'POST'],
];

const typeName = z.string().regex(/^[a-z][a-z0-9_.-]{0,63}$/, 'must be a task type name');
const code = z.string().regex(/^[a-z0-9_.-]{1,64}$/i, 'must be an error code');
const pageLimit = z.coerce.number({ error: 'must be a number' }).int().min(1).max(100).default(20);
const listWorkflowsQuery = z.object({ limit: pageLimit, cursor: z.string().max(200).optional() });
const deadLettersQuery = z.object({ type: typeName.optional(), code: code.optional(), limit: pageLimit, cursor: z.string().max(200).optional() });
/** POST /dead-letters/redrive: all of the tenant's, or those of a type, an error code, or the ids given. */
export const redriveBody = z.strictObject({
  type: typeName.optional(),
  code: code.optional(),
  task_ids: z.array(z.string().refine(isTaskId, 'must be a task id (a UUID)')).min(1).max(1000).optional(),
  limit: z.number({ error: 'must be a whole number' }).int().min(1).max(1000).default(100),
});

export interface WorkflowRouteDeps extends WorkflowDeps {
  store: TaskStore;
  broker: Broker;
  logger: Logger;
  registry: TaskRegistry;
  resultTopic: string | undefined;
  maxAttempts: number;
  bodyLimit: number;
  /** How long an Idempotency-Key of POST /workflows names its workflow. */
  idempotencyTtlSeconds: number;
  pollMs: number;
  keepAliveMs: number;
  caller: (c: Context<Env>, scope: 'tasks:read' | 'tasks:write') => Promise<Principal>;
  ownTask: (p: Principal, id: string) => Promise<TaskRecord>;
  until: (c: Context<Env>) => AbortSignal;
}

function idParam(c: Context<Env>, what: string): string {
  const id = c.req.param('id') ?? '';
  if (!isTaskId(id)) throw new ValidationError(`id: must be a ${what} id (a UUID)`, [{ path: 'id', message: 'must be a UUID' }]);
  return id;
}

function query<T>(c: Context<Env>, schema: z.ZodType<T>): T {
  const parsed = schema.safeParse(c.req.query());
  if (!parsed.success) throw validationError(parsed.error);
  return parsed.data;
}

export function mountWorkflows(app: Hono<Env>, deps: WorkflowRouteDeps): void {
  const { store, broker, logger, registry, caller, ownTask, until, metrics } = deps;

  const ownWorkflow = async (p: Principal, id: string): Promise<WorkflowRecord> => {
    const wf = await store.getWorkflow(id);
    if (!wf || wf.tenant !== p.tenant) throw new NotFoundError(`no workflow ${id}`);
    return wf;
  };
  const viewOf = async (wf: WorkflowRecord) => {
    const recs = await Promise.all(wf.steps.map((s) => store.get(s.taskId)));
    return toWorkflowView(wf, new Map(recs.flatMap((r) => (r ? [[r.id, r] as const] : []))));
  };

  app.post('/workflows', async (c) => {
    const p = await caller(c, 'tasks:write');
    const key = idempotencyKeyOf(c);
    const spec = resolveWorkflow(await readJsonBody(c, deps.bodyLimit), registry, deps.maxAttempts);
    // Per tenant, apart from POST /tasks' keys (store/port.ts createWorkflow).
    const idempotency = key === undefined ? undefined : { key, fingerprint: workflowFingerprint(spec), ttlSeconds: deps.idempotencyTtlSeconds };
    const started = await startWorkflow(deps, p.tenant, spec, idempotency ? { idempotency } : {});
    if (started.replay) c.header('Idempotent-Replayed', 'true');
    else
      logger.info('workflow accepted', {
        request_id: c.get('requestId'),
        workflow_id: started.workflowId,
        tenant: p.tenant,
        name: spec.name,
        steps: spec.steps.length,
      });
    const statusUrl = new URL(`/workflows/${started.workflowId}`, c.req.url).toString();
    c.header('Location', statusUrl);
    if (started.rate) for (const [k, v] of Object.entries(rateLimitHeaders('submits', started.rate))) c.header(k, v);
    // A replay: the first answer, with the workflow's status now.
    const body: WorkflowAcceptedView = {
      workflow_id: started.workflowId,
      status: started.replay?.status ?? 'running',
      steps: started.steps,
      status_url: statusUrl,
      events_url: `${statusUrl}/events`,
    };
    return c.json(body, 202);
  });

  app.get('/workflows', async (c) => {
    const p = await caller(c, 'tasks:read');
    const q = query(c, listWorkflowsQuery);
    const page = await store.listWorkflows(p.tenant, q.limit, q.cursor === undefined ? undefined : decodeCursor(q.cursor));
    const body: WorkflowListView = { workflows: page.workflows.map(toWorkflowSummary), next_cursor: page.next ? encodeCursor(page.next) : null };
    return c.json(body);
  });

  app.get('/workflows/:id', async (c) => {
    const p = await caller(c, 'tasks:read');
    return c.json(await viewOf(await ownWorkflow(p, idParam(c, 'workflow'))));
  });

  app.delete('/workflows/:id', async (c) => {
    const p = await caller(c, 'tasks:write');
    const id = idParam(c, 'workflow');
    const reason = c.req.query('reason')?.slice(0, 500) ?? null;
    const r = await store.cancelWorkflow(id, reason, p.tenant);
    if (r.outcome === 'missing') throw new NotFoundError(`no workflow ${id}`);
    if (r.outcome === 'terminal') throw new ConflictError('workflow_finished', `workflow ${id} has ended ${r.workflow.status}`);
    logger.info('workflow cancelled', { request_id: c.get('requestId'), workflow_id: id });
    const recs = await Promise.all(r.workflow.steps.map((s) => store.get(s.taskId)));
    const view = toWorkflowView(r.workflow, new Map(recs.flatMap((t) => (t ? [[t.id, t] as const] : []))));
    // Steps that were not running have no worker to count and publish their end (running ones' workers do).
    await endCancelledSteps(deps, recs).catch((err: unknown) => logger.warn('could not end the cancelled steps', { workflow_id: id, err: errorMessage(err) }));
    return c.json(view);
  });

  app.get('/workflows/:id/events', async (c) => {
    const p = await caller(c, 'tasks:read');
    const id = idParam(c, 'workflow');
    const resume = resumeFrom(c);
    await ownWorkflow(p, id);
    return serveEvents(c, { keepAliveMs: deps.keepAliveMs, stop: until(c), logger, what: { workflow_id: id } }, (signal) =>
      mapEvents(followWorkflowEvents(store, id, resume, { pollMs: deps.pollMs, signal }), toWorkflowEventView),
    );
  });

  /**
   * Reruns one task of the caller's tenant and publishes it; answers its record, or why not.
   * The rerun spends the task's cost from the tenant's quota again (a 429 when it does not fit).
   */
  const rerun = async (tenant: string, task: TaskRecord): Promise<TaskRecord> => {
    const id = task.id;
    const type = registry.get(task.type);
    const cost = type ? costOf(type, task.input) : 1;
    const r = await store.rerun(id, Date.now() + deps.relayAfterMs, tenant, { ...deps.limits, cost });
    // A rerun is a submission too (source `rerun`): accepted, or refused (over the quota, gone, not failed or cancelled).
    metrics?.submitted.inc({
      type: metrics.type(task.type),
      outcome: r.outcome === 'rerun' ? 'accepted' : r.outcome === 'quota_exceeded' ? 'quota_exceeded' : 'rejected',
      source: 'rerun',
    });
    if (r.outcome === 'quota_exceeded') throw quotaExceededError(tenant, r.usage, r.retryAfterMs, `a rerun of this ${task.type} task costs ${cost}`);
    if (r.outcome === 'missing') throw new NotFoundError(`no task ${id}`, id);
    if (r.outcome === 'conflict') {
      const why = r.task.workflowId
        ? `task ${id} is a step of workflow ${r.task.workflowId}; start the workflow again instead`
        : `task ${id} is ${r.task.status}; only failed or cancelled tasks can be rerun`;
      throw new ConflictError('task_not_retryable', why, { task_id: id, status: r.task.status });
    }
    // If this publish fails, the relay publishes it (its outbox entry is armed).
    try {
      await withTimeout(
        broker.publish(requestTopicFor(deps.requestTopic, r.task.priority), requestOutgoing(r.task)),
        deps.publishTimeoutMs,
        () => new Error('no ack in time'),
      );
      await store.disarmOutbox(id, 0);
    } catch (err) {
      logger.warn('could not publish a rerun task; the relay will', { task_id: id, err: errorMessage(err) });
    }
    logger.info('task rerun', { task_id: id, reruns: r.task.reruns });
    return r.task;
  };

  app.post('/tasks/:id/retry', async (c) => {
    const p = await caller(c, 'tasks:write');
    const id = idParam(c, 'task');
    const task = await rerun(p.tenant, await ownTask(p, id));
    return c.json(toTaskView(task), 202);
  });

  app.get('/dead-letters', async (c) => {
    const p = await caller(c, 'tasks:read');
    const q = query(c, deadLettersQuery);
    const page = await store.deadLetters({
      tenant: p.tenant,
      limit: q.limit,
      ...(q.type ? { type: q.type } : {}),
      ...(q.code ? { code: q.code } : {}),
      ...(q.cursor !== undefined ? { after: decodeCursor(q.cursor) } : {}),
    });
    const body: DeadLetterListView = { dead_letters: page.tasks.map(toDeadLetterView), next_cursor: page.next ? encodeCursor(page.next) : null };
    return c.json(body);
  });

  app.post('/dead-letters/redrive', async (c) => {
    const p = await caller(c, 'tasks:write');
    const raw = await readJsonBody(c, deps.bodyLimit);
    const parsed = redriveBody.safeParse(raw);
    if (!parsed.success) throw validationError(parsed.error);
    const q = parsed.data;
    let ids: string[];
    if (q.task_ids) {
      ids = q.task_ids;
    } else {
      ids = [];
      let after: { createdAt: number; id: string } | undefined;
      while (ids.length < q.limit) {
        const page = await store.deadLetters({
          tenant: p.tenant,
          limit: Math.min(100, q.limit - ids.length),
          ...(q.type ? { type: q.type } : {}),
          ...(q.code ? { code: q.code } : {}),
          ...(after ? { after } : {}),
        });
        ids.push(...page.tasks.map((t) => t.id));
        if (!page.next) break;
        after = page.next;
      }
    }
    const redriven: string[] = [];
    for (const id of ids) {
      try {
        await rerun(p.tenant, await ownTask(p, id));
        redriven.push(id);
      } catch (err) {
        // A task given by id that is not a dead letter (any more) is skipped, not an error of the whole redrive.
        if (err instanceof NotFoundError || err instanceof ConflictError) continue;
        // Out of quota units: the rest stay dead letters, to redrive when the window resets (a 429 if none was).
        if (err instanceof TooManyRequestsError && redriven.length > 0) break;
        throw err;
      }
    }
    logger.info('dead letters redriven', { tenant: p.tenant, redriven: redriven.length, type: q.type, code: q.code });
    const body: RedriveView = { redriven: redriven.length, task_ids: redriven };
    return c.json(body);
  });
}
