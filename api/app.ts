/**
 * The HTTP API, built from its dependencies; it never listens (run-api.ts does), so tests
 * call `app.request()` directly.
 */
import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { streamSSE } from 'hono/streaming';
import type { z } from 'zod';
import type { Broker } from '../common/broker/port.ts';
import {
  NotFoundError,
  PayloadTooLargeError,
  TaskFinishedError,
  UnsupportedMediaTypeError,
  ValidationError,
  errorMessage,
  withTimeout,
} from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { publishResult } from '../common/results.ts';
import type { TaskRegistry } from '../common/registry.ts';
import type { TaskStore } from '../common/store/port.ts';
import { isEventId, isTaskId, toEventView, toTaskView, type Priority, type TaskRecord } from '../common/task.ts';
import { renderError, validationError } from './errors.ts';
import { decodeCursor, encodeCursor, generalBody, getQuery, listQuery, postQuery, seedBody } from './schemas.ts';
import { submitTask } from './submit.ts';
import { followEvents, pause, waitForEnd } from './watch.ts';

export interface AppDeps {
  store: TaskStore;
  broker: Broker;
  registry: TaskRegistry;
  logger: Logger;
  /** Aborted when the process stops: event streams and waits end so the server can close. */
  shutdownSignal?: AbortSignal;
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
  };
}

const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;

/** Parses query parameters with a schema; a mismatch is a 400 naming the parameter. */
function query<T>(c: Context, schema: z.ZodType<T>): T {
  const parsed = schema.safeParse(c.req.query());
  if (!parsed.success) throw validationError(parsed.error);
  return parsed.data;
}

function taskIdParam(c: Context): string {
  const id = c.req.param('id') ?? '';
  if (!isTaskId(id)) throw new ValidationError('id: must be a task id (a UUID)', [{ path: 'id', message: 'must be a UUID' }]);
  return id;
}

