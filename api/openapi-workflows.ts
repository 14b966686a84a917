/**
 * The workflow, rerun and dead-letter routes in the OpenAPI document (api/openapi.ts merges
 * these). Their answers' schemas are in openapi-schemas.ts; the request bodies come from the
 * zod schemas the routes parse with.
 */
import type { z } from 'zod';
import { workflowStepsBody, workflowTemplateBody } from '../common/workflow-schemas.ts';
import { EVENT_ID_PATTERN, TASK_ID_PATTERN } from './openapi-schemas.ts';
import { redriveBody } from './workflows.ts';

type Json = Record<string, unknown>;

export const WORKFLOW_REQUEST_SCHEMAS = {
  WorkflowSteps: workflowStepsBody.meta({
    description: 'A workflow by its steps: each a task type and its input, with the step ids it needs. A step starts when all it needs are `done`.',
    examples: [
      {
        name: 'report',
        steps: [
          { id: 'research', type: 'report_research', input: { topic: 'solid-state batteries' } },
          { id: 'market', type: 'report_analyst', input: { role: 'market' }, needs: ['research'] },
          { id: 'risk', type: 'report_analyst', input: { role: 'risk' }, needs: ['research'] },
          { id: 'writer', type: 'report_writer', input: { topic: 'solid-state batteries' }, needs: ['market', 'risk'] },
        ],
      },
    ],
  }),
  WorkflowFromTemplate: workflowTemplateBody.meta({
    description: 'A built-in workflow: `seed_report` is seed 001’s report (research → market, financial and risk analysts → writer).',
    examples: [{ template: 'seed_report', input: { topic: 'new energy vehicles' } }],
  }),
  RedriveRequest: redriveBody.meta({
    description: 'Which dead letters to rerun: all of the tenant’s (up to `limit`), of a type, of an error code, or the ids given.',
  }),
} as const satisfies Record<string, z.ZodType>;

const ref = (kind: 'schemas' | 'responses' | 'parameters' | 'headers', name: string) => ({ $ref: `#/components/${kind}/${name}` });
const json = (schema: Json) => ({ 'application/json': { schema } });

