/**
 * Zod schemas of the API's answers, for the OpenAPI document (api/openapi.ts). The answers
 * are built from the TypeScript interfaces of common/views.ts and api/errors.ts; the checks
 * at the end of this file fail to compile when a schema and its interface drift apart, and
 * api/openapi.test.ts validates real answers of the app against these schemas.
 */
import { z } from 'zod';
import { SCOPES, WORKFLOW_STATUSES } from '../common/store/port.ts';
import { PRIORITIES, TASK_STATUSES } from '../common/task.ts';
import type {
  AcceptedView,
  DeadLetterListView,
  QuotaView,
  RedriveView,
  StatsView,
  TaskEventView,
  TaskListView,
  TaskView,
  WorkflowAcceptedView,
  WorkflowListView,
  WorkflowEventView,
  WorkflowView,
} from '../common/views.ts';
import type { ErrorBody } from './errors.ts';

/** What `isTaskId` accepts: any UUID, either case. */
export const TASK_ID_PATTERN = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';
/** What `isEventId` accepts: a Redis stream id. */
export const EVENT_ID_PATTERN = '^\\d{1,15}-\\d{1,15}$';
/** What `isTenant` accepts. */
export const TENANT_PATTERN = '^[a-z0-9][a-z0-9_-]{0,62}$';
/** Public ids of API keys (DELETE /admin/keys/{keyId}). */
export const KEY_ID_PATTERN = '^key_[0-9a-f]{12}$';

export const taskIdSchema = z
  .string()
  .regex(new RegExp(TASK_ID_PATTERN))
  .meta({ format: 'uuid', description: 'A task id (a UUID).', examples: ['77d3a865-702f-41af-b088-59422d14e60b'] });
export const eventIdSchema = z
  .string()
  .regex(new RegExp(EVENT_ID_PATTERN))
  .meta({ description: 'An event id: `<epoch ms>-<sequence>`, growing with every event of a task.', examples: ['1795325396509-0'] });
const tenant = z
  .string()
  .regex(new RegExp(TENANT_PATTERN))
  .meta({ description: 'A tenant: lower-case letters, digits, `_` and `-`, at most 63.', examples: ['acme'] });
/** Every time on the wire: ISO 8601 in UTC with milliseconds, as `Date.toISOString()` writes it. */
const time = z.iso.datetime();
const status = z.enum(TASK_STATUSES).meta({
  description:
    '`done`, `failed` and `cancelled` are final. `scheduled`: delayed (run_at / delay_ms) until `run_at`. `waiting`: a workflow step whose needs are not all done.',
});
const workflowStatus = z.enum(WORKFLOW_STATUSES).meta({ description: '`running` until every step is done (`done`), one fails (`failed`) or it is cancelled.' });

export const taskErrorSchema = z.object({
  code: z.string().meta({ description: 'Stable, machine-readable, snake_case: `timeout`, `worker_lost`, `cancelled`, or a handler’s own.' }),
  message: z.string(),
  retriable: z.boolean().meta({ description: 'Whether another attempt may succeed.' }),
});

const eventOf = <E extends string, D extends z.ZodType>(event: E, data: D, description: string) =>
  z.object({ id: eventIdSchema, event: z.literal(event), data }).meta({ description });

// The `data` of each event, and what it means.
const statusData = z.looseObject({ status, attempt: z.number().int().min(0), at: time });
const progressData = z.object({ percent: z.number().min(0).max(100), message: z.string().nullable(), at: time });
const logData = z.object({ level: z.string(), message: z.string(), data: z.unknown().optional(), at: time });
const partialData = z.object({ chunk: z.string(), at: time });
const doneData = z.object({ result: z.unknown(), at: time });
const failedData = z.object({ error: taskErrorSchema, at: time });
const cancelledData = z.object({ at: time, reason: z.string().nullable().optional() });
const workflowData = z.object({ status: workflowStatus, error: taskErrorSchema.optional(), at: time });
const EVENT_TEXT = {
  status: 'A transition: `queued` (also after a failed attempt that will be retried, with `retry_at` and `error`), `running` (with `worker`).',
  progress: 'The handler reported its progress (0-100).',
  log: 'A log line of the handler.',
  partial: 'Incremental output (LLM tokens, a section of a report); the chunks add up to `output`.',
  done: 'The task ended with its result. Final.',
  failed: 'The task failed for good. Final.',
  cancelled: 'The task was cancelled (DELETE /tasks/{id}). Final.',
  workflow: 'A workflow’s own end, in GET /workflows/{id}/events only.',
};