export function createApp(deps: AppDeps): Hono {
  const { store, broker, registry, logger, options } = deps;
  const maxWait = options.maxWaitSeconds ?? 60;
  const pollMs = options.recheckMs ?? 30_000;
  const keepAliveMs = options.keepAliveMs ?? 15_000;
  const app = new Hono();
  /** The request's signal, joined with the process's shutdown. */
  const until = (c: Context): AbortSignal => (deps.shutdownSignal ? AbortSignal.any([c.req.raw.signal, deps.shutdownSignal]) : c.req.raw.signal);

  /** A view of the task with its history when asked. */
  const view = async (task: TaskRecord, history: boolean) => {
    if (!history) return toTaskView(task);
    const events = await store.events(task.id, null, 10_000);
    return { ...toTaskView(task), history: events.map(toEventView) };
  };

  app.onError((err, c) => renderError(c, err, logger));
  app.notFound((c) => renderError(c, new NotFoundError(`no route for ${c.req.method} ${c.req.path}`), logger));

  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', async (c) => {
    const checks = await Promise.allSettled([store.ping(), broker.ping()]);
    const [redis, mq] = checks.map((r) => (r.status === 'fulfilled' ? 'ok' : errorMessage(r.reason)));
    const ready = checks.every((r) => r.status === 'fulfilled');
    if (!ready) c.header('Retry-After', '5');
    return c.json({ status: ready ? 'ready' : 'unavailable', store: redis, broker: mq }, ready ? 200 : 503);
  });

  app.post(
    '/tasks',
    bodyLimit({
      maxSize: options.bodyLimit,
      onError: (c) => renderError(c, new PayloadTooLargeError(options.bodyLimit), logger),
    }),
    async (c) => {
      const contentType = c.req.header('content-type');
      if (!contentType || !JSON_TYPE.test(contentType)) throw new UnsupportedMediaTypeError(contentType);
      const idempotencyKey = c.req.header('idempotency-key');
      if (idempotencyKey !== undefined && !/^[\x21-\x7e]{1,255}$/.test(idempotencyKey)) {
        throw new ValidationError('Idempotency-Key: 1 to 255 visible ASCII characters', [{ path: 'Idempotency-Key', message: 'invalid header' }]);
      }
      const { wait } = query(c, postQuery(maxWait));
      const body = await readJson(c);
      const { asyncMode, ...req } = toSubmitRequest(body, registry, options.maxAttempts);
      // Seed 000's async_mode=false, or ?wait=N: answer with the result if it comes in time.
      const waitSeconds = wait ?? (asyncMode === false ? maxWait : 0);
      const submitted = await submitTask(
        {
          store,
          broker,
          logger,
          requestTopic: options.requestTopic,
          publishTimeoutMs: options.requestTimeoutMs,
          relayAfterMs: options.relayAfterMs,
          idempotencyTtlSeconds: options.idempotencyTtlSeconds ?? 86_400,
        },
        req,
        idempotencyKey,
      );
      if (submitted.replayed) {
        // The same request again: the task it created, as it is now.
        const existing = await store.get(submitted.taskId);
        const statusUrl = new URL(`/tasks/${submitted.taskId}`, c.req.url).toString();
        c.header('Location', statusUrl);
        c.header('Idempotent-Replayed', 'true');
        return c.json(
          {
            task_id: submitted.taskId,
            status: existing?.status ?? 'queued',
            type: req.type,
            status_url: statusUrl,
            created_at: existing ? new Date(existing.createdAt).toISOString() : null,
          },
          202,
        );
      }
      const { task } = submitted;
      const statusUrl = new URL(`/tasks/${task.id}`, c.req.url).toString();
      logger.info('task accepted', { task_id: task.id, type: task.type, user_id: task.userId, priority: task.priority });
      c.header('Location', statusUrl);
      if (waitSeconds > 0) {
        const finished = await waitForEnd(store, task.id, waitSeconds * 1000, { pollMs, signal: until(c) });
        if (finished && (finished.status === 'done' || finished.status === 'failed' || finished.status === 'cancelled'))
          return c.json(toTaskView(finished), 200);
      }
      return c.json({ task_id: task.id, status: 'queued', type: task.type, status_url: statusUrl, created_at: new Date(task.createdAt).toISOString() }, 202);
    },
  );

  app.get('/tasks', async (c) => {
    const q = query(c, listQuery);
    const after = q.cursor === undefined ? undefined : decodeCursor(q.cursor);
    const page = await store.list({
      limit: q.limit,
      ...(q.status ? { status: q.status } : {}),
      ...(q.user_id !== undefined ? { userId: q.user_id } : {}),
      ...(q.type ? { type: q.type } : {}),
      ...(after ? { after } : {}),
    });
    return c.json({ tasks: page.tasks.map(toTaskView), next_cursor: page.next ? encodeCursor(page.next) : null });
  });

  app.get('/tasks/:id', async (c) => {
    const id = taskIdParam(c);
    const q = query(c, getQuery(maxWait));
    let task = await store.get(id);
    if (!task) throw new NotFoundError(`no task ${id}`, id);
    if (q.wait !== undefined && q.wait > 0) task = (await waitForEnd(store, id, q.wait * 1000, { pollMs, signal: until(c) })) ?? task;
    return c.json(await view(task, q.history));
  });

  app.get('/tasks/:id/events', async (c) => {
    const id = taskIdParam(c);
    const resume = c.req.header('last-event-id') ?? c.req.query('last_event_id');
    if (resume !== undefined && !isEventId(resume)) {
      throw new ValidationError('Last-Event-ID: must be an event id from this stream', [{ path: 'Last-Event-ID', message: 'not an event id' }]);
    }
    if (!(await store.get(id))) throw new NotFoundError(`no task ${id}`, id);
    c.header('X-Accel-Buffering', 'no');
    return streamSSE(c, async (stream) => {
      const ac = new AbortController();
      stream.onAbort(() => ac.abort());
      const stop = until(c);
      if (stop.aborted) ac.abort();
      else stop.addEventListener('abort', () => ac.abort(), { once: true });
      // Comments keep proxies and load balancers from closing a quiet stream.
      const keepAlive = (async () => {
        while (!ac.signal.aborted) {
          await pause(keepAliveMs, ac.signal);
          if (!ac.signal.aborted) await stream.write(': keep-alive\n\n').catch(() => ac.abort());
        }
      })();
      try {
        for await (const e of followEvents(store, id, resume ?? null, { pollMs, signal: ac.signal })) {
          const v = toEventView(e);
          await stream.writeSSE({ id: v.id, event: v.event, data: JSON.stringify(v.data) });
        }
      } catch (err) {
        // Redis went away: end the stream; the client reconnects with Last-Event-ID.
        logger.warn('event stream ended early', { task_id: id, err: errorMessage(err) });
        await stream.write(`: ${errorMessage(err).replace(/[\r\n]+/g, ' ')}; reconnect with Last-Event-ID\n\n`).catch(() => undefined);
      } finally {
        ac.abort();
        await keepAlive;
      }
    });
  });

  app.delete('/tasks/:id', async (c) => {
    const id = taskIdParam(c);
    const reason = c.req.query('reason')?.slice(0, 500) ?? null;
    const r = await store.cancel(id, reason);
    if (r.outcome === 'missing') throw new NotFoundError(`no task ${id}`, id);
    if (r.outcome === 'terminal') throw new TaskFinishedError(id, r.task.status);
    logger.info('task cancelled', { task_id: id, was: r.was });
    // A queued task has no worker to publish its end; a running one's worker does it.
    if (r.was === 'queued' && options.resultTopic) {
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

  const notAllowed = (allow: string) => (c: Context) => {
    c.header('Allow', allow);
    return c.json({ error: { code: 'method_not_allowed', message: `${c.req.method} is not allowed here; use ${allow}` } }, 405);
  };
  app.all('/tasks', notAllowed('GET, POST'));
  app.all('/tasks/:id', notAllowed('GET, DELETE'));
  app.all('/tasks/:id/events', notAllowed('GET'));

  return app;
}

async function readJson(c: Context): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === '') throw new ValidationError('body: must be a JSON object', [{ path: '', message: 'body is empty' }]);
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    // RangeError for absurd nesting, SyntaxError otherwise: both are the client's fault.
    throw new ValidationError(`body: not valid JSON (${errorMessage(err).slice(0, 200)})`, [{ path: '', message: 'not valid JSON' }]);
  }
}

