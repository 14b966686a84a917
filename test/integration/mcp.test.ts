/**
 * The MCP server as users run it: `npx tsx run-mcp.ts` started by the SDK's stdio client, its
 * tools calling an API process (embedded, AUTH=keys) with the key in ATQ_API_KEY; and the API's
 * own POST /mcp over real HTTP with the SDK's streamable HTTP client.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../../infra/lib.ts';
import { killAll, startApi, type Child } from '../support/processes.ts';

const SEED_TOOLS = ['submit_task', 'check_task', 'wait_for_tasks', 'get_task_results', 'list_tasks', 'cancel_task'];

function jsonOf(result: unknown): Record<string, unknown> {
  const r = result as CallToolResult;
  const first = r.content[0];
  expect(r.isError, JSON.stringify(r.content)).toBeFalsy();
  return JSON.parse(first?.type === 'text' ? first.text : 'null') as Record<string, unknown>;
}

describe('the MCP server against a running API', () => {
  let api: { child: Child; url: string };
  let key = '';
  const clients: Client[] = [];
  beforeAll(async () => {
    api = await startApi({ BROKER: 'memory', AUTH: 'keys' });
    // The embedded store's bootstrap key (every scope) makes the agent's own key, as an operator would.
    const bootstrap = (await api.child.waitForLine(/^\s+(atq_\S+)\s*$/))[1] ?? '';
    const res = await fetch(`${api.url}/admin/keys`, {
      method: 'POST',
      headers: { authorization: `Bearer ${bootstrap}`, 'content-type': 'application/json' },
      body: JSON.stringify({ tenant: 'acme', scopes: ['tasks:write', 'tasks:read'], name: 'mcp agent' }),
    });
    expect(res.status).toBe(201);
    key = ((await res.json()) as { key: string }).key;
  });
  afterAll(async () => {
    for (const c of clients) await c.close().catch(() => undefined);
    await killAll();
  });

  it('stdio: npx tsx run-mcp.ts lists the tools, submits a task and reads it, as the key’s tenant', async () => {
    const stderr: string[] = [];
    const transport = new StdioClientTransport({
      command: 'npx',
      args: ['tsx', 'run-mcp.ts'],
      cwd: REPO_ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ATQ_API_URL: api.url, ATQ_API_KEY: key, LOG_FORMAT: 'json' },
      stderr: 'pipe',
    });
    transport.stderr?.on('data', (chunk: Buffer) => stderr.push(chunk.toString('utf8')));
    const client = new Client({ name: 'stdio-agent', version: '1.0.0' });
    clients.push(client);
    await client.connect(transport);

    const names = (await client.listTools()).tools.map((t) => t.name);
    for (const name of SEED_TOOLS) expect(names).toContain(name);
    const { task_id: id } = jsonOf(await client.callTool({ name: 'submit_task', arguments: { type: 'agent', input: { content: '机械键盘降价了' } } }));
    expect(typeof id).toBe('string');
    expect(jsonOf(await client.callTool({ name: 'wait_for_tasks', arguments: { task_ids: [id], max_wait_seconds: 30 } }))).toEqual({ [String(id)]: 'done' });
    const view = jsonOf(await client.callTool({ name: 'check_task', arguments: { task_id: id } }));
    expect(view).toMatchObject({ task_id: id, tenant: 'acme', status: 'done', result: { sentiment: 'positive' } });

    // Logs went to stderr (stdout carried the protocol, or nothing above would have parsed).
    const logs = stderr
      .join('')
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg?: string; role?: string });
    expect(logs).toContainEqual(expect.objectContaining({ msg: 'MCP server on stdio', role: 'mcp' }));
    await client.close();
  });

  it('streamable HTTP: POST /mcp runs the tools as the key, and answers 401 without one', async () => {
    const client = new Client({ name: 'http-agent', version: '1.0.0' });
    clients.push(client);
    await client.connect(new StreamableHTTPClientTransport(new URL(`${api.url}/mcp`), { requestInit: { headers: { authorization: `Bearer ${key}` } } }));
    const names = (await client.listTools()).tools.map((t) => t.name);
    for (const name of SEED_TOOLS) expect(names).toContain(name);
    const { task_id: id } = jsonOf(await client.callTool({ name: 'submit_task', arguments: { type: 'agent', input: { content: 'hello over http' } } }));
    jsonOf(await client.callTool({ name: 'wait_for_tasks', arguments: { task_ids: [id] } }));
    const results = jsonOf(await client.callTool({ name: 'get_task_results', arguments: { task_ids: [id] } }));
    expect(results[String(id)]).toMatchObject({ summary: expect.stringContaining('hello over http') as unknown });
    const view = jsonOf(await client.callTool({ name: 'check_task', arguments: { task_id: id } }));
    expect(view).toMatchObject({ task_id: id, tenant: 'acme', status: 'done' });

    const err: unknown = await new Client({ name: 'anonymous', version: '1.0.0' })
      .connect(new StreamableHTTPClientTransport(new URL(`${api.url}/mcp`)))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StreamableHTTPError);
    expect((err as StreamableHTTPError).code).toBe(401);
  });
});