export function workflowPaths(): Record<string, Json> {
  const readScope = [{ bearerAuth: ['tasks:read'] }];
  const writeScope = [{ bearerAuth: ['tasks:write'] }];
  const authErrors = { '401': ref('responses', 'Unauthorized'), '403': ref('responses', 'Forbidden') };
  const readErrors = { ...authErrors, '429': ref('responses', 'RateLimited'), '503': ref('responses', 'Unavailable') };
  // A read with a read rate (the tenant's or the deployment's) carries its RateLimit headers.
  const rateHeaders = { 'RateLimit-Policy': ref('headers', 'RateLimitPolicy'), RateLimit: ref('headers', 'RateLimit') };
  const workflowId = { name: 'id', in: 'path', required: true, description: 'A workflow id (a UUID).', schema: { type: 'string', pattern: TASK_ID_PATTERN } };
  const pageParams = [
    { name: 'limit', in: 'query', description: 'Entries per page (1-100, default 20).', schema: { type: 'integer', minimum: 1, maximum: 100 } },
    { name: 'cursor', in: 'query', description: 'The `next_cursor` of the previous page.', schema: { type: 'string', maxLength: 200 } },
  ];
  return {
    '/workflows': {
      description: 'Other methods answer 405 with `Allow: GET, POST`.',
      post: {
        operationId: 'submitWorkflow',
        tags: ['workflows'],
        summary: 'Start a workflow (fan-out / fan-in)',
        description:
          'Every step is a task. The steps that need nothing are published at once; a step is published when the last step it needs ends `done` (exactly once, in the same atomic store step), and its handler sees their results in `ctx.needs`. No worker slot is held while a step waits. A step that fails after its attempts fails the workflow and cancels the steps not run. The quota is spent for the sum of the steps’ costs. With an `Idempotency-Key`, a retry of the same request answers the workflow the first one started (`Idempotent-Replayed: true`) instead of starting a second; the key is the tenant’s, and apart from `POST /tasks`’ (the same value there names a task of its own).',
        security: writeScope,
        parameters: [ref('parameters', 'IdempotencyKey')],
        requestBody: { required: true, content: json({ oneOf: [ref('schemas', 'WorkflowSteps'), ref('schemas', 'WorkflowFromTemplate')] }) },
        responses: {
          '202': {
            description:
              'Started; poll `status_url` or stream `events_url`. On a replay of an Idempotency-Key, the answer the first request had (the same `workflow_id` and `steps`), with `status` as it is now.',
            headers: {
              Location: { description: 'The workflow’s URL (its `status_url`).', required: true, schema: { type: 'string', format: 'uri' } },
              'Idempotent-Replayed': ref('headers', 'IdempotentReplayed'),
              // With a submit rate (the tenant's or the deployment's), as POST /tasks.
              ...rateHeaders,
            },
            content: json(ref('schemas', 'WorkflowAccepted')),
          },
          '400': ref('responses', 'BadRequest'),
          ...authErrors,
          '413': ref('responses', 'PayloadTooLarge'),
          '415': ref('responses', 'UnsupportedMediaType'),
          '422': ref('responses', 'IdempotencyKeyReused'),
          // The steps are submits: the tenant's submit rate and quota (the sum of the steps' costs), as POST /tasks.
          '429': ref('responses', 'TooManyRequests'),
          '503': ref('responses', 'Unavailable'),
        },
      },
      get: {
        operationId: 'listWorkflows',
        tags: ['workflows'],
        summary: 'The tenant’s workflows, newest first',
        security: readScope,
        parameters: pageParams,
        responses: {
          '200': { description: 'A page of workflows.', headers: rateHeaders, content: json(ref('schemas', 'WorkflowListView')) },
          '400': ref('responses', 'BadRequest'),
          ...readErrors,
        },
      },
    },
    '/workflows/{id}': {
      description: 'Other methods answer 405 with `Allow: GET, DELETE`. Another tenant’s workflow answers 404.',
      parameters: [workflowId],
      get: {
        operationId: 'getWorkflow',
        tags: ['workflows'],
        summary: 'A workflow with every step’s status, progress and result',
        security: readScope,
        responses: {
          '200': { description: 'The workflow.', headers: rateHeaders, content: json(ref('schemas', 'WorkflowView')) },
          '400': ref('responses', 'BadRequest'),
          '404': ref('responses', 'NotFound'),
          ...readErrors,
        },
      },
      delete: {
        operationId: 'cancelWorkflow',
        tags: ['workflows'],
        summary: 'Cancel a workflow: every step not finished is cancelled',
        security: writeScope,
        parameters: [{ name: 'reason', in: 'query', description: 'Why; kept in each step’s history.', schema: { type: 'string', maxLength: 500 } }],
        responses: {
          '200': { description: 'The workflow, now `cancelled`.', content: json(ref('schemas', 'WorkflowView')) },
          '400': ref('responses', 'BadRequest'),
          '404': ref('responses', 'NotFound'),
          '409': { description: 'The workflow has ended already (`workflow_finished`).', content: json(ref('schemas', 'Error')) },
          ...readErrors,
        },
      },
    },
    '/workflows/{id}/events': {
      description: 'Other methods answer 405 with `Allow: GET`.',
      parameters: [workflowId],
      get: {
        operationId: 'streamWorkflowEvents',
        tags: ['workflows'],
        summary: 'Server-sent events of all its steps',
        description:
          'Every event of every step, as GET /tasks/{id}/events sends them, each with `task_id` and `step` in its data; ends after the workflow’s own `workflow` event. Resume with `Last-Event-ID` (ids grow across all steps).',
        security: readScope,
        parameters: [
          ref('parameters', 'LastEventId'),
          {
            name: 'last_event_id',
            in: 'query',
            required: false,
            description: 'The same as `Last-Event-ID`, for clients that cannot set headers.',
            schema: { type: 'string', pattern: EVENT_ID_PATTERN },
          },
        ],
        responses: {
          '200': {
            description: 'The stream.',
            headers: rateHeaders,
            content: {
              'text/event-stream': {
                schema: { type: 'string', description: 'Server-sent events (`event:`, `data:` JSON with `task_id` and `step`, `id:`).' },
                'x-itemSchema': ref('schemas', 'WorkflowEvent'),
              },
            },
          },
          '400': ref('responses', 'BadRequest'),
          '404': ref('responses', 'NotFound'),
          ...readErrors,
        },
      },
    },
    '/tasks/{id}/retry': {
      description: 'Other methods answer 405 with `Allow: POST`.',
      parameters: [ref('parameters', 'TaskId')],
      post: {
        operationId: 'retryTask',
        tags: ['tasks'],
        summary: 'Rerun a failed or cancelled task',
        description:
          'Queued again with a fresh set of attempts; its history is kept, and a `status` event with `rerun` marks the rerun. It leaves the dead letters. A workflow step cannot be rerun alone (409). A rerun is new work: it spends the task’s quota units again, and answers 429 `quota_exceeded` when they are short.',
        security: writeScope,
        responses: {
          '202': { description: 'The task, `queued` again.', content: json(ref('schemas', 'TaskView')) },
          '400': ref('responses', 'BadRequest'),
          '404': ref('responses', 'NotFound'),
          '409': { description: 'Not failed or cancelled, or a workflow step (`task_not_retryable`).', content: json(ref('schemas', 'Error')) },
          ...readErrors,
          '429': ref('responses', 'TooManyRequests'),
        },
      },
    },
    '/dead-letters': {
      description: 'Other methods answer 405 with `Allow: GET`.',
      get: {
        operationId: 'listDeadLetters',
        tags: ['dead letters'],
        summary: 'Tasks that failed after their attempts, newest first',
        description: 'The broker’s dead-letter topic gets a copy of each one’s message too; this list is the tenant’s, from the store, on every broker.',
        security: readScope,
        parameters: [
          { name: 'type', in: 'query', description: 'Only tasks of this type.', schema: { type: 'string' } },
          { name: 'code', in: 'query', description: 'Only tasks that failed with this error code.', schema: { type: 'string' } },
          ...pageParams,
        ],
        responses: {
          '200': { description: 'A page of dead letters.', headers: rateHeaders, content: json(ref('schemas', 'DeadLetterList')) },
          '400': ref('responses', 'BadRequest'),
          ...readErrors,
        },
      },
    },
    '/dead-letters/redrive': {
      description: 'Other methods answer 405 with `Allow: POST`.',
      post: {
        operationId: 'redriveDeadLetters',
        tags: ['dead letters'],
        summary: 'Rerun dead letters: all, by type, by error code, or by id',
        description:
          'Each rerun spends its task’s quota units again. The redrive stops at the first task whose units are short: the rest stay dead letters for when the window resets (429 `quota_exceeded` when none was rerun).',
        security: writeScope,
        requestBody: { required: true, content: json(ref('schemas', 'RedriveRequest')) },
        responses: {
          '200': { description: 'The tasks rerun.', content: json(ref('schemas', 'Redrive')) },
          '400': ref('responses', 'BadRequest'),
          '413': ref('responses', 'PayloadTooLarge'),
          '415': ref('responses', 'UnsupportedMediaType'),
          ...readErrors,
          '429': ref('responses', 'TooManyRequests'),
        },
      },
    },
  };
}
