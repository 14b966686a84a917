/**
 * The API's contract: an OpenAPI 3.1 document built from the zod schemas the code uses (the
 * request schemas of api/schemas.ts, each registered task type's input schema, and the answer
 * schemas of api/openapi-schemas.ts) with `z.toJSONSchema`, served at GET /openapi.json, and a
 * Swagger UI at GET /docs whose assets come from the swagger-ui-dist package (no CDN).
 *
 * The operations are described here, not on the route handlers; api/openapi.test.ts checks
 * that every route the app registers is in the document and the other way round, and that
 * real answers match the schemas declared for them.
 */
import { PRODUCT_VERSION } from '../common/version.ts';
import { WORKFLOW_REQUEST_SCHEMAS, workflowPaths } from './openapi-workflows.ts';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { Context, Hono } from 'hono';
import { z } from 'zod';
import { MethodNotAllowedError, NotFoundError } from '../common/errors.ts';
import type { TaskRegistry } from '../common/registry.ts';
import type { AppEnv } from './auth.ts';
import { EVENT_ID_PATTERN, KEY_ID_PATTERN, RESPONSE_SCHEMAS, TASK_ID_PATTERN, TENANT_PATTERN } from './openapi-schemas.ts';
import { SCHEDULE_REQUEST_SCHEMAS, SCHEDULE_RESPONSE_SCHEMAS, schedulePaths } from './openapi-schedules.ts';
import { generalBody, getQuery, keyBody, limitsBody, listQuery, postQuery, seedBody } from './schemas.ts';
import { UI_FILES } from './ui.ts';

type Json = Record<string, unknown>;

export interface OpenApiOptions {
  /** Longest ?wait= accepted, in seconds. */
  maxWaitSeconds: number;
  /** API_BODY_LIMIT, in bytes. */
  bodyLimit: number;
  /** Whether the app serves GET /metrics (it does when given its metrics). */
  metrics?: boolean;
}

/** The routes that need no API key: the probes, the document and its viewer. */
export const isPublicDocsPath = (path: string): boolean => path === '/openapi.json' || path === '/docs' || path.startsWith('/docs/');

const schemaRef = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const responseRef = (name: string) => ({ $ref: `#/components/responses/${name}` });
const headerRef = (name: string) => ({ $ref: `#/components/headers/${name}` });
const paramRef = (name: string) => ({ $ref: `#/components/parameters/${name}` });

/** The JSON Schema of a zod schema, without the `$schema` a schema inside a document does not take. */
function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): Json {
  const { $schema: _, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: 'any' }) as Json;
  return rest;
}

/** Named schemas with references between them as `#/components/schemas/<name>`. */
function componentSchemas(named: Record<string, z.ZodType>, io: 'input' | 'output'): Record<string, Json> {
  const registry = z.registry<{ id: string }>();
  for (const [id, schema] of Object.entries(named)) registry.add(schema, { id });
  const out = z.toJSONSchema(registry, { io, unrepresentable: 'any', uri: (id) => `#/components/schemas/${id}` }) as { schemas: Record<string, Json> };
  const schemas: Record<string, Json> = {};
  for (const [id, { $schema: _s, $id: _i, ...rest }] of Object.entries(out.schemas)) schemas[id] = rest;
  return schemas;
}

/** Query parameters, one per property of an object schema (as the handlers read `c.req.query()`). */
function queryParams(schema: z.ZodType, descriptions: Record<string, string>): Json[] {
  const s = jsonSchema(schema, 'input') as { properties?: Record<string, Json>; required?: string[] };
  return Object.entries(s.properties ?? {}).map(([name, p]) => ({
    name,
    in: 'query',
    required: s.required?.includes(name) ?? false,
    ...(descriptions[name] ? { description: descriptions[name] } : {}),
    schema: p,
  }));
}

const pascal = (name: string) =>
  name
    .split(/[^a-zA-Z0-9]+/)
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
    .join('');

const json = (schema: Json, examples?: Record<string, { summary?: string; value: unknown }>) => ({
  'application/json': { schema, ...(examples ? { examples } : {}) },
});

const problem = (description: string, examples: Record<string, { summary?: string; value: unknown }>, headers?: Record<string, Json>) => ({
  description,
  ...(headers ? { headers } : {}),
  content: json(schemaRef('Error'), examples),
});

const err = (code: string, message: string, extra: Json = {}) => ({ value: { error: { code, message, ...extra } } });

// --- examples, from seed 004 and real answers (api/openapi.test.ts checks them) -------------