export const taskEventSchema = z
  .discriminatedUnion('event', [
    eventOf('status', statusData, EVENT_TEXT.status),
    eventOf('progress', progressData, EVENT_TEXT.progress),
    eventOf('log', logData, EVENT_TEXT.log),
    eventOf('partial', partialData, EVENT_TEXT.partial),
    eventOf('done', doneData, EVENT_TEXT.done),
    eventOf('failed', failedData, EVENT_TEXT.failed),
    eventOf('cancelled', cancelledData, EVENT_TEXT.cancelled),
    eventOf('workflow', workflowData, EVENT_TEXT.workflow),
  ])
  .meta({ description: 'One entry of a task’s history, and one server-sent event of GET /tasks/{id}/events.' });

/** What GET /workflows/{id}/events adds to each event's data: the step it is of (null in the `workflow` event). */
const stepOf = {
  task_id: taskIdSchema.nullable().meta({ description: 'The step’s task; null in the `workflow` event.' }),
  step: z.string().nullable().meta({ description: 'The step’s id; null in the `workflow` event.' }),
};
export const workflowEventSchema = z
  .discriminatedUnion('event', [
    eventOf('status', statusData.extend(stepOf), EVENT_TEXT.status),
    eventOf('progress', progressData.extend(stepOf), EVENT_TEXT.progress),
    eventOf('log', logData.extend(stepOf), EVENT_TEXT.log),
    eventOf('partial', partialData.extend(stepOf), EVENT_TEXT.partial),
    eventOf('done', doneData.extend(stepOf), EVENT_TEXT.done),
    eventOf('failed', failedData.extend(stepOf), EVENT_TEXT.failed),
    eventOf('cancelled', cancelledData.extend(stepOf), EVENT_TEXT.cancelled),
    eventOf('workflow', workflowData.extend(stepOf), 'The workflow’s own end: the last event of the stream.'),
  ])
  .meta({ description: 'One server-sent event of GET /workflows/{id}/events: an event of one of its steps, with the step in its data.' });

export const taskViewSchema = z.object({
  task_id: taskIdSchema,
  tenant: tenant.meta({ description: 'The tenant that owns it (of the API key that created it).' }),
  status,
  type: z.string().meta({ examples: ['agent'] }),
  user_id: z.string().nullable(),
  priority: z.enum(PRIORITIES),
  progress: z.number().min(0).max(100),
  message: z.string().nullable().meta({ description: 'What the handler last said it is doing.' }),
  output: z.string().nullable().meta({ description: 'The `partial` chunks, concatenated; null when none.' }),
  result: z.unknown().meta({ description: 'The handler’s result once `done`, null before. Its shape is the task type’s.' }),
  error: taskErrorSchema.nullable().meta({ description: 'Why it failed, or the last failed attempt of a task queued for a retry.' }),
  attempts: z.number().int().min(0),
  max_attempts: z.number().int().min(1),
  downgraded: z.boolean().meta({ description: 'The tenant’s quota was short, so the type’s cheaper form runs (seed 000).' }),
  created_at: time,
  started_at: time.nullable(),
  finished_at: time.nullable(),
  updated_at: time,
  retry_at: time.nullable().meta({ description: 'When a queued retry is due.' }),
  run_at: time.nullable().meta({ description: 'When a delayed task (run_at / delay_ms on submit) is due; null when it was not delayed.' }),
  workflow_id: taskIdSchema.nullable().meta({ description: 'The workflow it is a step of; null for a plain task.' }),
  step: z.string().nullable().meta({ description: 'Its step id in that workflow.' }),
  reruns: z.number().int().min(0).meta({ description: 'How often it was rerun (POST /tasks/{id}/retry, a dead-letter redrive).' }),
  history: z.array(taskEventSchema).optional().meta({ description: 'Only with `?history=true`.' }),
});

export const acceptedViewSchema = z.object({
  task_id: taskIdSchema,
  status: status.meta({ description: '`queued`, except for an Idempotency-Key replay: that task’s status now.' }),
  type: z.string(),
  status_url: z.url().meta({ description: 'Where to poll the task; also the `Location` header.' }),
  downgraded: z.boolean(),
  created_at: time.nullable().meta({ description: 'Null only on a replay whose task has expired since.' }),
  run_at: time.optional().meta({ description: 'A delayed task (status `scheduled`): when it is due.' }),
});

