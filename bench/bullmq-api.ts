/**
 * The BullMQ side of `npm run bench -- compare`: a Hono front like the product's, with the
 * same zod schemas (the general body form and the `agent` input), in front of a BullMQ queue.
 *
 *   POST /tasks      → queue.add('agent', input), 202 {task_id, status, type, status_url, created_at}
 *   GET  /tasks/:id  → one HGETALL (queue.getJob): status, progress, started_at, finished_at, ...
 *
 * Settings come from the environment (bench/bullmq-shared.ts); the benchmark starts it.
 */
import { serve } from '@hono/node-server';
import { Queue, type Job } from 'bullmq';
import { Hono, type Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { z } from 'zod';
import { generalBody } from '../api/schemas.ts';
import { agentInput } from '../worker/agent-logic.ts';
import { connection, installStatsSignal, onStop, settings } from './bullmq-shared.ts';

installStatsSignal();
const queue = new Queue(settings.queue, { connection: connection(), prefix: settings.prefix });
queue.on('error', (err) => process.stderr.write(`queue error: ${err.message}\n`));
await queue.waitUntilReady();

const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;

const fail = (c: Context, status: ContentfulStatusCode, code: string, message: string, issues?: { path: string; message: string }[]) =>
  c.json({ error: { code, message, ...(issues ? { issues } : {}) } }, status);

const issuesOf = (err: z.ZodError, prefix = '') =>
  err.issues.map((i) => ({ path: [prefix, ...i.path.map(String)].filter(Boolean).join('.'), message: i.message }));

const iso = (ms: number | undefined) => (ms === undefined || ms === null ? null : new Date(ms).toISOString());

function statusOf(job: Job): 'queued' | 'running' | 'done' | 'failed' {
  if (job.finishedOn) return job.failedReason && job.returnvalue == null ? 'failed' : 'done';
  return job.processedOn ? 'running' : 'queued';
}

const app = new Hono();

app.post('/tasks', async (c) => {
  const contentType = c.req.header('content-type');
  if (!contentType || !JSON_TYPE.test(contentType)) return fail(c, 415, 'unsupported_media_type', 'the body must be application/json');
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    return fail(c, 400, 'validation_failed', 'body: not valid JSON', [{ path: '', message: 'not valid JSON' }]);
  }
  const parsed = generalBody.safeParse(body);
  if (!parsed.success) return fail(c, 400, 'validation_failed', 'the body does not match the schema', issuesOf(parsed.error));
  if (parsed.data.type !== 'agent')
    return fail(c, 400, 'validation_failed', `type: unknown task type ${parsed.data.type}`, [{ path: 'type', message: 'unknown task type' }]);
  const input = agentInput.safeParse(parsed.data.input);
  if (!input.success) return fail(c, 400, 'validation_failed', 'input does not match the schema of agent', issuesOf(input.error, 'input'));
  const job = await queue.add('agent', input.data, { attempts: settings.maxAttempts });
  const id = job.id ?? '';
  const statusUrl = new URL(`/tasks/${id}`, c.req.url).toString();
  c.header('Location', statusUrl);
  return c.json({ task_id: id, status: 'queued', type: 'agent', status_url: statusUrl, created_at: iso(job.timestamp) }, 202);
});

app.get('/tasks/:id', async (c) => {
  const id = c.req.param('id');
  if (!/^\d{1,20}$/.test(id)) return fail(c, 400, 'validation_failed', 'id: must be a job id', [{ path: 'id', message: 'must be a job id' }]);
  const job = (await queue.getJob(id)) as Job | undefined;
  if (!job) return fail(c, 404, 'not_found', `no task ${id}`);
  const progress = job.progress as number | { percent?: number; message?: string } | undefined;
  return c.json({
    task_id: id,
    status: statusOf(job),
    type: job.name,
    progress: typeof progress === 'number' ? progress : (progress?.percent ?? 0),
    message: typeof progress === 'object' ? (progress.message ?? null) : null,
    result: (job.returnvalue as unknown) ?? null,
    error: job.failedReason ?? null,
    attempts: job.attemptsMade,
    max_attempts: job.opts.attempts ?? 1,
    created_at: iso(job.timestamp),
    started_at: iso(job.processedOn),
    finished_at: iso(job.finishedOn),
  });
});

app.notFound((c) => fail(c, 404, 'not_found', `no route for ${c.req.method} ${c.req.path}`));
app.onError((err, c) => {
  process.stderr.write(`request failed: ${err.message}\n`);
  return fail(c, 503, 'redis_unavailable', err.message);
});

const server = serve({ fetch: app.fetch, hostname: settings.apiHost, port: settings.apiPort }, (info) => {
  process.stdout.write(`BullMQ front is up at http://${settings.apiHost}:${info.port} (queue ${settings.queue})\n`);
});

onStop(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await queue.close();
});