const EXAMPLE_ID = '77d3a865-702f-41af-b088-59422d14e60b';
const EXAMPLE_URL = `http://localhost:8000/tasks/${EXAMPLE_ID}`;
const SEED_SUMMARY = 'positive message of 4 words; key terms: 机械, 键盘, 降价. "机械键盘降价了"';
/** What the `agent` type answers for seed 004's `{"user_id": "user123", "content": "机械键盘降价了"}`. */
export const SEED_RESULT = {
  summary: SEED_SUMMARY,
  sentiment: 'positive',
  score: 1,
  keywords: [
    { word: '机械', count: 1 },
    { word: '键盘', count: 1 },
    { word: '降价', count: 1 },
  ],
  stats: { characters: 7, words: 4, sentences: 1 },
  digest: 'b65cb725',
};
const ACCEPTED_EXAMPLE = {
  task_id: EXAMPLE_ID,
  status: 'queued',
  type: 'agent',
  status_url: EXAMPLE_URL,
  downgraded: false,
  created_at: '2026-11-22T02:14:38.611Z',
};
const QUEUED_EXAMPLE = {
  task_id: EXAMPLE_ID,
  tenant: 'acme',
  status: 'queued',
  type: 'agent',
  user_id: 'user123',
  priority: 'normal',
  progress: 0,
  message: null,
  output: null,
  result: null,
  error: null,
  attempts: 0,
  max_attempts: 3,
  downgraded: false,
  created_at: '2026-11-22T02:14:38.611Z',
  started_at: null,
  finished_at: null,
  updated_at: '2026-11-22T02:14:38.611Z',
  retry_at: null,
  run_at: null,
  workflow_id: null,
  step: null,
  reruns: 0,
};
const DONE_EXAMPLE = {
  ...QUEUED_EXAMPLE,
  status: 'done',
  progress: 100,
  message: 'writing summary',
  output: SEED_SUMMARY,
  result: SEED_RESULT,
  attempts: 1,
  started_at: '2026-11-22T02:14:38.613Z',
  finished_at: '2026-11-22T02:14:38.638Z',
  updated_at: '2026-11-22T02:14:38.638Z',
};
const HISTORY_EXAMPLE = [
  { id: '1795227278611-0', event: 'status', data: { status: 'queued', attempt: 0, at: '2026-11-22T02:14:38.611Z' } },
  { id: '1795227278613-0', event: 'status', data: { status: 'running', attempt: 1, worker: 'vm-23493', at: '2026-11-22T02:14:38.613Z' } },
  { id: '1795227278614-0', event: 'progress', data: { percent: 10, message: 'segmenting text', at: '2026-11-22T02:14:38.614Z' } },
  { id: '1795227278630-0', event: 'partial', data: { chunk: 'positive message of 4 ', at: '2026-11-22T02:14:38.630Z' } },
  {
    id: '1795227278637-0',
    event: 'log',
    data: { level: 'info', message: 'agent finished', data: { words: 4, sentiment: 'positive' }, at: '2026-11-22T02:14:38.637Z' },
  },
  { id: '1795227278638-0', event: 'done', data: { result: SEED_RESULT, at: '2026-11-22T02:14:38.638Z' } },
];
const QUOTA_EXAMPLE = { tenant: 'acme', units: 100, window_seconds: 86400, spent: 7, remaining: 93, resets_at: '2026-11-23T00:00:00.000Z' };
const STRATEGY = {
  symbol: 'SPY',
  strategy: 'bull call spread',
  underlying_price: 500,
  days_to_expiry: 30,
  legs: [
    { side: 'buy', type: 'call', strike: 500, premium: 12.5 },
    { side: 'sell', type: 'call', strike: 520, premium: 5 },
  ],
};
/** An example input per built-in type; a type registered without one gets none. */
const INPUT_EXAMPLES: Record<string, unknown> = {
  agent: { content: '机械键盘降价了，很满意，推荐', simulate_ms: 800 },
  multi_agent_report: { use_multi_agent: true, strategy_summary: { symbol: 'SPY', underlying_price: 500 } },
  options_analysis_workflow: { strategy_summary: STRATEGY, include_metadata: true },
  stock_screening_workflow: { sector: 'Technology', limit: 10, max_pe: 30 },
};

const SSE_EXAMPLE = `event: status
data: {"status":"queued","attempt":0,"at":"2026-11-22T05:29:56.509Z"}
id: 1795325396509-0

event: status
data: {"status":"running","attempt":1,"worker":"vm-23493","at":"2026-11-22T05:29:56.511Z"}
id: 1795325396511-0

event: progress
data: {"percent":10,"message":"segmenting text","at":"2026-11-22T05:29:56.513Z"}
id: 1795325396513-0

event: partial
data: {"chunk":"positive message of 7 ","at":"2026-11-22T05:29:59.716Z"}
id: 1795325399716-0

: keep-alive

event: done
data: {"result":{"summary":"positive message of 7 words; …","sentiment":"positive","score":3},"at":"2026-11-22T05:30:00.118Z"}
id: 1795325400118-1

`;

// --- the document -----------------------------------------------------------------------------

const SCOPE_TEXT: Record<string, string> = {
  'tasks:write': 'submit and cancel tasks (POST /tasks, DELETE /tasks/{id})',
  'tasks:read': 'read tasks, their events and the quota (the GET routes)',
  admin: 'manage API keys and tenants’ limits (/admin/*)',
};

