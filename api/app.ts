/**
 * The HTTP API, built from its dependencies; it never listens (run-api.ts does), so tests
 * call `app.request()` directly.
 */
import { Hono, type Context } from 'hono';
import type { z } from 'zod';
import type { Broker } from '../common/broker/port.ts';
import { MethodNotAllowedError, NotFoundError, TaskFinishedError, ValidationError, errorMessage, withTimeout } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { publishResult } from '../common/results.ts';
import type { TaskRegistry } from '../common/registry.ts';
import type { TaskStore } from '../common/store/port.ts';
import { isTaskId, isTerminal, type TaskRecord } from '../common/task.ts';
import { toAcceptedView, toEventView, toQuotaView, toTaskView, type AcceptedView, type TaskListView, type TaskView } from '../common/views.ts';
import { accessLog } from './access-log.ts';
import { ADMIN_METHODS, mountAdmin } from './admin.ts';
import { SCHEDULE_METHODS, mountSchedules } from './schedules.ts';
import { MemoryScheduleStore } from '../common/schedules/memory.ts';
import type { ScheduleStore } from '../common/schedules/port.ts';
import { OBSERVABILITY_METHODS, httpMetrics, mountObservability, noteSubmitting } from './observability.ts';
import type { Metrics } from '../common/metrics.ts';
import type { Backlog } from '../common/backlog.ts';
import { Authenticator, requireScope, type AppEnv, type AuthOptions, type DefaultLimits, type Principal } from './auth.ts';
import { renderError, validationError } from './errors.ts';
import { rateLimitHeaders, rateLimitedError } from '../common/limits.ts';
import { readSubmission } from './request.ts';
import { buildOpenApiDocument, isPublicDocsPath, mountDocs } from './openapi.ts';
import { mountMcp } from './mcp.ts';
import { isUiPath, mountUi } from './ui.ts';
import { decodeCursor, encodeCursor, getQuery, listQuery, postQuery } from './schemas.ts';
import { submitTask } from './submit.ts';
import { traceRequests } from './tracing.ts';
import { followEvents, mapEvents, waitForEnd } from './watch.ts';
import { resumeFrom, serveEvents } from './sse.ts';
import { WORKFLOW_METHODS, mountWorkflows } from './workflows.ts';
import { endCancelledSteps, workflowSteps } from '../common/workflows.ts';

export interface AppDeps {
  store: TaskStore;
  broker: Broker;
  registry: TaskRegistry;
  logger: Logger;
  /** Aborted when the process stops: event streams and waits end so the server can close. */
  shutdownSignal?: AbortSignal;
  /** Prometheus metrics of the process: GET /metrics serves them (none without). */
  metrics?: Metrics;
  /** The request backlog per priority (common/backlog.ts), for GET /stats. */
  backlog?: () => Promise<Backlog>;
  /** Cron schedules (the process's Scheduler fires them). Default: an in-process store of the app's own. */
  schedules?: ScheduleStore;
  options: {
    requestTopic: string;
    bodyLimit: number;
    requestTimeoutMs: number;
    relayAfterMs: number;
    /** Attempts for types that don't set their own. */
    maxAttempts: number;
    /** How long an Idempotency-Key names its task. Default 86400. */
    idempotencyTtlSeconds?: number;
    /** Where the result of a task cancelled while queued is published (a running one's worker publishes it). */
    resultTopic?: string;
    /** Longest ?wait= accepted, in seconds. Default 60. */
    maxWaitSeconds?: number;
    /**
     * Waits and event streams hear news through the store's shared subscription; a quiet one
     * reads the store anyway after this long (news lost in a reconnect). Default 30 000 ms.
     */
    recheckMs?: number;
    /** Keep-alive comment interval of event streams. Default 15 000 ms. */
    keepAliveMs?: number;
    /** API keys (`keys`) or none (`off`, every caller is the default tenant). Default off. */
    auth?: AuthOptions;
    /** The deployment's default limits per tenant (a tenant's own win); 0 = none. Default all 0. */
    limits?: Partial<DefaultLimits>;
  };
}

export type { DefaultLimits } from './auth.ts';

