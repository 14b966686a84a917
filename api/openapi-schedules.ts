/**
 * The schedule routes in the OpenAPI document (api/openapi.ts merges these): the zod schemas
 * of their answers, checked at compile time against common/schedules/views.ts, and the path items.
 */
import { z } from 'zod';
import { CATCH_UP_POLICIES } from '../common/schedules/port.ts';
import type { DeletedScheduleView, ScheduleDetailView, ScheduleListView, ScheduleView } from '../common/schedules/views.ts';
import { PRIORITIES } from '../common/task.ts';
import { TENANT_PATTERN, taskViewSchema } from './openapi-schemas.ts';
import { NEXT_RUNS, scheduleBody } from './schedules.ts';

type Json = Record<string, unknown>;

/** What `isScheduleId` accepts. */
export const SCHEDULE_ID_PATTERN = '^sch_[0-9a-f]{24}$';

const time = z.iso.datetime();
const scheduleId = z
  .string()
  .regex(new RegExp(SCHEDULE_ID_PATTERN))
  .meta({ description: 'A schedule id: `sch_` and 24 hex digits.', examples: ['sch_5f0c2a9be3d14c7a8b6e0f12'] });

export const scheduleViewSchema = z.object({
  schedule_id: scheduleId,
  tenant: z.string().regex(new RegExp(TENANT_PATTERN)).meta({ description: 'The tenant that owns it (of the API key that created it).' }),
  name: z.string().nullable(),
  cron: z.string(),
  timezone: z.string().meta({ description: 'The IANA time zone the expression is read in.' }),
  catch_up: z.enum(CATCH_UP_POLICIES).meta({ description: 'What happens to slots missed while no scheduler ran.' }),
  task: z
    .object({
      type: z.string(),
      input: z.unknown(),
      user_id: z.string().nullable(),
      priority: z.enum(PRIORITIES),
      max_attempts: z.number().int().min(1).nullable().meta({ description: 'Null: the type’s own, else MAX_ATTEMPTS.' }),
    })
    .meta({ description: 'The task each firing submits.' }),
  paused: z.boolean(),
  created_at: time,
  updated_at: time,
  next_run_at: time.nullable().meta({ description: 'The next slot to fire; null while paused or when the expression has no future run.' }),
  last_fired_at: time.nullable().meta({ description: 'The slot (scheduled time) of the last firing.' }),
  last_task_id: z.string().nullable(),
  fired: z.number().int().min(0).meta({ description: 'Firings that created their task.' }),
  skipped: z.number().int().min(0).meta({ description: 'Slots not fired: missed past the catch-up policy, or refused (see `last_error`).' }),
  last_error: z
    .object({ code: z.string(), message: z.string(), slot_at: time })
    .nullable()
    .meta({ description: 'The last firing that could not create its task (`quota_exceeded`, `validation_failed`…); null once one succeeds.' }),
});

export const scheduleDetailViewSchema = scheduleViewSchema.extend({
  next_runs: z
    .array(time)
    .max(NEXT_RUNS)
    .meta({ description: `The next slots (up to ${NEXT_RUNS}); empty while paused.` }),
  last_task: taskViewSchema.nullable().meta({ description: 'The task of the last firing; null before the first or once it has expired.' }),
});

export const scheduleListViewSchema = z.object({
  schedules: z.array(scheduleViewSchema).meta({ description: 'Newest first.' }),
  next_cursor: z.string().nullable().meta({ description: 'Pass as `cursor` for the next page; null on the last page.' }),
});

export const deletedScheduleSchema = z.object({ schedule_id: scheduleId, deleted: z.literal(true) });

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
export const _scheduleSchemasMatchViews: [
  Same<z.infer<typeof scheduleViewSchema>, ScheduleView>,
  Same<z.infer<typeof scheduleDetailViewSchema>, ScheduleDetailView>,
  Same<z.infer<typeof scheduleListViewSchema>, ScheduleListView>,
  Same<z.infer<typeof deletedScheduleSchema>, DeletedScheduleView>,
] = [true, true, true, true];