/** The OpenAPI 3.1 document of an app with these task types and options. */
export function buildOpenApiDocument(registry: TaskRegistry, opts: OpenApiOptions): Json {
  const types = registry.names().flatMap((name) => {
    const t = registry.get(name);
    if (!t) return [];
    // A type's own schema that JSON Schema cannot express at all is documented as any input.
    let input: z.ZodType = t.input;
    try {
      z.toJSONSchema(input, { io: 'input', unrepresentable: 'any' });
    } catch {
      input = z.unknown().meta({ description: `The input of ${name}: its schema has no JSON Schema form.` });
    }
    return [{ name, input }];
  });
  // Component names: `AgentTaskInput`, `AgentTaskSubmission`…; `a.b` and `a_b` would share one, so a second gets a number.
  const ids = new Set<string>();
  const named = types.map((t) => {
    let id = `${pascal(t.name)}Task`;
    for (let n = 2; ids.has(id); n++) id = `${pascal(t.name)}${n}Task`;
    ids.add(id);
    return { ...t, id };
  });

  // Request schemas: what a client may send (defaults make fields optional).
  const requestNamed: Record<string, z.ZodType> = {
    SeedSubmission: seedBody,
    CreateApiKey: keyBody,
    SetTenantLimits: limitsBody,
    ...SCHEDULE_REQUEST_SCHEMAS,
    ...WORKFLOW_REQUEST_SCHEMAS,
  };
  for (const t of named) {
    requestNamed[`${t.id}Input`] = t.input;
    requestNamed[`${t.id}Submission`] = generalBody.extend({ type: z.literal(t.name), input: t.input });
  }
  const schemas: Record<string, Json> = {
    ...componentSchemas({ ...RESPONSE_SCHEMAS, ...SCHEDULE_RESPONSE_SCHEMAS }, 'output'),
    ...componentSchemas(requestNamed, 'input'),
  };
  // `tenant` is checked by a refinement, which JSON Schema cannot carry: state its pattern.
  const createKey = schemas.CreateApiKey as { properties: Record<string, Json> };
  createKey.properties.tenant = { ...createKey.properties.tenant, pattern: TENANT_PATTERN };
  schemas.SeedSubmission = {
    ...schemas.SeedSubmission,
    description: 'Seed 004’s form: runs the `agent` type on `content`.',
    examples: [{ user_id: 'user123', content: '机械键盘降价了' }],
  };
  for (const t of named) {
    const example = INPUT_EXAMPLES[t.name];
    schemas[`${t.id}Submission`] = {
      ...schemas[`${t.id}Submission`],
      description: `The general form for the \`${t.name}\` type: \`input\` is checked against its schema before the task is accepted.`,
      ...(example === undefined ? {} : { examples: [{ type: t.name, input: example }] }),
    };
  }
  schemas.GeneralSubmission = {
    description: 'The general form: a registered task type and its input, discriminated by `type`.',
    oneOf: named.map((t) => schemaRef(`${t.id}Submission`)),
    discriminator: { propertyName: 'type', mapping: Object.fromEntries(named.map((t) => [t.name, `#/components/schemas/${t.id}Submission`])) },
  };
  // POST /mcp: the JSON-RPC 2.0 messages the MCP SDK's transport answers (not zod schemas of ours).
  const rpcError = {
    type: 'object',
    required: ['code', 'message'],
    properties: { code: { type: 'integer' }, message: { type: 'string' }, data: {} },
  };
  schemas.JsonRpcMessage = {
    description: 'A JSON-RPC 2.0 response (`result` or `error`, with the request’s `id`) or notification (`method`, e.g. `notifications/progress`).',
    type: 'object',
    required: ['jsonrpc'],
    properties: {
      jsonrpc: { const: '2.0' },
      id: { type: ['string', 'integer', 'null'] },
      result: { type: 'object' },
      error: rpcError,
      method: { type: 'string' },
      params: { type: 'object' },
    },
    oneOf: [{ required: ['id', 'result'] }, { required: ['id', 'error'] }, { required: ['method'] }],
  };
  schemas.JsonRpcErrorResponse = {
    description: 'A JSON-RPC 2.0 error answering a request the transport refused, `id` null.',
    type: 'object',
    required: ['jsonrpc', 'error', 'id'],
    properties: { jsonrpc: { const: '2.0' }, error: rpcError, id: { type: 'null' } },
  };
  schemas.McpEvent = {
    description: 'One server-sent event of POST /mcp.',
    type: 'object',
    required: ['event', 'data'],
    properties: { event: { const: 'message' }, id: { type: 'string' }, data: schemaRef('JsonRpcMessage') },
  };
  schemas.Submission = {
    description: 'POST /tasks accepts two body forms. Unknown fields are refused (400) at every level.',
    oneOf: [schemaRef('SeedSubmission'), schemaRef('GeneralSubmission')],
  };

  const readScope = [{ bearerAuth: ['tasks:read'] }];
  const writeScope = [{ bearerAuth: ['tasks:write'] }];
  const adminScope = [{ bearerAuth: ['admin'] }];
  const publicRoute: Json[] = [];
  const authErrors = { '401': responseRef('Unauthorized'), '403': responseRef('Forbidden') };
  const readErrors = { ...authErrors, '429': responseRef('RateLimited'), '503': responseRef('Unavailable') };
  const rateHeaders = { 'RateLimit-Policy': headerRef('RateLimitPolicy'), RateLimit: headerRef('RateLimit') };
  const taskView = (examples: Record<string, { summary?: string; value: unknown }>) => ({
    description: 'The task.',
    headers: rateHeaders,
    content: json(schemaRef('TaskView'), examples),
  });

  // The dashboard's files are for a browser: api/ui.ts sends these with each.
  const uiHeaders = {
    'Content-Security-Policy': {
      description: 'Scripts, styles and data from this origin only; no frames, no forms.',
      required: true,
      schema: { type: 'string' },
    },
    'X-Content-Type-Options': { required: true, schema: { const: 'nosniff' } },
    'X-Frame-Options': { required: true, schema: { const: 'DENY' } },
    'Referrer-Policy': { required: true, schema: { const: 'no-referrer' } },
  };

  const waitText = `Hold the answer until the task ends or this many seconds pass (at most ${opts.maxWaitSeconds}).`;
  const submitQuery = queryParams(postQuery(opts.maxWaitSeconds), {
    wait: `${waitText} A task that ends in time is answered with 200 and its view; otherwise the usual 202.`,
  });
  const getTaskQuery = queryParams(getQuery(opts.maxWaitSeconds), { wait: waitText, history: 'Add the task’s `history` (its events) to the view.' });
  const listParams = queryParams(listQuery, {
    status: 'Only tasks with this status.',
    user_id: 'Only tasks with this `user_id`.',
    type: 'Only tasks of this type.',
    limit: 'Tasks per page.',
    cursor: 'The `next_cursor` of the previous page.',
  });

  const paths: Record<string, Json> = {
    '/tasks': {
      description: 'Other methods answer 405 with `Allow: GET, POST`.',
      post: {
        operationId: 'submitTask',
        tags: ['tasks'],
        summary: 'Submit a task',
        description:
          'Answers 202 with the task id at once, after the broker has accepted the request message. With `?wait=N` or `"async_mode": false` it answers 200 with the finished task if it ends in time. A 503 leaves no task that runs later.',
        security: writeScope,
        parameters: [...submitQuery, paramRef('IdempotencyKey')],
        requestBody: {
          required: true,
          content: {
            'application/json': {
              schema: schemaRef('Submission'),
              examples: {
                seed: { summary: 'Seed 004’s form', value: { user_id: 'user123', content: '机械键盘降价了' } },
                ...Object.fromEntries(
                  named.flatMap((t) => {
                    const input = INPUT_EXAMPLES[t.name];
                    return input === undefined ? [] : [[t.name, { summary: `The general form: ${t.name}`, value: { type: t.name, input } }]];
                  }),
                ),
              },
            },
          },
        },
        responses: {
          '200': {
            ...taskView({ done: { summary: 'Finished within the wait', value: DONE_EXAMPLE } }),
            description: 'The task ended within `wait` (or `async_mode: false`).',
          },
          '202': {
            description: 'Accepted: the task is queued. On a replay of an Idempotency-Key, the task that key created, as it is now.',
            headers: {
              Location: headerRef('Location'),
              'Idempotent-Replayed': headerRef('IdempotentReplayed'),
              ...rateHeaders,
            },
            content: json(schemaRef('AcceptedView'), { seed: { summary: 'Seed 004’s call', value: ACCEPTED_EXAMPLE } }),
          },
          '400': responseRef('BadRequest'),
          ...authErrors,
          '413': responseRef('PayloadTooLarge'),
          '415': responseRef('UnsupportedMediaType'),
          '422': responseRef('IdempotencyKeyReused'),
          '429': responseRef('TooManyRequests'),
          '503': responseRef('Unavailable'),
        },
      },
      get: {
        operationId: 'listTasks',
        tags: ['tasks'],
        summary: 'List the tenant’s tasks',
        description: 'Newest first. Follow `next_cursor` until it is null.',
        security: readScope,
        parameters: listParams,
        responses: {
          '200': {
            description: 'A page of tasks.',
            headers: rateHeaders,
            content: json(schemaRef('TaskListView'), { page: { value: { tasks: [DONE_EXAMPLE], next_cursor: null } } }),
          },
          '400': responseRef('BadRequest'),
          ...readErrors,
        },
      },
    },
    '/tasks/{id}': {
      description: 'Other methods answer 405 with `Allow: GET, DELETE`. A task of another tenant answers 404, as one that does not exist.',
      parameters: [paramRef('TaskId')],
      get: {
        operationId: 'getTask',
        tags: ['tasks'],
        summary: 'A task’s status and result',
        security: readScope,
        parameters: getTaskQuery,
        responses: {
          '200': taskView({
            queued: { summary: 'Just accepted', value: QUEUED_EXAMPLE },
            done: { summary: 'Seed 004’s task, done', value: DONE_EXAMPLE },
            history: { summary: 'With ?history=true', value: { ...DONE_EXAMPLE, history: HISTORY_EXAMPLE } },
          }),
          '400': responseRef('BadRequest'),
          '404': responseRef('NotFound'),
          ...readErrors,
        },
      },
      delete: {
        operationId: 'cancelTask',
        tags: ['tasks'],
        summary: 'Cancel a task',
        description: 'A queued task never runs; a running one’s handler sees its AbortSignal fire. Answers the task, now `cancelled`.',
        security: writeScope,
        parameters: [
          { name: 'reason', in: 'query', required: false, description: 'Kept in the history (its first 500 characters).', schema: { type: 'string' } },
        ],
        responses: {
          '200': { description: 'The task, now `cancelled`.', content: json(schemaRef('TaskView')) },
          '400': responseRef('BadRequest'),
          ...authErrors,
          '404': responseRef('NotFound'),
          '409': responseRef('TaskFinished'),
          '503': responseRef('Unavailable'),
        },
      },
    },
    '/tasks/{id}/events': {
      description: 'Other methods answer 405 with `Allow: GET`.',
      parameters: [paramRef('TaskId')],
      get: {
        operationId: 'streamTaskEvents',
        tags: ['tasks'],
        summary: 'Follow a task: server-sent events',
        description: [
          'The task’s events, live, as server-sent events; for a finished task its history, then the stream closes. Each event has an `id:`, an `event:` name and one `data:` line, the JSON of the `data` of the TaskEvent of that name:',
          '',
          '- `status`: `{status, attempt, at, worker?, retry_at?, error?}`',
          '- `progress`: `{percent, message, at}`',
          '- `log`: `{level, message, data?, at}`',
          '- `partial`: `{chunk, at}`',
          '- `done`: `{result, at}` (final)',
          '- `failed`: `{error: {code, message, retriable}, at}` (final)',
          '- `cancelled`: `{reason?, at}` (final)',
          '',
          'A comment line `: keep-alive` comes every `SSE_KEEPALIVE_MS`. Reconnect with `Last-Event-ID` (or `?last_event_id=`) for exactly the events after it. `x-itemSchema` of the media type is the schema of one event as `{id, event, data}` (OpenAPI 3.2’s `itemSchema`).',
        ].join('\n'),
        security: readScope,
        parameters: [
          paramRef('LastEventId'),
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
            description: 'A stream of server-sent events.',
            headers: rateHeaders,
            content: {
              'text/event-stream': {
                schema: { type: 'string', description: 'Server-sent events (`event:`, `data:` JSON, `id:`), see the operation’s description.' },
                'x-itemSchema': schemaRef('TaskEvent'),
                example: SSE_EXAMPLE,
              },
            },
          },
          '400': responseRef('BadRequest'),
          '404': responseRef('NotFound'),
          ...readErrors,
        },
      },
    },
    '/quota': {
      description: 'Other methods answer 405 with `Allow: GET`.',
      get: {
        operationId: 'getQuota',
        tags: ['tenants'],
        summary: 'The caller’s tenant’s quota',
        security: readScope,
        responses: {
          '200': {
            description: 'Quota units of the current window.',
            headers: rateHeaders,
            content: json(schemaRef('QuotaView'), { acme: { value: QUOTA_EXAMPLE } }),
          },
          ...readErrors,
        },
      },
    },
    '/admin/keys': {
      description: 'Other methods answer 405 with `Allow: GET, POST`.',
      post: {
        operationId: 'createApiKey',
        tags: ['admin'],
        summary: 'Create an API key',
        description: 'The answer is the only place the key is ever shown.',
        security: adminScope,
        requestBody: {
          required: true,
          content: json(schemaRef('CreateApiKey'), { ci: { value: { tenant: 'acme', scopes: ['tasks:write', 'tasks:read'], name: 'ci' } } }),
        },
        responses: {
          '201': {
            description: 'The key, with its secret.',
            content: json(schemaRef('CreatedApiKey'), {
              ci: {
                value: {
                  id: 'key_3f9a01c2b4d5',
                  tenant: 'acme',
                  scopes: ['tasks:write', 'tasks:read'],
                  name: 'ci',
                  created_at: '2026-11-22T02:00:00.000Z',
                  key: 'atq_q8Jc1mVdQ0yRCe8b3pEo7tKTXr4cYwZ5aN2uHfL6sGi',
                },
              },
            }),
          },
          '400': responseRef('BadRequest'),
          ...authErrors,
          '503': responseRef('Unavailable'),
        },
      },
      get: {
        operationId: 'listApiKeys',
        tags: ['admin'],
        summary: 'List API keys (never their secrets)',
        security: adminScope,
        parameters: [
          { name: 'tenant', in: 'query', required: false, description: 'Only this tenant’s keys.', schema: { type: 'string', pattern: TENANT_PATTERN } },
        ],
        responses: {
          '200': { description: 'The keys.', content: json(schemaRef('ApiKeyList')) },
          '400': responseRef('BadRequest'),
          ...authErrors,
          '503': responseRef('Unavailable'),
        },
      },
    },
    '/admin/keys/{keyId}': {
      description: 'Other methods answer 405 with `Allow: DELETE`.',
      parameters: [{ name: 'keyId', in: 'path', required: true, schema: { type: 'string', pattern: KEY_ID_PATTERN }, example: 'key_3f9a01c2b4d5' }],
      delete: {
        operationId: 'revokeApiKey',
        tags: ['admin'],
        summary: 'Revoke an API key',
        description: 'Every API process refuses it within 5 s.',
        security: adminScope,
        responses: {
          '200': { description: 'Revoked.', content: json(schemaRef('RevokedKey'), { revoked: { value: { id: 'key_3f9a01c2b4d5', revoked: true } } }) },
          ...authErrors,
          '404': responseRef('NotFound'),
          '503': responseRef('Unavailable'),
        },
      },
    },
    '/admin/tenants/{tenant}': {
      description: 'Other methods answer 405 with `Allow: GET`.',
      parameters: [paramRef('Tenant')],
      get: {
        operationId: 'getTenant',
        tags: ['admin'],
        summary: 'A tenant’s own limits and its quota',
        security: adminScope,
        responses: {
          '200': { description: 'The tenant.', content: json(schemaRef('TenantView')) },
          '400': responseRef('BadRequest'),
          ...authErrors,
          '503': responseRef('Unavailable'),
        },
      },
    },
    '/admin/tenants/{tenant}/limits': {
      description: 'Other methods answer 405 with `Allow: PUT`.',
      parameters: [paramRef('Tenant')],
      put: {
        operationId: 'setTenantLimits',
        tags: ['admin'],
        summary: 'Set a tenant’s own limits',
        description: 'Sets the fields given; `null` goes back to the deployment’s default.',
        security: adminScope,
        requestBody: {
          required: true,
          content: json(schemaRef('SetTenantLimits'), { acme: { value: { quota_units: 100, max_running: 2, submits_per_s: null } } }),
        },
        responses: {
          '200': { description: 'The tenant, as GET answers it.', content: json(schemaRef('TenantView')) },
          '400': responseRef('BadRequest'),
          ...authErrors,
          '503': responseRef('Unavailable'),
        },
      },
    },
    '/stats': {
      description: 'Other methods answer 405 with `Allow: GET`.',
      get: {
        operationId: 'getStats',
        tags: ['tenants'],
        summary: 'The tenant’s tasks by status and type, the request backlog, the live workers',
        security: readScope,
        responses: {
          '200': {
            description: 'Statistics.',
            headers: rateHeaders,
            content: json(schemaRef('StatsView'), {
              acme: {
                value: {
                  tenant: 'acme',
                  tasks: {
                    by_status: { scheduled: 0, waiting: 0, queued: 2, running: 1, done: 40, failed: 1, cancelled: 0 },
                    by_type: { agent: 44 },
                    scanned: 44,
                    truncated: false,
                  },
                  backlog: { high: 0, normal: 2, low: 0 },
                  workers: [
                    {
                      id: 'vm-23493',
                      host: 'vm',
                      concurrency: 4,
                      running: 1,
                      started_at: '2026-11-22T02:00:00.000Z',
                      seen_at: '2026-11-22T02:14:38.000Z',
                      version: PRODUCT_VERSION,
                    },
                  ],
                },
              },
            }),
          },
          ...readErrors,
        },
      },
    },
    '/mcp': {
      description: 'Other methods answer 405 with `Allow: POST`: the server is stateless, with no session to hold a GET stream or to DELETE.',
      post: {
        operationId: 'mcp',
        tags: ['agents'],
        summary: 'The MCP server for agents (Model Context Protocol, streamable HTTP)',
        description:
          'JSON-RPC 2.0 messages of the Model Context Protocol: `initialize`, `tools/list`, `tools/call`. The tools are seed 002’s: `submit_task`, `check_task`, `wait_for_tasks`, `get_task_results`, `list_tasks`, `cancel_task`, `submit_workflow`, plus `get_quota` and `get_statistics`; their input schemas are in `tools/list`. Each tool call runs as the caller: it calls the route it stands for with this request’s `Authorization`, so it needs that route’s scope, counts against the tenant’s limits, and a refusal comes back as a tool result with `isError` and the API’s error. Send `Accept: application/json, text/event-stream`.',
        security: [{ bearerAuth: [] }],
        requestBody: {
          required: true,
          content: json(
            { type: ['object', 'array'], description: 'A JSON-RPC 2.0 message, or a batch of them.' },
            {
              list: { summary: 'List the tools', value: { jsonrpc: '2.0', id: 1, method: 'tools/list' } },
              call: {
                summary: 'Submit a task',
                value: {
                  jsonrpc: '2.0',
                  id: 2,
                  method: 'tools/call',
                  params: { name: 'submit_task', arguments: { type: 'agent', input: { content: '机械键盘降价了' } } },
                },
              },
            },
          ),
        },
        responses: {
          '200': {
            description:
              'The answers to the request’s messages, as server-sent events (`event: message`, `data:` a JSON-RPC response); progress notifications of wait_for_tasks come first when the call asked for them.',
            content: {
              'text/event-stream': {
                schema: { type: 'string', description: 'Server-sent events: `event: message` and one `data:` line, a JSON-RPC message.' },
                'x-itemSchema': schemaRef('McpEvent'),
              },
            },
          },
          '202': { description: 'Accepted: the body held only notifications or responses.' },
          '400': { description: 'Not a JSON-RPC message: a JSON-RPC error object.', content: json(schemaRef('JsonRpcErrorResponse')) },
          '401': responseRef('Unauthorized'),
          '406': {
            description: 'The Accept header lacks `application/json` or `text/event-stream`: a JSON-RPC error object.',
            content: json(schemaRef('JsonRpcErrorResponse')),
          },
          '413': {
            description: `The body is over API_BODY_LIMIT (here ${opts.bodyLimit} bytes): a JSON-RPC error object.`,
            content: json(schemaRef('JsonRpcErrorResponse')),
          },
          '415': { description: 'The body is not `application/json`: a JSON-RPC error object.', content: json(schemaRef('JsonRpcErrorResponse')) },
        },
      },
    },
    ...(opts.metrics
      ? {
          '/metrics': {
            description: 'Other methods answer 405 with `Allow: GET`.',
            get: {
              operationId: 'metrics',
              tags: ['probes'],
              summary: 'Prometheus metrics of this process, without a key',
              security: publicRoute,
              responses: {
                '200': {
                  description: 'The Prometheus text exposition format.',
                  content: {
                    'text/plain': { schema: { type: 'string' }, example: '# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 0.42\n' },
                  },
                },
              },
            },
          },
        }
      : {}),
    '/healthz': {
      get: {
        operationId: 'health',
        tags: ['probes'],
        summary: 'Liveness: the process is alive',
        security: publicRoute,
        responses: { '200': { description: 'Alive.', content: json(schemaRef('Health')) } },
      },
    },
    '/readyz': {
      get: {
        operationId: 'ready',
        tags: ['probes'],
        summary: 'Readiness: Redis and the broker answer',
        security: publicRoute,
        responses: {
          '200': { description: 'Ready.', content: json(schemaRef('Readiness'), { ready: { value: { status: 'ready', store: 'ok', broker: 'ok' } } }) },
          '503': {
            description: 'Redis or the broker did not answer.',
            headers: { 'Retry-After': headerRef('RetryAfter') },
            content: json(schemaRef('Readiness'), {
              down: { value: { status: 'unavailable', store: 'ok', broker: 'kafka is unreachable: Connection timeout' } },
            }),
          },
        },
      },
    },
    '/openapi.json': {
      description: 'Other methods answer 405 with `Allow: GET`.',
      get: {
        operationId: 'openapi',
        tags: ['docs'],
        summary: 'This document',
        security: publicRoute,
        responses: { '200': { description: 'The OpenAPI 3.1 document.', content: { 'application/json': { schema: { type: 'object' } } } } },
      },
    },
    '/docs': {
      description: 'Other methods answer 405 with `Allow: GET`.',
      get: {
        operationId: 'docs',
        tags: ['docs'],
        summary: 'Interactive reference (Swagger UI)',
        security: publicRoute,
        responses: { '200': { description: 'The page.', content: { 'text/html': { schema: { type: 'string' } } } } },
      },
    },
    '/docs/{file}': {
      description: 'Other methods answer 405 with `Allow: GET`.',
      get: {
        operationId: 'docsAsset',
        tags: ['docs'],
        summary: 'An asset of the reference page, from the swagger-ui-dist package',
        security: publicRoute,
        parameters: [{ name: 'file', in: 'path', required: true, schema: { type: 'string', enum: [...DOCS_ASSETS.keys()] } }],
        responses: {
          '200': {
            description: 'The file.',
            content: Object.fromEntries(
              [...new Set([...DOCS_ASSETS.values()].map((a) => a.type.split(';')[0] ?? a.type))].map((t) => [t, { schema: { type: 'string' } }]),
            ),
          },
          '404': responseRef('NotFound'),
        },
      },
    },
    '/ui': {
      description: 'Other methods answer 405 with `Allow: GET`.',
      get: {
        operationId: 'dashboard',
        tags: ['dashboard'],
        summary: 'The live dashboard (a page; its data calls use the routes above with the caller’s key)',
        security: publicRoute,
        responses: {
          '200': {
            description: 'The page, with a strict Content-Security-Policy.',
            headers: uiHeaders,
            content: { 'text/html': { schema: { type: 'string' } } },
          },
        },
      },
    },
    '/ui/{file}': {
      description: 'Other methods answer 405 with `Allow: GET`.',
      get: {
        operationId: 'dashboardAsset',
        tags: ['dashboard'],
        summary: 'A script, style sheet or icon of the dashboard, from the package’s ui/ folder',
        security: publicRoute,
        parameters: [{ name: 'file', in: 'path', required: true, schema: { type: 'string', enum: [...UI_FILES.keys()] } }],
        responses: {
          '200': {
            description: 'The file.',
            headers: uiHeaders,
            content: Object.fromEntries([...new Set([...UI_FILES.values()].map((t) => t.split(';')[0] ?? t))].map((t) => [t, { schema: { type: 'string' } }])),
          },
          '404': responseRef('NotFound'),
        },
      },
    },
  };

  Object.assign(paths, schedulePaths()); // api/openapi-schedules.ts
  Object.assign(paths, workflowPaths()); // api/openapi-workflows.ts

  const responses = {
    BadRequest: problem('The body, a parameter or a header does not match its schema; `issues[].path` names each field.', {
      field: err('validation_failed', 'content: must be a string', { issues: [{ path: 'content', message: 'must be a string' }] }),
      unknown: err('validation_failed', 'input.temperature: Unrecognized key: "temperature"', {
        issues: [{ path: 'input.temperature', message: 'Unrecognized key: "temperature"' }],
      }),
      json: err('validation_failed', 'body: not valid JSON (Unexpected end of JSON input)', { issues: [{ path: '', message: 'not valid JSON' }] }),
    }),
    Unauthorized: problem(
      'No API key, a malformed Authorization header, or an unknown or revoked key.',
      {
        missing: err('unauthorized', 'an API key is required: send Authorization: Bearer <key>'),
        revoked: err('unauthorized', 'the API key is unknown or revoked'),
      },
      { 'WWW-Authenticate': headerRef('WWWAuthenticate') },
    ),
    Forbidden: problem('The key lacks the scope the route needs.', { scope: err('forbidden', 'this API key lacks the scope tasks:write') }),
    NotFound: problem('No such task (or it is another tenant’s), key or route.', {
      task: err('not_found', `no task ${EXAMPLE_ID}`, { task_id: EXAMPLE_ID }),
    }),
    MethodNotAllowed: problem(
      'Answered for a method a path does not take (each path’s description names them).',
      { method: err('method_not_allowed', 'PATCH is not allowed here; use GET, POST') },
      { Allow: headerRef('Allow') },
    ),
    TaskFinished: problem('The task has already ended: only queued or running tasks can be cancelled.', {
      done: err('task_finished', `task ${EXAMPLE_ID} has already finished (done); only queued or running tasks can be cancelled`, {
        task_id: EXAMPLE_ID,
        status: 'done',
      }),
    }),
    PayloadTooLarge: problem(`The body is over API_BODY_LIMIT (here ${opts.bodyLimit} bytes).`, {
      big: err('payload_too_large', `request body is larger than ${opts.bodyLimit} bytes`),
    }),
    UnsupportedMediaType: problem('The body is not `application/json` (or `application/*+json`) in UTF-8.', {
      form: err('unsupported_media_type', 'content-type must be application/json, got text/plain'),
    }),
    IdempotencyKeyReused: problem(
      'The Idempotency-Key was used before for a different request: `task_id` (or, on `POST /workflows`, `workflow_id`) names what it made.',
      {
        reused: err('idempotency_key_reused', `this Idempotency-Key was used for a different request (task ${EXAMPLE_ID})`, { task_id: EXAMPLE_ID }),
        reused_workflow: err('idempotency_key_reused', `this Idempotency-Key was used for a different request (workflow ${EXAMPLE_ID})`, {
          workflow_id: EXAMPLE_ID,
        }),
      },
    ),
    TooManyRequests: problem(
      'Over the tenant’s submits per second (`rate_limited`, with the RateLimit headers), or short of quota units for the task and its downgrade (`quota_exceeded`, `Retry-After` until the window resets).',
      {
        rate: err('rate_limited', 'tenant acme is over its limit of 10 submits per second; retry after 1 s', { retry_after: 1 }),
        quota: err(
          'quota_exceeded',
          'tenant acme has 3 of its 100 quota units left in this 86400 s window, and a options_analysis_workflow task costs 5; the window resets at 2026-11-23T00:00:00.000Z',
          { retry_after: 3600 },
        ),
      },
      { 'Retry-After': headerRef('RetryAfter'), ...rateHeaders },
    ),
    RateLimited: problem(
      'Over the tenant’s reads per second.',
      { rate: err('rate_limited', 'tenant acme is over its limit of 50 reads per second; retry after 1 s', { retry_after: 1 }) },
      { 'Retry-After': headerRef('RetryAfter'), ...rateHeaders },
    ),
    Unavailable: problem(
      'Redis or the broker did not answer within API_REQUEST_TIMEOUT_MS; try again later.',
      { broker: err('broker_unavailable', 'the broker did not accept the task: no ack within 2000 ms', { dependency: 'broker' }) },
      { 'Retry-After': headerRef('RetryAfter') },
    ),
  };

  const headers = {
    Location: { description: 'The task’s URL (its `status_url`).', required: true, schema: { type: 'string', format: 'uri' } },
    IdempotentReplayed: { description: '`true` when an Idempotency-Key replays an earlier submission.', schema: { type: 'string', enum: ['true'] } },
    RetryAfter: { description: 'Seconds to wait before trying again.', required: true, schema: { type: 'integer', minimum: 0 } },
    RateLimitPolicy: {
      description:
        'IETF draft-ietf-httpapi-ratelimit-headers: the policy, its quota and window in seconds, e.g. `"submits";q=10;w=1`. Present when the tenant has a rate limit.',
      schema: { type: 'string' },
      example: '"submits";q=10;w=1',
    },
    RateLimit: {
      description: 'IETF draft: requests remaining and seconds until the window resets, e.g. `"submits";r=0;t=1`. Present when the tenant has a rate limit.',
      schema: { type: 'string' },
      example: '"submits";r=7;t=1',
    },
    WWWAuthenticate: {
      description:
        'RFC 6750: `Bearer realm="agent-task-queue"`, with `error="invalid_request"` for a malformed header or `error="invalid_token"` for a bad key.',
      required: true,
      schema: { type: 'string' },
      example: 'Bearer realm="agent-task-queue", error="invalid_token"',
    },
    Allow: { description: 'The methods the path takes.', required: true, schema: { type: 'string' }, example: 'GET, POST' },
  };

  const parameters = {
    TaskId: {
      name: 'id',
      in: 'path',
      required: true,
      description: 'The task id.',
      schema: { type: 'string', format: 'uuid', pattern: TASK_ID_PATTERN },
      example: EXAMPLE_ID,
    },
    Tenant: { name: 'tenant', in: 'path', required: true, schema: { type: 'string', pattern: TENANT_PATTERN }, example: 'acme' },
    IdempotencyKey: {
      name: 'Idempotency-Key',
      in: 'header',
      required: false,
      description:
        'The same key with the same request, within IDEMPOTENCY_TTL_SECONDS (24 h), answers 202 with the task (`POST /workflows`: the workflow) the first request created (`Idempotent-Replayed: true`); with a different body, 422. Per tenant, and per route: a key of `POST /tasks` and one of `POST /workflows` are apart.',
      schema: { type: 'string', pattern: '^[\\x21-\\x7e]{1,255}$' },
      example: 'order-4711',
    },
    LastEventId: {
      name: 'Last-Event-ID',
      in: 'header',
      required: false,
      description: 'Resume after this event id: exactly the events after it, nothing lost, nothing repeated.',
      schema: { type: 'string', pattern: EVENT_ID_PATTERN },
      example: '1795325396513-0',
    },
  };

  // Every request may name its id, and every answer carries it (api/access-log.ts).
  (parameters as Record<string, Json>).RequestId = {
    name: 'X-Request-Id',
    in: 'header',
    required: false,
    description: 'The caller’s request id (1 to 128 visible ASCII characters), echoed in the answer and logged; otherwise the API makes one.',
    schema: { type: 'string', pattern: '^[\\x21-\\x7e]{1,128}$' },
  };
  (headers as Record<string, Json>).RequestId = {
    description: 'The request id: the caller’s `X-Request-Id` if acceptable, else a new UUID. It names the request’s access-log line.',
    required: true,
    schema: { type: 'string' },
  };
  const withRequestId = (r: Json) => {
    if (typeof r.$ref !== 'string') r.headers = { 'X-Request-Id': headerRef('RequestId'), ...(r.headers as Json | undefined) };
  };
  for (const item of Object.values(paths)) {
    for (const [method, op] of Object.entries(item)) {
      if (method === 'parameters' || method === 'description' || typeof op !== 'object' || op === null) continue;
      const o = op as { parameters?: Json[]; responses: Record<string, Json> };
      o.parameters = [...(o.parameters ?? []), paramRef('RequestId')];
      Object.values(o.responses).forEach(withRequestId);
    }
  }
  Object.values(responses as Record<string, Json>).forEach(withRequestId);

  return {
    openapi: '3.1.0',
    info: {
      title: 'Agent task queue',
      version: PRODUCT_VERSION,
      description:
        'Long-running AI-agent jobs over HTTP: submit a job and get a task id at once; poll it, wait for it or stream its events. Mirrors seed 004’s `POST /tasks` and `GET /tasks/{id}`.\n\nEvery error has one shape: `{"error": {"code", "message", "issues"?, "task_id"?, "status"?, "dependency"?, "retry_after"?}}` (the `Error` schema).',
    },
    jsonSchemaDialect: 'https://json-schema.org/draft/2020-12/schema',
    tags: [
      { name: 'tasks', description: 'Submit, read, follow and cancel tasks.' },
      { name: 'workflows', description: 'Fan-out / fan-in: steps that run when the steps they need are done.' },
      { name: 'dead letters', description: 'Tasks that failed after their attempts, and their redrive.' },
      { name: 'schedules', description: 'Cron schedules: each slot creates one task, exactly once.' },
      { name: 'tenants', description: 'The caller’s tenant.' },
      { name: 'admin', description: 'API keys and tenants’ limits (scope `admin`).' },
      { name: 'probes', description: 'Liveness and readiness, without a key.' },
      { name: 'docs', description: 'This document and its viewer, without a key.' },
      { name: 'agents', description: 'The MCP server for agents.' },
      { name: 'dashboard', description: 'The live dashboard’s files, without a key (the page asks for one when the API answers 401).' },
    ],
    security: [{ bearerAuth: [] }],
    paths,
    components: {
      schemas,
      responses,
      headers,
      parameters,
      securitySchemes: {
        bearerAuth: {
          type: 'http',
          scheme: 'bearer',
          bearerFormat: 'atq_ and 43 base64url characters',
          description: [
            '`Authorization: Bearer <key>` with `AUTH=keys`; with `AUTH=off` nothing is checked and every caller is the tenant `default`. A key belongs to a tenant and has scopes; each operation lists the one it needs:',
            '',
            ...Object.entries(SCOPE_TEXT).map(([s, text]) => `- \`${s}\`: ${text}`),
          ].join('\n'),
        },
      },
    },
  };
}

