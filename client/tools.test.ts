/**
 * The agent tools' JSON-schema definitions for LLM function calling, and callAgentTool, which
 * runs a model's function call: the schemas must accept the calls the tools take and refuse
 * the ones the tools refuse.
 */
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { TaskApiError, TaskClient, agentTools, callAgentTool, toolDefinitions } from './index.ts';
import { embeddedStack } from '../test/support/embedded.ts';
import { defaultRegistry } from '../worker/task-types.ts';

interface ValidateFunction {
  (data: unknown): boolean;
  errors?: { instancePath: string; message?: string }[] | null;
}
// JSON Schema 2020-12 (what z.toJSONSchema writes), with the ajv that the OpenAPI validator uses (as api/openapi.test.ts does).
const fromValidator = createRequire(createRequire(import.meta.url).resolve('@seriousme/openapi-schema-validator'));
const Ajv2020 = (fromValidator('ajv/dist/2020.js') as { default: new (opts: object) => { compile(schema: object): ValidateFunction } }).default;
const addFormats = (fromValidator('ajv-formats') as { default: (ajv: unknown) => void }).default;
const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);

const ID = '77d3a865-702f-41af-b088-59422d14e60b';
const ID2 = '0b6b0f4e-93c1-4a57-9a43-6f1f0c6f1b21';

const byName = () => new Map(toolDefinitions().map((d) => [d.name, d]));
const validator = (name: string): ValidateFunction => {
  const def = byName().get(name as never);
  if (!def) throw new Error(`no tool ${name}`);
  return ajv.compile(def.parameters);
};

describe('toolDefinitions', () => {
  it('defines every agent tool as {name, description, parameters: a JSON schema of an object}', () => {
    const defs = toolDefinitions();
    const tools = agentTools(new TaskClient({ baseUrl: 'http://api.test' }));
    expect(defs.map((d) => d.name).sort()).toEqual(Object.keys(tools).sort());
    for (const name of ['submit_task', 'check_task', 'wait_for_tasks', 'get_task_results', 'list_tasks', 'cancel_task'])
      expect(byName().has(name as never), name).toBe(true);
    for (const d of defs) {
      expect(Object.keys(d).sort()).toEqual(['description', 'name', 'parameters']);
      expect(d.name).toMatch(/^[a-z_]{1,64}$/);
      expect(d.description.length).toBeGreaterThan(20);
      expect(d.parameters).toMatchObject({ type: 'object' });
      expect(d.parameters).not.toHaveProperty('$schema');
      // JSON all the way: what a model API receives is what we built.
      expect(JSON.parse(JSON.stringify(d))).toEqual(d);
    }
    expect(byName().get('submit_task')?.parameters).toMatchObject({ required: ['type', 'input'], additionalProperties: false });
    expect(byName().get('wait_for_tasks')?.parameters).toMatchObject({ required: ['task_ids'] });
  });

  it('validates the calls the tools take, and refuses the ones they refuse', () => {
    const good: [string, unknown][] = [
      ['submit_task', { type: 'agent', input: { content: '机械键盘降价了' } }],
      ['submit_task', { type: 'stock_screening_workflow', input: { sector: 'Technology', limit: 5 }, user_id: 'u1', priority: 'high' }],
      ['check_task', { task_id: ID }],
      ['wait_for_tasks', { task_ids: [ID, ID2], max_wait_seconds: 60 }],
      ['wait_for_tasks', { task_ids: [ID] }],
      ['get_task_results', { task_ids: [ID] }],
      ['list_tasks', {}],
      ['list_tasks', { status: 'done', limit: 10 }],
      ['cancel_task', { task_id: ID }],
      ['get_quota', {}],
      ['submit_workflow', { template: 'seed_report', input: { topic: 'new energy vehicles' } }],
      [
        'submit_workflow',
        {
          name: 'two steps',
          steps: [
            { id: 'a', type: 'agent', input: { content: 'x' } },
            { id: 'b', type: 'agent', input: { content: 'y' }, needs: ['a'] },
          ],
        },
      ],
    ];
    for (const [name, args] of good) {
      const validate = validator(name);
      expect(validate(args), `${name} ${JSON.stringify(args)}: ${JSON.stringify(validate.errors)}`).toBe(true);
    }
    const bad: [string, unknown][] = [
      ['submit_task', { type: 'agent' }],
      ['submit_task', { type: 'Agent!', input: {} }],
      ['submit_task', { type: 'agent', input: {}, priority: 'urgent' }],
      ['submit_task', { type: 'agent', input: {}, temperature: 1 }],
      ['check_task', { task_id: 'not-a-uuid' }],
      ['wait_for_tasks', { task_ids: [] }],
      ['wait_for_tasks', { task_ids: [ID], max_wait_seconds: 100_000 }],
      ['get_task_results', {}],
      ['list_tasks', { limit: 0 }],
      ['get_statistics', { extra: true }],
      ['submit_workflow', { steps: [{ id: 'a', type: 'agent' }] }],
      ['submit_workflow', { steps: [{ id: 'a b', type: 'agent', input: {} }] }],
      ['submit_workflow', { template: 'seed_report', priority: 'high' }],
    ];
    for (const [name, args] of bad) expect(validator(name)(args), `${name} ${JSON.stringify(args)}`).toBe(false);
  });
});

