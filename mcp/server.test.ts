/**
 * The MCP server, driven by the SDK's own client on the embedded stack (memory store and
 * broker, a worker in process, API keys on): in memory through createMcpServer, and over
 * streamable HTTP through the API's POST /mcp, where the tools run as the caller's key.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterEach, describe, expect, it } from 'vitest';
import { TaskClient } from '../client/index.ts';
import { newApiKey } from '../common/api-keys.ts';
import type { Scope } from '../common/store/port.ts';
import { embeddedStack } from '../test/support/embedded.ts';
import { defaultRegistry } from '../worker/task-types.ts';
import { createMcpServer } from './server.ts';

const SEED_TOOLS = ['submit_task', 'check_task', 'wait_for_tasks', 'get_task_results', 'list_tasks', 'cancel_task'];
const UNKNOWN = '77d3a865-702f-41af-b088-59422d14e60b';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function stack() {
  const { store, app } = await embeddedStack(cleanups, { registry: defaultRegistry(), app: { auth: { mode: 'keys', cacheMs: 0 } } });
  const keyFor = async (tenant: string, scopes: Scope[] = ['tasks:write', 'tasks:read']) => {
    const { secret, hash, key } = newApiKey(tenant, scopes, null);
    await store.createKey(key, hash);
    return secret;
  };
  /** Fetch into the app in process, as a server would hand it requests. */
  const fetch = async (input: string | URL | Request, init?: RequestInit) => app.fetch(new Request(input, init));
  return { store, app, keyFor, fetch };
}

async function connect(client: Client, transport: Parameters<Client['connect']>[0]) {
  await client.connect(transport);
  cleanups.push(() => client.close());
  return client;
}

/** An SDK client talking to createMcpServer in memory, the server's tools calling the app with `key`. */
async function inMemoryClient(s: Awaited<ReturnType<typeof stack>>, key: string) {
  const server = createMcpServer({ client: new TaskClient({ baseUrl: 'http://localhost', fetch: s.fetch, apiKey: key }) });
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  await server.connect(serverSide);
  cleanups.push(() => server.close());
  return connect(new Client({ name: 'test-agent', version: '1.0.0' }), clientSide);
}

/** An SDK client on POST /mcp over streamable HTTP, with `key` (or none). */
function httpTransport(s: Awaited<ReturnType<typeof stack>>, key: string | null) {
  return new StreamableHTTPClientTransport(new URL('http://localhost/mcp'), {
    fetch: s.fetch,
    requestInit: { headers: key ? { authorization: `Bearer ${key}` } : {} },
  });
}

/** The JSON of a tool result's text. */
function jsonOf(result: unknown): Record<string, unknown> {
  const r = result as CallToolResult;
  const first = r.content[0];
  expect(first?.type).toBe('text');
  return JSON.parse(first?.type === 'text' ? first.text : 'null') as Record<string, unknown>;
}

async function call(client: Client, name: string, args: Record<string, unknown>, onprogress?: (p: { progress: number; total?: number }) => void) {
  return (await client.callTool({ name, arguments: args }, undefined, onprogress ? { onprogress } : {})) as CallToolResult;
}

/** Seed 002's loop: three tasks submitted, waited for together, their results read. */
async function agentLoop(client: Client) {
  const contents = ['机械键盘降价了，很满意，推荐', 'the delivery was late and the box was broken', 'a calm and neutral note'];
  const ids: string[] = [];
  for (const content of contents) {
    const r = await call(client, 'submit_task', { type: 'agent', input: { content, simulate_ms: 20 }, user_id: 'coordinator' });
    expect(r.isError, JSON.stringify(r.content)).toBeFalsy();
    ids.push(String(jsonOf(r).task_id));
  }
  expect(new Set(ids).size).toBe(3);
  const progress: number[] = [];
  const waited = await call(client, 'wait_for_tasks', { task_ids: ids, max_wait_seconds: 20 }, (p) => {
    expect(p.total).toBe(3);
    progress.push(p.progress);
  });
  expect(waited.isError).toBeFalsy();
  expect(jsonOf(waited)).toEqual(Object.fromEntries(ids.map((id) => [id, 'done'])));
  expect(progress).toEqual([1, 2, 3]);
  const results = jsonOf(await call(client, 'get_task_results', { task_ids: ids }));
  expect(Object.keys(results).sort()).toEqual([...ids].sort());
  ids.forEach((id, i) => expect(results[id]).toMatchObject({ summary: expect.stringContaining(contents[i]?.slice(0, 5) ?? '?') as unknown }));
  return ids;
}