// --- /openapi.json and /docs ------------------------------------------------------------------

interface Asset {
  type: string;
  /** Read from swagger-ui-dist on first use; null for a file made here. */
  file: string | null;
}

/** The only files /docs/{file} serves. */
const DOCS_ASSETS: ReadonlyMap<string, Asset> = new Map([
  ['swagger-ui.css', { type: 'text/css; charset=utf-8', file: 'swagger-ui.css' }],
  ['swagger-ui-bundle.js', { type: 'text/javascript; charset=utf-8', file: 'swagger-ui-bundle.js' }],
  ['favicon-32x32.png', { type: 'image/png', file: 'favicon-32x32.png' }],
  ['favicon-16x16.png', { type: 'image/png', file: 'favicon-16x16.png' }],
  ['init.js', { type: 'text/javascript; charset=utf-8', file: null }],
]);

const DOCS_PAGE = `<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>Agent task queue: API reference</title>
    <link rel="stylesheet" href="/docs/swagger-ui.css">
    <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
    <link rel="icon" type="image/png" href="/docs/favicon-16x16.png" sizes="16x16">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="/docs/swagger-ui-bundle.js"></script>
    <script src="/docs/init.js"></script>
  </body>
</html>
`;

const DOCS_INIT = `window.ui = SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: 'BaseLayout',
});
`;