export const SCHEDULE_RESPONSE_SCHEMAS = {
  ScheduleView: scheduleViewSchema,
  ScheduleDetailView: scheduleDetailViewSchema,
  ScheduleList: scheduleListViewSchema,
  DeletedSchedule: deletedScheduleSchema,
} as const satisfies Record<string, z.ZodType>;

export const SCHEDULE_REQUEST_SCHEMAS = { CreateSchedule: scheduleBody } as const satisfies Record<string, z.ZodType>;

const ref = (kind: 'schemas' | 'responses', name: string) => ({ $ref: `#/components/${kind}/${name}` });
const json = (schema: Json, examples?: Record<string, { summary?: string; value: unknown }>) => ({
  'application/json': { schema, ...(examples ? { examples } : {}) },
});

const EXAMPLE_ID = 'sch_5f0c2a9be3d14c7a8b6e0f12';
const EXAMPLE_VIEW: ScheduleView = {
  schedule_id: EXAMPLE_ID,
  tenant: 'acme',
  name: 'morning digest',
  cron: '0 9 * * 1-5',
  timezone: 'Europe/Berlin',
  catch_up: 'latest',
  task: { type: 'agent', input: { content: '机械键盘降价了' }, user_id: 'user123', priority: 'normal', max_attempts: null },
  paused: false,
  created_at: '2026-11-20T10:00:00.000Z',
  updated_at: '2026-11-23T08:00:00.412Z',
  next_run_at: '2026-11-24T08:00:00.000Z',
  last_fired_at: '2026-11-23T08:00:00.000Z',
  last_task_id: '77d3a865-702f-41af-b088-59422d14e60b',
  fired: 3,
  skipped: 0,
  last_error: null,
};
const EXAMPLE_NEXT_RUNS = [
  '2026-11-24T08:00:00.000Z',
  '2026-11-25T08:00:00.000Z',
  '2026-11-26T08:00:00.000Z',
  '2026-11-27T08:00:00.000Z',
  '2026-11-30T08:00:00.000Z',
];
const EXAMPLE_CREATE = {
  name: 'morning digest',
  cron: '0 9 * * 1-5',
  timezone: 'Europe/Berlin',
  task: { type: 'agent', input: { content: '机械键盘降价了' }, user_id: 'user123' },
};