describe('createMcpServer (in memory)', () => {
  it('lists seed 002’s tools with input schemas from the zod schemas', async () => {
    const s = await stack();
    const client = await inMemoryClient(s, await s.keyFor('acme'));
    const { tools } = await client.listTools();
    const names = tools.map((t) => t.name);
    for (const name of SEED_TOOLS) expect(names).toContain(name);
    const submit = tools.find((t) => t.name === 'submit_task');
    expect(submit?.inputSchema).toMatchObject({ type: 'object', required: ['type', 'input'], properties: { priority: { enum: ['high', 'normal', 'low'] } } });
    expect(tools.find((t) => t.name === 'wait_for_tasks')?.inputSchema).toMatchObject({ required: ['task_ids'] });
    expect(tools.find((t) => t.name === 'check_task')?.annotations).toMatchObject({ readOnlyHint: true });
    expect(client.getInstructions()).toMatch(/submit_task/);
  });

  it('runs an agent loop: submits three tasks, waits for them, reads their results', async () => {
    const s = await stack();
    const client = await inMemoryClient(s, await s.keyFor('acme'));
    const ids = await agentLoop(client);
    const view = jsonOf(await call(client, 'check_task', { task_id: ids[0] }));
    expect(view).toMatchObject({ task_id: ids[0], tenant: 'acme', status: 'done', progress: 100 });
    const page = jsonOf(await call(client, 'list_tasks', { user_id: 'coordinator', status: 'done' }));
    expect((page.tasks as { task_id: string }[]).map((t) => t.task_id).sort()).toEqual([...ids].sort());
  });

  it('answers an API refusal as isError with the API’s error: unknown task, bad task input, finished task', async () => {
    const s = await stack();
    const client = await inMemoryClient(s, await s.keyFor('acme'));
    const unknown = await call(client, 'check_task', { task_id: UNKNOWN });
    expect(unknown.isError).toBe(true);
    expect(jsonOf(unknown)).toMatchObject({ error: { status: 404, code: 'not_found', message: `no task ${UNKNOWN}` } });

    const badInput = await call(client, 'submit_task', { type: 'agent', input: { content: 'x', temperature: 1 } });
    expect(badInput.isError).toBe(true);
    expect(jsonOf(badInput)).toMatchObject({ error: { status: 400, code: 'validation_failed', issues: [{ path: 'input.temperature' }] } });

    const badType = await call(client, 'submit_task', { type: 'no_such_type', input: {} });
    expect(jsonOf(badType)).toMatchObject({ error: { code: 'validation_failed', message: expect.stringContaining('unknown task type') as unknown } });

    const done = jsonOf(await call(client, 'submit_task', { type: 'agent', input: { content: 'hi' } }));
    await call(client, 'wait_for_tasks', { task_ids: [done.task_id] });
    const cancel = await call(client, 'cancel_task', { task_id: done.task_id });
    expect(cancel.isError).toBe(true);
    expect(jsonOf(cancel)).toMatchObject({ error: { status: 409, code: 'task_finished' } });
  });

  it('refuses bad arguments with isError naming the field, before any call to the API', async () => {
    const s = await stack();
    const client = await inMemoryClient(s, await s.keyFor('acme'));
    for (const [name, args, field] of [
      ['check_task', { task_id: 'not-a-uuid' }, 'task_id'],
      ['wait_for_tasks', { task_ids: [] }, 'task_ids'],
      ['wait_for_tasks', { task_ids: [UNKNOWN], max_wait_seconds: -1 }, 'max_wait_seconds'],
      ['submit_task', { input: {} }, 'type'],
      ['list_tasks', { status: 'sleeping' }, 'status'],
    ] as const) {
      const r = await call(client, name, args);
      expect(r.isError, `${name} ${JSON.stringify(args)}`).toBe(true);
      const first = r.content[0];
      expect(first?.type === 'text' ? first.text : '', `${name} ${JSON.stringify(args)}`).toMatch(
        new RegExp(`Invalid arguments for tool ${name}:[^]*\\b${field}\\b`),
      );
    }
    expect((await s.store.list({ tenant: 'acme', limit: 10 })).tasks).toEqual([]);
  });
});