let swaggerDir: string | undefined;
const assetCache = new Map<string, Uint8Array>();

function assetBytes(name: string, asset: Asset): Uint8Array {
  const cached = assetCache.get(name);
  if (cached) return cached;
  let bytes: Uint8Array;
  if (asset.file === null) bytes = new TextEncoder().encode(DOCS_INIT);
  else {
    swaggerDir ??= dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
    bytes = readFileSync(join(swaggerDir, asset.file));
  }
  assetCache.set(name, bytes);
  return bytes;
}

/** GET /openapi.json, GET /docs and GET /docs/{file}; the document is built on first use. */
export function mountDocs(app: Hono<AppEnv>, build: () => Json): void {
  let doc: string | undefined;
  app.get('/openapi.json', (c) => {
    doc ??= JSON.stringify(build());
    return c.body(doc, 200, { 'Content-Type': 'application/json; charset=utf-8' });
  });
  app.get('/docs', (c) => c.html(DOCS_PAGE));
  app.get('/docs/:file', (c) => {
    const name = c.req.param('file');
    const asset = DOCS_ASSETS.get(name);
    if (!asset) throw new NotFoundError(`no file ${name.slice(0, 100)} in /docs`);
    return c.body(new Uint8Array(assetBytes(name, asset)), 200, { 'Content-Type': asset.type, 'Cache-Control': 'public, max-age=3600' });
  });
  const notAllowed = (c: Context<AppEnv>) => {
    throw new MethodNotAllowedError(c.req.method, 'GET');
  };
  for (const path of ['/openapi.json', '/docs', '/docs/:file']) app.all(path, notAllowed);
}