const stepId = z.string().meta({ description: 'A step id of the workflow request.', examples: ['research'] });
export const workflowViewSchema = z.object({
  workflow_id: taskIdSchema,
  name: z.string().nullable(),
  status: workflowStatus,
  progress: z.number().min(0).max(100).meta({ description: 'The mean of its steps’ progress (a done step counts 100).' }),
  user_id: z.string().nullable(),
  parent_task_id: taskIdSchema.nullable().meta({ description: 'The task whose handler started it with ctx.spawn, or null.' }),
  error: taskErrorSchema.nullable().meta({ description: 'The error of the step that failed it.' }),
  created_at: time,
  finished_at: time.nullable(),
  steps: z.array(
    z.object({
      id: stepId,
      task_id: taskIdSchema,
      type: z.string(),
      needs: z.array(stepId),
      status,
      progress: z.number().min(0).max(100),
      message: z.string().nullable(),
      attempts: z.number().int().min(0),
      error: taskErrorSchema.nullable(),
      result: z.unknown().meta({ description: 'The step’s result once `done`.' }),
      started_at: time.nullable(),
      finished_at: time.nullable(),
    }),
  ),
});

export const workflowListViewSchema = z.object({
  workflows: z
    .array(
      z.object({
        workflow_id: taskIdSchema,
        name: z.string().nullable(),
        status: workflowStatus,
        steps: z.number().int().min(1),
        user_id: z.string().nullable(),
        parent_task_id: taskIdSchema.nullable(),
        created_at: time,
        finished_at: time.nullable(),
      }),
    )
    .meta({ description: 'Newest first.' }),
  next_cursor: z.string().nullable(),
});

export const workflowAcceptedViewSchema = z.object({
  workflow_id: taskIdSchema,
  status: workflowStatus,
  steps: z.record(z.string(), taskIdSchema).meta({ description: 'Step id → the task id of that step.' }),
  status_url: z.url(),
  events_url: z.url(),
});

export const deadLetterListViewSchema = z.object({
  dead_letters: z
    .array(
      z.object({
        task_id: taskIdSchema,
        type: z.string(),
        code: z.string().meta({ description: 'The error code it failed with.' }),
        message: z.string(),
        attempts: z.number().int().min(0),
        dead_at: time.nullable(),
        user_id: z.string().nullable(),
        workflow_id: taskIdSchema.nullable(),
      }),
    )
    .meta({ description: 'Newest first.' }),
  next_cursor: z.string().nullable(),
});

export const redriveViewSchema = z.object({
  redriven: z.number().int().min(0),
  task_ids: z.array(taskIdSchema).meta({ description: 'The tasks rerun, queued again.' }),
});

export const taskListViewSchema = z.object({
  tasks: z.array(taskViewSchema).meta({ description: 'Newest first.' }),
  next_cursor: z.string().nullable().meta({ description: 'Pass as `cursor` for the next page; null on the last page.' }),
});

export const quotaViewSchema = z.object({
  tenant,
  units: z.number().int().min(0).meta({ description: 'Units per window; 0 = unlimited.' }),
  window_seconds: z.number().int().min(1),
  spent: z.number().int().min(0),
  remaining: z.number().int().min(0).nullable().meta({ description: 'Null when unlimited.' }),
  resets_at: time.meta({ description: 'Windows are aligned to the epoch: a day starts at 00:00 UTC.' }),
});

export const errorBodySchema = z.object({
  error: z.object({
    code: z.string().meta({
      description:
        '`validation_failed`, `unauthorized`, `forbidden`, `not_found`, `method_not_allowed`, `task_finished`, `task_not_retryable`, `workflow_finished`, `payload_too_large`, `unsupported_media_type`, `idempotency_key_reused`, `rate_limited`, `quota_exceeded`, `redis_unavailable`, `broker_unavailable`, `internal`.',
    }),
    message: z.string(),
    issues: z
      .array(
        z.object({ path: z.string().meta({ description: 'Dotted path of the field, e.g. `input.content`; empty for the whole body.' }), message: z.string() }),
      )
      .optional()
      .meta({ description: '400: one entry per field at fault.' }),
    task_id: z.string().optional().meta({ description: '404, 409, 422: the task concerned.' }),
    workflow_id: z.string().optional().meta({ description: '422 of `POST /workflows`: the workflow the Idempotency-Key started.' }),
    status: z.string().optional().meta({ description: '409: the status the task ended with.' }),
    dependency: z.string().optional().meta({ description: '503: `redis` or `broker`.' }),
    retry_after: z.number().int().min(0).optional().meta({ description: '429: seconds until the request may succeed (also `Retry-After`).' }),
  }),
});

// --- the admin routes (api/admin.ts builds these inline) ------------------------------------

const scope = z.enum(SCOPES as [string, ...string[]]);

export const apiKeyViewSchema = z.object({
  id: z.string().regex(new RegExp(KEY_ID_PATTERN)),
  tenant,
  scopes: z.array(scope),
  name: z.string().nullable(),
  created_at: time,
});

