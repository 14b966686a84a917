/**
 * Cron schedules over HTTP: POST /schedules, GET /schedules, GET /schedules/:id,
 * POST /schedules/:id/pause and /resume, DELETE /schedules/:id. A schedule belongs to the
 * tenant of the key that created it; another tenant's is a 404. The firing itself is the
 * Scheduler's (common/schedules/scheduler.ts), in every API and worker process.
 */
import { randomBytes } from 'node:crypto';
import type { Context, Hono } from 'hono';
import { z } from 'zod';
import { NotFoundError, ValidationError, errorMessage } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import type { TaskRegistry } from '../common/registry.ts';
import { canonicalTimeZone, cronOf, MAX_CRON_LENGTH, slotAfter, slotsFrom } from '../common/schedules/cron.ts';
import { CATCH_UP_POLICIES, isScheduleId, type ScheduleCursor, type ScheduleRecord, type ScheduleStore } from '../common/schedules/port.ts';
import { toScheduleView, type DeletedScheduleView, type ScheduleDetailView, type ScheduleListView } from '../common/schedules/views.ts';
import type { TaskStore } from '../common/store/port.ts';
import { PRIORITIES } from '../common/task.ts';
import { toTaskView } from '../common/views.ts';
import type { AppEnv, Principal } from './auth.ts';
import { validationError } from './errors.ts';
import { readJsonBody } from './request.ts';

type Env = AppEnv;

/** The routes of this module and the methods each takes, for the 405s. */
export const SCHEDULE_METHODS: readonly [string, string][] = [
  ['/schedules', 'GET, POST'],
  ['/schedules/:id', 'GET, DELETE'],
  ['/schedules/:id/pause', 'POST'],
  ['/schedules/:id/resume', 'POST'],
];

/** How many coming slots GET /schedules/:id shows. */
export const NEXT_RUNS = 5;

const label = (max: number) =>
  z
    .string({ error: 'must be a string' })
    .min(1, 'must not be empty')
    .max(max, `at most ${max} characters`)
    .regex(/^\P{Cc}*$/u, 'must not contain control characters');

/** POST /schedules. The cron expression, the time zone and the task's type and input are checked further by the route. */
export const scheduleBody = z.strictObject({
  name: label(200).optional().meta({ description: 'A label of your own.' }),
  cron: z
    .string({ error: 'must be a string' })
    .min(1, 'must not be empty')
    .max(MAX_CRON_LENGTH, `at most ${MAX_CRON_LENGTH} characters`)
    .meta({
      description:
        'A cron expression as croner reads it: 5 fields (`minute hour day-of-month month day-of-week`), 6 with a leading seconds field, 7 with a trailing year, or a nickname (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`). `L`, `W`, `#` and `+` (AND of day-of-month and day-of-week) are supported.',
      examples: ['0 9 * * 1-5', '*/15 * * * *', '@daily'],
    }),
  timezone: z
    .string({ error: 'must be a string' })
    .max(64)
    .default('UTC')
    .meta({ description: 'The IANA time zone the expression is read in (daylight saving time included).', examples: ['Europe/Berlin', 'America/New_York'] }),
  catch_up: z.enum(CATCH_UP_POLICIES).default('latest').meta({
    description:
      'Slots missed while no scheduler ran: `latest` fires the most recent one if it is younger than SCHEDULE_CATCH_UP_SECONDS; `none` skips them all; `all` fires each one younger than that, at most SCHEDULE_CATCH_UP_MAX.',
  }),
  paused: z.boolean({ error: 'must be a boolean' }).default(false).meta({ description: 'Create it paused (POST /schedules/{id}/resume starts it).' }),
  task: z
    .strictObject({
      type: z
        .string({ error: 'must be a string' })
        .regex(/^[a-z][a-z0-9_.-]{0,63}$/, 'must be a task type name')
        .meta({ examples: ['agent'] }),
      input: z.unknown().refine((v) => v !== undefined, 'is required'),
      user_id: label(256).optional(),
      priority: z.enum(PRIORITIES).default('normal'),
      max_attempts: z.number({ error: 'must be a whole number' }).int('must be a whole number').min(1).max(100).optional(),
    })
    .meta({ description: 'The task each firing submits, as the general form of POST /tasks; `input` is checked against the type’s schema.' }),
});