/** The path items of the schedule routes; errors refer to the document's shared answers (`#/components/responses`). */
export function schedulePaths(): Record<string, Json> {
  const readScope = [{ bearerAuth: ['tasks:read'] }];
  const writeScope = [{ bearerAuth: ['tasks:write'] }];
  const authErrors = { '401': ref('responses', 'Unauthorized'), '403': ref('responses', 'Forbidden') };
  const readErrors = { ...authErrors, '429': ref('responses', 'RateLimited'), '503': ref('responses', 'Unavailable') };
  const writeErrors = { ...authErrors, '503': ref('responses', 'Unavailable') };
  const idParam = {
    name: 'id',
    in: 'path',
    required: true,
    description: 'The schedule id.',
    schema: { type: 'string', pattern: SCHEDULE_ID_PATTERN },
    example: EXAMPLE_ID,
  };
  const view = (description: string, example: ScheduleView) => ({
    description,
    content: json(ref('schemas', 'ScheduleView'), { schedule: { value: example } }),
  });
  return {
    '/schedules': {
      description: 'Other methods answer 405 with `Allow: GET, POST`.',
      post: {
        operationId: 'createSchedule',
        tags: ['schedules'],
        summary: 'Create a cron schedule',
        description:
          'Each slot of the cron expression (read in `timezone`) creates one task, as `POST /tasks` would with the Idempotency-Key `schedule:<id>:<slot epoch ms>`, exactly once across every API and worker process. The task counts against the tenant’s quota and rate limit when it fires. A bad expression, time zone, task type or input is a 400 naming the field (`cron`, `timezone`, `task.type`, `task.input.…`).',
        security: writeScope,
        requestBody: {
          required: true,
          content: json(ref('schemas', 'CreateSchedule'), { weekdays: { summary: 'Weekdays at 09:00 in Berlin', value: EXAMPLE_CREATE } }),
        },
        responses: {
          '201': {
            description: 'Created.',
            headers: { Location: { description: 'The schedule’s URL.', required: true, schema: { type: 'string', format: 'uri' } } },
            content: json(ref('schemas', 'ScheduleDetailView'), {
              created: {
                value: {
                  ...EXAMPLE_VIEW,
                  updated_at: EXAMPLE_VIEW.created_at,
                  last_fired_at: null,
                  last_task_id: null,
                  fired: 0,
                  next_runs: EXAMPLE_NEXT_RUNS,
                  last_task: null,
                },
              },
            }),
          },
          '400': ref('responses', 'BadRequest'),
          ...writeErrors,
          '413': ref('responses', 'PayloadTooLarge'),
          '415': ref('responses', 'UnsupportedMediaType'),
        },
      },
      get: {
        operationId: 'listSchedules',
        tags: ['schedules'],
        summary: 'List the tenant’s schedules',
        description: 'Newest first. Follow `next_cursor` until it is null.',
        security: readScope,
        parameters: [
          {
            name: 'limit',
            in: 'query',
            required: false,
            description: 'Schedules per page.',
            schema: { type: 'integer', minimum: 1, maximum: 100, default: 20 },
          },
          { name: 'cursor', in: 'query', required: false, description: 'The `next_cursor` of the previous page.', schema: { type: 'string', maxLength: 200 } },
        ],
        responses: {
          '200': {
            description: 'A page of schedules.',
            content: json(ref('schemas', 'ScheduleList'), { page: { value: { schedules: [EXAMPLE_VIEW], next_cursor: null } } }),
          },
          '400': ref('responses', 'BadRequest'),
          ...readErrors,
        },
      },
    },
    '/schedules/{id}': {
      description: 'Other methods answer 405 with `Allow: GET, DELETE`. Another tenant’s schedule answers 404, as one that does not exist.',
      parameters: [idParam],
      get: {
        operationId: 'getSchedule',
        tags: ['schedules'],
        summary: 'A schedule, its next runs and its last task',
        security: readScope,
        responses: {
          '200': {
            description: 'The schedule.',
            content: json(ref('schemas', 'ScheduleDetailView'), { schedule: { value: { ...EXAMPLE_VIEW, next_runs: EXAMPLE_NEXT_RUNS, last_task: null } } }),
          },
          '400': ref('responses', 'BadRequest'),
          '404': ref('responses', 'NotFound'),
          ...readErrors,
        },
      },
      delete: {
        operationId: 'deleteSchedule',
        tags: ['schedules'],
        summary: 'Delete a schedule',
        description: 'No slot fires after the answer, but for one whose firing was already under way. Tasks it created stay.',
        security: writeScope,
        responses: {
          '200': {
            description: 'Deleted.',
            content: json(ref('schemas', 'DeletedSchedule'), { deleted: { value: { schedule_id: EXAMPLE_ID, deleted: true } } }),
          },
          '400': ref('responses', 'BadRequest'),
          '404': ref('responses', 'NotFound'),
          ...writeErrors,
        },
      },
    },
    '/schedules/{id}/pause': {
      description: 'Other methods answer 405 with `Allow: POST`.',
      parameters: [idParam],
      post: {
        operationId: 'pauseSchedule',
        tags: ['schedules'],
        summary: 'Pause a schedule',
        description: 'Its slots do not fire until it is resumed; pausing a paused schedule changes nothing.',
        security: writeScope,
        responses: {
          '200': view('The schedule, paused (`next_run_at` null).', { ...EXAMPLE_VIEW, paused: true, next_run_at: null }),
          '400': ref('responses', 'BadRequest'),
          '404': ref('responses', 'NotFound'),
          ...writeErrors,
        },
      },
    },
    '/schedules/{id}/resume': {
      description: 'Other methods answer 405 with `Allow: POST`.',
      parameters: [idParam],
      post: {
        operationId: 'resumeSchedule',
        tags: ['schedules'],
        summary: 'Resume a paused schedule',
        description: 'It fires again from the first slot after now: the slots of the paused time are not fired. Resuming a running schedule changes nothing.',
        security: writeScope,
        responses: {
          '200': view('The schedule, running again.', EXAMPLE_VIEW),
          '400': ref('responses', 'BadRequest'),
          '404': ref('responses', 'NotFound'),
          ...writeErrors,
        },
      },
    },
  };
}