describe('callAgentTool', () => {
  const accepted = {
    task_id: ID,
    status: 'queued',
    type: 'agent',
    status_url: `http://api.test/tasks/${ID}`,
    downgraded: false,
    created_at: '2026-11-22T02:14:38.611Z',
  };

  it('runs a function call: checks the arguments, calls the API, answers JSON', async () => {
    const bodies: unknown[] = [];
    const fetch: typeof globalThis.fetch = async (input, init) => {
      const req = new Request(input, init);
      expect(new URL(req.url).pathname).toBe('/tasks');
      bodies.push(await req.json());
      return new Response(JSON.stringify(accepted), { status: 202, headers: { 'content-type': 'application/json' } });
    };
    const tools = agentTools(new TaskClient({ baseUrl: 'http://api.test', fetch }));
    const out = await callAgentTool(tools, 'submit_task', { type: 'agent', input: { content: 'hi' }, user_id: 'u1' });
    expect(out).toEqual({ task_id: ID });
    expect(bodies).toEqual([{ type: 'agent', input: { content: 'hi' }, user_id: 'u1', priority: 'normal' }]);
  });

  it('sends idempotency_key as the Idempotency-Key header: the same call again answers the same task and workflow', async () => {
    const cleanups: (() => Promise<unknown>)[] = [];
    try {
      const { app } = await embeddedStack(cleanups, { registry: defaultRegistry(), startWorker: false });
      const keys: (string | null)[] = [];
      const fetch: typeof globalThis.fetch = async (input, init) => {
        const req = new Request(input, init);
        keys.push(req.headers.get('idempotency-key'));
        return app.request(req);
      };
      const tools = agentTools(new TaskClient({ baseUrl: 'http://localhost', fetch }));
      const task = { type: 'agent', input: { content: 'hi' }, idempotency_key: 'agent-turn-7' };
      const first = await callAgentTool(tools, 'submit_task', task);
      expect(await callAgentTool(tools, 'submit_task', task)).toEqual(first);
      expect(await callAgentTool(tools, 'submit_task', { ...task, idempotency_key: undefined })).not.toEqual(first);
      const wf = { template: 'seed_report', input: { topic: 'keyboards' }, idempotency_key: 'agent-turn-7' };
      const started = (await callAgentTool(tools, 'submit_workflow', wf)) as { workflow_id: string };
      expect(((await callAgentTool(tools, 'submit_workflow', wf)) as { workflow_id: string }).workflow_id).toBe(started.workflow_id);
      expect(keys).toEqual(['agent-turn-7', 'agent-turn-7', null, 'agent-turn-7', 'agent-turn-7']);
      await expect(callAgentTool(tools, 'submit_task', { ...task, idempotency_key: 'tab\there' })).rejects.toThrow(
        /invalid arguments for submit_task: idempotency_key: must be 1 to 255 visible ASCII characters/,
      );
    } finally {
      while (cleanups.length > 0) await cleanups.pop()?.();
    }
  });

  it('names the wrong argument, and the unknown tool, without calling the API', async () => {
    const fetch: typeof globalThis.fetch = () => Promise.reject(new Error('no call expected'));
    const tools = agentTools(new TaskClient({ baseUrl: 'http://api.test', fetch }));
    await expect(callAgentTool(tools, 'wait_for_tasks', { task_ids: ['nope'] })).rejects.toThrow(/invalid arguments for wait_for_tasks: task_ids\.0: /);
    await expect(callAgentTool(tools, 'check_task', {})).rejects.toThrow(/task_id/);
    await expect(callAgentTool(tools, 'sleep', {})).rejects.toThrow(/unknown tool "sleep"; the tools are submit_task, /);
    // Neither form, or both: the JSON schema cannot say it, the check does.
    await expect(callAgentTool(tools, 'submit_workflow', { name: 'empty' })).rejects.toThrow(/submit_workflow: steps: give either steps or template/);
    await expect(callAgentTool(tools, 'submit_workflow', { template: 'seed_report', steps: [{ id: 'a', type: 'agent', input: {} }] })).rejects.toThrow(
      /give either steps or template/,
    );
  });

  it('passes the API’s refusal on as the client’s error', async () => {
    const fetch: typeof globalThis.fetch = () =>
      Promise.resolve(
        new Response(JSON.stringify({ error: { code: 'not_found', message: `no task ${ID}` } }), {
          status: 404,
          headers: { 'content-type': 'application/json' },
        }),
      );
    const tools = agentTools(new TaskClient({ baseUrl: 'http://api.test', fetch, retries: 0 }));
    const err: unknown = await callAgentTool(tools, 'check_task', { task_id: ID }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TaskApiError);
    expect(err).toMatchObject({ status: 404, code: 'not_found' });
  });
});
