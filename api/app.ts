/**
 * The HTTP API, built from its dependencies; it never listens (run-api.ts does), so tests
 * call `app.request()` directly.
 */
import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import type { Broker } from '../common/broker/port.ts';
import { NotFoundError, PayloadTooLargeError, UnsupportedMediaTypeError, ValidationError, errorMessage } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import type { TaskRegistry } from '../common/registry.ts';
import type { TaskStore } from '../common/store/port.ts';
import { isTaskId, toTaskView, type Priority } from '../common/task.ts';
import { renderError, validationError } from './errors.ts';
import { generalBody, seedBody } from './schemas.ts';
import { submitTask } from './submit.ts';

export interface AppDeps {
  store: TaskStore;
  broker: Broker;
  registry: TaskRegistry;
  logger: Logger;
  options: {
    requestTopic: string;
    bodyLimit: number;
    requestTimeoutMs: number;
    relayAfterMs: number;
    /** Attempts for types that don't set their own. */
    maxAttempts: number;
    /** How long an Idempotency-Key names its task. Default 86400. */
    idempotencyTtlSeconds?: number;
  };
}

const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;

export function createApp(deps: AppDeps): Hono {
  const { store, broker, registry, logger, options } = deps;
  const app = new Hono();

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
      const body = await readJson(c);
      const req = toSubmitRequest(body, registry, options.maxAttempts);
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
      logger.info('task accepted', { task_id: task.id, type: task.type, user_id: task.userId });
      c.header('Location', statusUrl);
      return c.json(
        { task_id: task.id, status: 'queued', type: task.type, status_url: statusUrl, created_at: new Date(task.createdAt).toISOString() },
        202,
      );
    },
  );

  app.get('/tasks/:id', async (c) => {
    const id = c.req.param('id');
    if (!isTaskId(id)) throw new ValidationError('id: must be a task id (a UUID)', [{ path: 'id', message: 'must be a UUID' }]);
    const task = await store.get(id);
    if (!task) throw new NotFoundError(`no task ${id}`, id);
    return c.json(toTaskView(task));
  });

  const notAllowed = (allow: string) => (c: Context) => {
    c.header('Allow', allow);
    return c.json({ error: { code: 'method_not_allowed', message: `${c.req.method} is not allowed here; use ${allow}` } }, 405);
  };
  app.all('/tasks', notAllowed('POST'));
  app.all('/tasks/:id', notAllowed('GET'));

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
  if (general) {
    const parsed = generalBody.safeParse(body);
    if (!parsed.success) throw validationError(parsed.error);
    ({ type: typeName, input: rawInput, priority } = parsed.data);
    userId = parsed.data.user_id ?? null;
  } else {
    const parsed = seedBody.safeParse(body);
    if (!parsed.success) throw validationError(parsed.error);
    typeName = 'agent';
    rawInput = { content: parsed.data.content };
    userId = parsed.data.user_id;
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
  return { type: typeName, input: input.data, userId, priority, maxAttempts: type.maxAttempts ?? defaultMaxAttempts };
}