type Env = AppEnv;

/** Parses query parameters with a schema; a mismatch is a 400 naming the parameter. */
function query<T>(c: Context<Env>, schema: z.ZodType<T>): T {
  const parsed = schema.safeParse(c.req.query());
  if (!parsed.success) throw validationError(parsed.error);
  return parsed.data;
}

function taskIdParam(c: Context<Env>): string {
  const id = c.req.param('id') ?? '';
  if (!isTaskId(id)) throw new ValidationError('id: must be a task id (a UUID)', [{ path: 'id', message: 'must be a UUID' }]);
  return id;
}

export function createApp(deps: AppDeps): Hono<AppEnv> {
  const { store, broker, registry, logger, options } = deps;
  const maxWait = options.maxWaitSeconds ?? 60;
  const pollMs = options.recheckMs ?? 30_000;
  const keepAliveMs = options.keepAliveMs ?? 15_000;
  // Built once: zod compiles a schema on its first use, which costs far more than a parse.
  const postQuerySchema = postQuery(maxWait);
  const getQuerySchema = getQuery(maxWait);
  const app = new Hono<Env>();
  const limits: DefaultLimits = { submitsPerSecond: 0, readsPerSecond: 0, quotaUnits: 0, quotaWindowSeconds: 86_400, ...options.limits };
  const auth = new Authenticator(store, options.auth ?? { mode: 'off' });
  /** The request's signal, joined with the process's shutdown. */
  const until = (c: Context<Env>): AbortSignal => (deps.shutdownSignal ? AbortSignal.any([c.req.raw.signal, deps.shutdownSignal]) : c.req.raw.signal);

  /** A view of the task with its history when asked. */
  const view = async (task: TaskRecord, history: boolean): Promise<TaskView> => {
    if (!history) return toTaskView(task);
    const events = await store.events(task.id, null, 10_000);
    return { ...toTaskView(task), history: events.map(toEventView) };
  };

  app.onError((err, c) => renderError(c, err, logger));
  app.notFound((c) => renderError(c, new NotFoundError(`no route for ${c.req.method} ${c.req.path}`), logger));

  app.use('*', traceRequests); // the server span first: the access line inside it carries its trace id
  app.use('*', accessLog(logger)); // before auth, so 401s are logged too
  if (deps.metrics) app.use('*', httpMetrics(deps.metrics));
  // Every route but the probes, the docs and the dashboard's files needs a key (with AUTH=keys).
  app.use('*', async (c, next) => {
    if (c.req.path === '/healthz' || c.req.path === '/readyz' || c.req.path === '/metrics' || isPublicDocsPath(c.req.path) || isUiPath(c.req.path))
      return next();
    c.set('principal', await auth.authenticate(c.req.header('authorization')));
    return next();
  });

  /** The caller, after checking it has `scope`; a read also counts against the tenant's read rate. */
  const caller = async (c: Context<Env>, scope: 'tasks:read' | 'tasks:write' | 'admin'): Promise<Principal> => {
    const p = c.get('principal');
    requireScope(p, scope);
    if (scope === 'tasks:read') {
      const perSecond = p.limits.readsPerSecond ?? limits.readsPerSecond;
      const r = perSecond > 0 ? await store.hit(p.tenant, 'reads', perSecond) : null;
      if (r) {
        if (!r.allowed) throw rateLimitedError(p.tenant, 'reads', r);
        for (const [k, v] of Object.entries(rateLimitHeaders('reads', r))) c.header(k, v);
      }
    }
    return p;
  };
  /** The task, if it exists and belongs to the caller's tenant: another tenant's is a 404 like a missing one. */
  const ownTask = async (p: Principal, id: string): Promise<TaskRecord> => {
    const task = await store.get(id);
    if (!task || task.tenant !== p.tenant) throw new NotFoundError(`no task ${id}`, id);
    return task;
  };

  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', async (c) => {
    const checks = await Promise.allSettled([store.ping(), broker.ping()]);
    const [redis, mq] = checks.map((r) => (r.status === 'fulfilled' ? 'ok' : errorMessage(r.reason)));
    const ready = checks.every((r) => r.status === 'fulfilled');
    if (!ready) c.header('Retry-After', '5');
    return c.json({ status: ready ? 'ready' : 'unavailable', store: redis, broker: mq }, ready ? 200 : 503);
  });

  const submitDeps = {
    store,
    broker,
    logger,
    requestTopic: options.requestTopic,
    publishTimeoutMs: options.requestTimeoutMs,
    relayAfterMs: options.relayAfterMs,
    idempotencyTtlSeconds: options.idempotencyTtlSeconds ?? 86_400,
    registry,
    limits,
    metrics: deps.metrics,
  };
  const statusUrlOf = (c: Context<Env>, id: string) => new URL(`/tasks/${id}`, c.req.url).toString();

  app.post('/tasks', async (c) => {
    const p = await caller(c, 'tasks:write');
    const { wait } = query(c, postQuerySchema);
    const { request, idempotencyKey, asyncMode } = await readSubmission(c, registry, options);
    noteSubmitting(c); // submitTask counts it from here on
    // Seed 000's async_mode=false, or ?wait=N: answer with the result if it comes in time.
    const waitSeconds = wait ?? (asyncMode === false ? maxWait : 0);
    const submitted = await submitTask(submitDeps, p.tenant, request, idempotencyKey);
    if (submitted.rate) for (const [k, v] of Object.entries(rateLimitHeaders('submits', submitted.rate))) c.header(k, v);
    const id = submitted.replayed ? submitted.taskId : submitted.task.id;
    const statusUrl = statusUrlOf(c, id);
    c.header('Location', statusUrl);
    if (submitted.replayed) {
      // The same request again: the task it created, as it is now.
      c.header('Idempotent-Replayed', 'true');
      const existing = submitted.task;
      const body: AcceptedView = existing
        ? toAcceptedView(existing, statusUrl)
        : { task_id: id, status: 'queued', type: request.type, status_url: statusUrl, downgraded: false, created_at: null };
      return c.json(body, 202);
    }
    const { task, downgraded } = submitted;
    logger.info('task accepted', {
      request_id: c.get('requestId'),
      task_id: task.id,
      tenant: p.tenant,
      type: task.type,
      user_id: task.userId,
      priority: task.priority,
      downgraded,
    });
    if (waitSeconds > 0) {
      const finished = await waitForEnd(store, task.id, waitSeconds * 1000, { pollMs, signal: until(c) });
      if (finished && isTerminal(finished.status)) return c.json(toTaskView(finished), 200);
    }
    return c.json(toAcceptedView({ ...task, status: task.runAt === undefined ? 'queued' : 'scheduled', downgraded }, statusUrl), 202);
  });

  app.get('/tasks', async (c) => {
    const p = await caller(c, 'tasks:read');
    const q = query(c, listQuery);
    const after = q.cursor === undefined ? undefined : decodeCursor(q.cursor);
    const page = await store.list({
      tenant: p.tenant,
      limit: q.limit,
      ...(q.status ? { status: q.status } : {}),
      ...(q.user_id !== undefined ? { userId: q.user_id } : {}),
      ...(q.type ? { type: q.type } : {}),
      ...(after ? { after } : {}),
    });
    const body: TaskListView = { tasks: page.tasks.map(toTaskView), next_cursor: page.next ? encodeCursor(page.next) : null };
    return c.json(body);
  });

  app.get('/tasks/:id', async (c) => {
    const p = await caller(c, 'tasks:read');
    const id = taskIdParam(c);
    const q = query(c, getQuerySchema);
    let task = await ownTask(p, id);
    if (q.wait !== undefined && q.wait > 0) task = (await waitForEnd(store, id, q.wait * 1000, { pollMs, signal: until(c) })) ?? task;
    return c.json(await view(task, q.history));
  });

  app.get('/tasks/:id/events', async (c) => {
    const p = await caller(c, 'tasks:read');
    const id = taskIdParam(c);
    const resume = resumeFrom(c);
    await ownTask(p, id);
    return serveEvents(c, { keepAliveMs, stop: until(c), logger, what: { task_id: id } }, (signal) =>
      mapEvents(followEvents(store, id, resume, { pollMs, signal }), toEventView),
    );
  });

  app.delete('/tasks/:id', async (c) => {
    const p = await caller(c, 'tasks:write');
    const id = taskIdParam(c);
    const reason = c.req.query('reason')?.slice(0, 500) ?? null;
    const r = await store.cancel(id, reason, p.tenant);
    if (r.outcome === 'missing') throw new NotFoundError(`no task ${id}`, id);
    if (r.outcome === 'terminal') throw new TaskFinishedError(id, r.task.status);
    logger.info('task cancelled', { request_id: c.get('requestId'), task_id: id, was: r.was });
    // A running task's worker counts its end.
    if (r.was !== 'running') deps.metrics?.finished.inc({ type: deps.metrics.type(r.task.type), outcome: 'cancelled' });
    // A step's cancel cancels its workflow's other steps: those not running are counted and their results published here too.
    if (r.task.workflowId) {
      const stepDeps = { store, broker, logger, metrics: deps.metrics, resultTopic: options.resultTopic, publishTimeoutMs: options.requestTimeoutMs };
      await workflowSteps(store, r.task.workflowId)
        .then((steps) => endCancelledSteps(stepDeps, steps, id))
        .catch((err: unknown) => logger.warn('could not end the cancelled steps', { task_id: id, err: errorMessage(err) }));
    }
    // A task not started has no worker to publish its end; a running one's worker does it.
    if (r.was !== 'running' && options.resultTopic) {
      try {
        const resultTopic = options.resultTopic;
        await withTimeout(
          publishResult(broker, store, resultTopic, r.task),
          options.requestTimeoutMs,
          () => new Error(`no ack within ${options.requestTimeoutMs} ms`),
        );
      } catch (err) {
        // If its request message is still on its way, the worker that gets it publishes the
        // result (claim finds the task ended, result not published); otherwise it is not sent.
        logger.warn('could not publish the result of a cancelled task', { task_id: id, err: errorMessage(err) });
      }
    }
    return c.json(toTaskView(r.task));
  });

  app.get('/quota', async (c) => {
    const p = await caller(c, 'tasks:read');
    return c.json(toQuotaView(await store.quotaUsage(p.tenant, limits)));
  });

  mountAdmin(app, { store, logger, limits, caller, bodyLimit: options.bodyLimit });
  mountWorkflows(app, {
    ...submitDeps,
    resultTopic: options.resultTopic,
    maxAttempts: options.maxAttempts,
    bodyLimit: options.bodyLimit,
    caller,
    ownTask,
    pollMs,
    keepAliveMs,
    until,
  });
  mountObservability(app, { store, metrics: deps.metrics, backlog: deps.backlog, caller });
  mountSchedules(app, { schedules: deps.schedules ?? new MemoryScheduleStore(), store, registry, logger, bodyLimit: options.bodyLimit, caller });
  mountMcp(app, { logger, bodyLimit: options.bodyLimit, shutdownSignal: deps.shutdownSignal }); // POST /mcp: the agent tools, as the caller
  mountDocs(app, () => buildOpenApiDocument(registry, { maxWaitSeconds: maxWait, bodyLimit: options.bodyLimit, metrics: deps.metrics !== undefined }));
  mountUi(app); // the dashboard's files, no key: its data calls go to the routes above with one

  const notAllowed = (allow: string) => (c: Context<Env>) => {
    throw new MethodNotAllowedError(c.req.method, allow);
  };
  app.all('/tasks', notAllowed('GET, POST'));
  app.all('/tasks/:id', notAllowed('GET, DELETE'));
  app.all('/tasks/:id/events', notAllowed('GET'));
  app.all('/quota', notAllowed('GET'));
  // /metrics exists only when the app has metrics: without them it is a 404, not a 405.
  const observed = OBSERVABILITY_METHODS.filter(([path]) => path !== '/metrics' || deps.metrics !== undefined);
  for (const [path, allow] of [...ADMIN_METHODS, ...SCHEDULE_METHODS, ...WORKFLOW_METHODS, ...observed]) app.all(path, notAllowed(allow));

  return app;
}