describe('submit_workflow', () => {
  it('starts seed 001’s report template and a workflow of steps; the agent waits for the steps and reads them', async () => {
    const s = await stack();
    const client = await inMemoryClient(s, await s.keyFor('acme'));
    const tool = (await client.listTools()).tools.find((t) => t.name === 'submit_workflow');
    expect(tool?.inputSchema).toMatchObject({ type: 'object', properties: { steps: { type: 'array' }, template: { type: 'string' } } });

    const report = jsonOf(await call(client, 'submit_workflow', { template: 'seed_report', input: { topic: 'solid-state batteries' } }));
    expect(report).toMatchObject({ status: 'running', workflow_id: expect.any(String) as unknown });
    const steps = report.steps as Record<string, string>;
    expect(Object.keys(steps).sort()).toEqual(['financial', 'market', 'research', 'risk', 'writer']);
    const ids = Object.values(steps);
    expect(jsonOf(await call(client, 'wait_for_tasks', { task_ids: ids, max_wait_seconds: 30 }))).toEqual(Object.fromEntries(ids.map((id) => [id, 'done'])));
    const results = jsonOf(await call(client, 'get_task_results', { task_ids: ids }));
    expect(Object.keys(results).sort()).toEqual([...ids].sort());
    expect(JSON.stringify(results[steps.writer ?? ''])).toContain('solid-state batteries');

    const two = jsonOf(
      await call(client, 'submit_workflow', {
        name: 'two steps',
        steps: [
          { id: 'first', type: 'agent', input: { content: 'first part' } },
          { id: 'second', type: 'agent', input: { content: 'second part' }, needs: ['first'] },
        ],
      }),
    );
    const second = (two.steps as Record<string, string>).second ?? '';
    await call(client, 'wait_for_tasks', { task_ids: [second] });
    expect(jsonOf(await call(client, 'check_task', { task_id: second }))).toMatchObject({ status: 'done', workflow_id: two.workflow_id, step: 'second' });
  });

  it('answers a refused workflow as isError naming the field', async () => {
    const s = await stack();
    const client = await inMemoryClient(s, await s.keyFor('acme'));
    const unknownNeed = await call(client, 'submit_workflow', { steps: [{ id: 'a', type: 'agent', input: { content: 'x' }, needs: ['nowhere'] }] });
    expect(unknownNeed.isError).toBe(true);
    expect(jsonOf(unknownNeed)).toMatchObject({ error: { status: 400, code: 'validation_failed', message: expect.stringContaining('nowhere') as unknown } });
    const neither = await call(client, 'submit_workflow', { name: 'nothing' });
    expect(neither.isError).toBe(true);
    const first = neither.content[0];
    expect(first?.type === 'text' ? first.text : '').toMatch(/give either steps or template[^]*steps/);
  });
});

describe('POST /mcp (streamable HTTP)', () => {
  it('runs the agent loop as the caller’s key, and its tasks are that tenant’s', async () => {
    const s = await stack();
    const client = await connect(new Client({ name: 'test-agent', version: '1.0.0' }), httpTransport(s, await s.keyFor('acme')));
    const names = (await client.listTools()).tools.map((t) => t.name);
    for (const name of SEED_TOOLS) expect(names).toContain(name);
    const ids = await agentLoop(client);
    for (const id of ids) expect((await s.store.get(id))?.tenant).toBe('acme');

    // Another tenant's agent sees none of them; a read-only key cannot submit.
    const other = await connect(new Client({ name: 'other', version: '1.0.0' }), httpTransport(s, await s.keyFor('globex')));
    expect(jsonOf(await call(other, 'check_task', { task_id: ids[0] }))).toMatchObject({ error: { status: 404, code: 'not_found' } });
    expect(jsonOf(await call(other, 'list_tasks', {}))).toEqual({ tasks: [], next_cursor: null });
    const reader = await connect(new Client({ name: 'reader', version: '1.0.0' }), httpTransport(s, await s.keyFor('acme', ['tasks:read'])));
    const refused = await call(reader, 'submit_task', { type: 'agent', input: { content: 'x' } });
    expect(refused.isError).toBe(true);
    expect(jsonOf(refused)).toMatchObject({ error: { status: 403, code: 'forbidden', message: expect.stringContaining('tasks:write') as unknown } });
  });

  it('answers 401 without a valid key, and 405 to other methods', async () => {
    const s = await stack();
    for (const key of [null, 'atq_not_a_real_key_at_all_000000000000000000000']) {
      const err: unknown = await new Client({ name: 'anonymous', version: '1.0.0' }).connect(httpTransport(s, key)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(StreamableHTTPError);
      expect((err as StreamableHTTPError).code).toBe(401);
    }
    const res = await s.app.request('http://localhost/mcp', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer /);
    const key = await s.keyFor('acme');
    const get = await s.app.request('http://localhost/mcp', { headers: { authorization: `Bearer ${key}`, accept: 'text/event-stream' } });
    expect(get.status).toBe(405);
    expect(get.headers.get('allow')).toBe('POST');
  });
});