export const createdApiKeySchema = apiKeyViewSchema.extend({
  key: z.string().meta({ description: 'The secret, shown in this answer only: only its SHA-256 is stored.', examples: ['atq_…'] }),
});

export const apiKeyListSchema = z.object({ keys: z.array(apiKeyViewSchema).meta({ description: 'Oldest first; never the secrets.' }) });

export const revokedKeySchema = z.object({ id: z.string(), revoked: z.literal(true) });

const ownLimit = z.number().int().min(0).nullable();
export const tenantViewSchema = z.object({
  tenant,
  limits: z
    .object({
      quota_units: ownLimit,
      quota_window_seconds: ownLimit,
      submits_per_s: ownLimit,
      reads_per_s: ownLimit,
      max_running: ownLimit,
    })
    .meta({ description: 'The tenant’s own limits; null means the deployment’s default.' }),
  quota: quotaViewSchema,
});

// --- GET /stats -------------------------------------------------------------------------------

const count = z.number().int().min(0);
export const statsViewSchema = z.object({
  tenant,
  tasks: z.object({
    by_status: z.record(z.enum(TASK_STATUSES), count),
    by_type: z.record(z.string(), count),
    scanned: count.meta({ description: 'Tasks counted: the tenant’s newest, at most LIST_SCAN_BUDGET.' }),
    truncated: z.boolean().meta({ description: 'The tenant has more live tasks than were counted.' }),
  }),
  backlog: z
    .record(z.enum(PRIORITIES), count.nullable())
    .meta({ description: 'Request messages not yet consumed, per priority, for the whole deployment; null where the broker cannot tell (RocketMQ).' }),
  workers: z
    .array(
      z.object({
        id: z.string(),
        host: z.string(),
        concurrency: z.number().int().min(1),
        running: count.meta({ description: 'Tasks it was running at its last heartbeat.' }),
        started_at: time,
        seen_at: time.nullable().meta({ description: 'Its last heartbeat.' }),
        version: z.string(),
      }),
    )
    .meta({ description: 'The workers whose heartbeat is live.' }),
});

// --- probes ---------------------------------------------------------------------------------

export const healthSchema = z.object({ status: z.literal('ok') });
export const readinessSchema = z.object({
  status: z.enum(['ready', 'unavailable']),
  store: z.string().meta({ description: '`ok`, or why Redis did not answer.' }),
  broker: z.string().meta({ description: '`ok`, or why the broker did not answer.' }),
});

// --- compile-time checks: each schema describes exactly its interface -----------------------

type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
export const _schemasMatchViews: [
  Same<z.infer<typeof taskViewSchema>, TaskView>,
  Same<z.infer<typeof taskEventSchema>, TaskEventView>,
  Same<z.infer<typeof workflowEventSchema>, WorkflowEventView>,
  Same<z.infer<typeof acceptedViewSchema>, AcceptedView>,
  Same<z.infer<typeof taskListViewSchema>, TaskListView>,
  Same<z.infer<typeof quotaViewSchema>, QuotaView>,
  Same<z.infer<typeof errorBodySchema>, ErrorBody>,
  Same<z.infer<typeof statsViewSchema>, StatsView>,
  Same<z.infer<typeof workflowViewSchema>, WorkflowView>,
  Same<z.infer<typeof workflowListViewSchema>, WorkflowListView>,
  Same<z.infer<typeof workflowAcceptedViewSchema>, WorkflowAcceptedView>,
  Same<z.infer<typeof deadLetterListViewSchema>, DeadLetterListView>,
  Same<z.infer<typeof redriveViewSchema>, RedriveView>,
] = [true, true, true, true, true, true, true, true, true, true, true, true, true];

/** The schemas of the answers, by their name under `components.schemas`. */
export const RESPONSE_SCHEMAS = {
  TaskError: taskErrorSchema,
  TaskEvent: taskEventSchema,
  WorkflowEvent: workflowEventSchema,
  TaskView: taskViewSchema,
  AcceptedView: acceptedViewSchema,
  TaskListView: taskListViewSchema,
  QuotaView: quotaViewSchema,
  Error: errorBodySchema,
  ApiKey: apiKeyViewSchema,
  CreatedApiKey: createdApiKeySchema,
  ApiKeyList: apiKeyListSchema,
  RevokedKey: revokedKeySchema,
  TenantView: tenantViewSchema,
  StatsView: statsViewSchema,
  WorkflowView: workflowViewSchema,
  WorkflowListView: workflowListViewSchema,
  WorkflowAccepted: workflowAcceptedViewSchema,
  DeadLetterList: deadLetterListViewSchema,
  Redrive: redriveViewSchema,
  Health: healthSchema,
  Readiness: readinessSchema,
} as const satisfies Record<string, z.ZodType>;