export const scheduleListQuery = z.object({
  limit: z.coerce.number({ error: 'must be a number' }).int().min(1).max(100).default(20),
  cursor: z.string().max(200).optional(),
});

function encodeCursor(c: ScheduleCursor): string {
  return Buffer.from(`${c.createdAt}.${c.id}`).toString('base64url');
}

function decodeCursor(s: string): ScheduleCursor {
  const [ms = '', id = ''] = Buffer.from(s, 'base64url').toString('utf8').split('.');
  if (!/^\d{1,15}$/.test(ms) || !isScheduleId(id))
    throw new ValidationError('cursor: not a cursor from this API', [{ path: 'cursor', message: 'invalid cursor' }]);
  return { createdAt: Number(ms), id };
}

const newScheduleId = (): string => `sch_${randomBytes(12).toString('hex')}`;

/** A croner message without its class prefix: `CronPattern: Invalid value for minute: 61` → `Invalid value for minute: 61`. */
const cronMessage = (err: unknown): string => errorMessage(err).replace(/^Cron\w*:\s*/, '');

export interface ScheduleRouteDeps {
  schedules: ScheduleStore;
  store: TaskStore;
  registry: TaskRegistry;
  logger: Logger;
  bodyLimit: number;
  caller: (c: Context<Env>, scope: 'tasks:read' | 'tasks:write') => Promise<Principal>;
  /** The clock (tests). Default Date.now. */
  now?: () => number;
}