/** Accepts the seed's `{user_id, content}` and the general `{type, input, user_id?, priority?}`. */
function toSubmitRequest(body: unknown, registry: TaskRegistry, defaultMaxAttempts: number) {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ValidationError('body: must be a JSON object', [{ path: '', message: 'must be a JSON object' }]);
  }
  const general = 'type' in body || 'input' in body;
  let typeName: string;
  let rawInput: unknown;
  let userId: string | null;
  let priority: Priority = 'normal';
  let asyncMode: boolean | undefined;
  if (general) {
    const parsed = generalBody.safeParse(body);
    if (!parsed.success) throw validationError(parsed.error);
    ({ type: typeName, input: rawInput, priority, async_mode: asyncMode } = parsed.data);
    userId = parsed.data.user_id ?? null;
  } else {
    const parsed = seedBody.safeParse(body);
    if (!parsed.success) throw validationError(parsed.error);
    typeName = 'agent';
    rawInput = { content: parsed.data.content };
    userId = parsed.data.user_id;
    asyncMode = parsed.data.async_mode;
    priority = parsed.data.priority;
  }
  const type = registry.get(typeName);
  if (!type) {
    throw new ValidationError(`type: unknown task type ${JSON.stringify(typeName)}; known: ${registry.names().join(', ')}`, [
      { path: 'type', message: 'unknown task type' },
    ]);
  }
  const input = type.input.safeParse(rawInput);
  // Seed-form fields sit at the top level, so their paths drop the `input.` prefix.
  if (!input.success) throw validationError(input.error, general ? ['input'] : []);
  return { type: typeName, input: input.data, userId, priority, maxAttempts: type.maxAttempts ?? defaultMaxAttempts, asyncMode };
}