export function mountSchedules(app: Hono<Env>, deps: ScheduleRouteDeps): void {
  const { schedules, store, registry, logger, caller } = deps;
  const now = deps.now ?? Date.now;

  const idParam = (c: Context<Env>): string => {
    const id = c.req.param('id') ?? '';
    if (!isScheduleId(id)) throw new ValidationError('id: must be a schedule id (sch_ and 24 hex digits)', [{ path: 'id', message: 'not a schedule id' }]);
    return id;
  };
  /** The schedule, if it exists and belongs to the caller's tenant: another tenant's is a 404 like a missing one. */
  const own = async (p: Principal, id: string): Promise<ScheduleRecord> => {
    const s = await schedules.get(id);
    if (!s || s.tenant !== p.tenant) throw new NotFoundError(`no schedule ${id}`);
    return s;
  };
  const detail = async (s: ScheduleRecord): Promise<ScheduleDetailView> => {
    let nextRuns: string[] = [];
    if (!s.paused && s.nextRunAt !== null) {
      try {
        nextRuns = slotsFrom(cronOf(s.cron, s.timezone), s.nextRunAt, NEXT_RUNS).map((t) => new Date(t).toISOString());
      } catch {
        // An expression that no longer parses has no next runs (the scheduler says why in last_error).
      }
    }
    const task = s.lastTaskId ? await store.get(s.lastTaskId) : null;
    return { ...toScheduleView(s), next_runs: nextRuns, last_task: task && task.tenant === s.tenant ? toTaskView(task) : null };
  };

  app.post('/schedules', async (c) => {
    const p = await caller(c, 'tasks:write');
    const raw = await readJsonBody(c, deps.bodyLimit);
    const parsed = scheduleBody.safeParse(raw);
    if (!parsed.success) throw validationError(parsed.error);
    const b = parsed.data;
    const timezone = canonicalTimeZone(b.timezone);
    if (!timezone) {
      throw new ValidationError(`timezone: unknown time zone ${JSON.stringify(b.timezone)}; use an IANA name such as Europe/Berlin or UTC`, [
        { path: 'timezone', message: 'unknown time zone' },
      ]);
    }
    let cron;
    try {
      cron = cronOf(b.cron, timezone);
    } catch (err) {
      throw new ValidationError(`cron: ${cronMessage(err)}`, [{ path: 'cron', message: cronMessage(err) }]);
    }
    const created = now();
    const nextRunAt = slotAfter(cron, created);
    if (nextRunAt === null) throw new ValidationError('cron: the expression never fires after now', [{ path: 'cron', message: 'never fires' }]);
    const type = registry.get(b.task.type);
    if (!type) {
      throw new ValidationError(`task.type: unknown task type ${JSON.stringify(b.task.type)}; known: ${registry.names().join(', ')}`, [
        { path: 'task.type', message: 'unknown task type' },
      ]);
    }
    const input = type.input.safeParse(b.task.input);
    if (!input.success) throw validationError(input.error, ['task', 'input']);
    const s: ScheduleRecord = {
      id: newScheduleId(),
      tenant: p.tenant,
      name: b.name ?? null,
      cron: b.cron,
      timezone,
      task: { type: b.task.type, input: input.data, userId: b.task.user_id ?? null, priority: b.task.priority, maxAttempts: b.task.max_attempts ?? null },
      catchUp: b.catch_up,
      paused: b.paused,
      createdAt: created,
      updatedAt: created,
      nextRunAt,
      lastFiredAt: null,
      lastTaskId: null,
      fired: 0,
      skipped: 0,
      lastError: null,
    };
    await schedules.create(s);
    logger.info('schedule created', { schedule_id: s.id, tenant: s.tenant, cron: s.cron, timezone, type: s.task.type, paused: s.paused });
    c.header('Location', new URL(`/schedules/${s.id}`, c.req.url).toString());
    return c.json(await detail(s), 201);
  });

  app.get('/schedules', async (c) => {
    const p = await caller(c, 'tasks:read');
    const q = scheduleListQuery.safeParse(c.req.query());
    if (!q.success) throw validationError(q.error);
    const after = q.data.cursor === undefined ? undefined : decodeCursor(q.data.cursor);
    const page = await schedules.list(p.tenant, q.data.limit, after);
    const body: ScheduleListView = { schedules: page.schedules.map(toScheduleView), next_cursor: page.next ? encodeCursor(page.next) : null };
    return c.json(body);
  });

  app.get('/schedules/:id', async (c) => {
    const p = await caller(c, 'tasks:read');
    return c.json(await detail(await own(p, idParam(c))));
  });

  app.post('/schedules/:id/pause', async (c) => {
    const p = await caller(c, 'tasks:write');
    const id = idParam(c);
    const s = await schedules.setPaused(id, p.tenant, true, null, now());
    if (!s) throw new NotFoundError(`no schedule ${id}`);
    logger.info('schedule paused', { schedule_id: id, tenant: p.tenant });
    return c.json(toScheduleView(s));
  });

  app.post('/schedules/:id/resume', async (c) => {
    const p = await caller(c, 'tasks:write');
    const id = idParam(c);
    const current = await own(p, id);
    // The slots of the paused time are not fired: it starts again at the first slot after now.
    let next: number | null = null;
    try {
      next = slotAfter(cronOf(current.cron, current.timezone), now());
    } catch {
      // An expression that no longer parses stays without a next run.
    }
    const s = await schedules.setPaused(id, p.tenant, false, next, now());
    if (!s) throw new NotFoundError(`no schedule ${id}`);
    logger.info('schedule resumed', { schedule_id: id, tenant: p.tenant, next_run_at: s.nextRunAt });
    return c.json(toScheduleView(s));
  });

  app.delete('/schedules/:id', async (c) => {
    const p = await caller(c, 'tasks:write');
    const id = idParam(c);
    if (!(await schedules.delete(id, p.tenant))) throw new NotFoundError(`no schedule ${id}`);
    logger.info('schedule deleted', { schedule_id: id, tenant: p.tenant });
    const body: DeletedScheduleView = { schedule_id: id, deleted: true };
    return c.json(body);
  });
}
