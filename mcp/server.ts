/**
 * The MCP server for agents: seed 002's tools (submit_task, check_task, wait_for_tasks,
 * get_task_results, list_tasks, cancel_task, plus get_quota and get_statistics) over the HTTP
 * API, through the typed client. Its transports are the caller's: stdio (run-mcp.ts) or
 * streamable HTTP on the API's /mcp (api/mcp.ts). The tools run as the client's API key.
 */
import { PRODUCT_VERSION } from '../common/version.ts';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { RequestHandlerExtra } from '@modelcontextprotocol/sdk/shared/protocol.js';
import type { CallToolResult, ServerNotification, ServerRequest } from '@modelcontextprotocol/sdk/types.js';
import { AGENT_TOOL_ARGS, AGENT_TOOL_DESCRIPTIONS, TaskApiError, agentTools, callAgentTool, type AgentToolName, type TaskClient } from '../client/index.ts';

const INSTRUCTIONS = [
  'A queue for long-running jobs. Submit each independent job with submit_task (it answers a task id at once),',
  'then wait for them together with wait_for_tasks, and read what they produced with get_task_results.',
  'check_task shows one task’s progress and error; cancel_task stops one. A failed tool call says why (the API’s error code and message).',
].join(' ');

/** Whether a tool only reads: MCP clients may call those without asking the user. */
const READ_ONLY: ReadonlySet<AgentToolName> = new Set(['check_task', 'wait_for_tasks', 'get_task_results', 'list_tasks', 'get_quota', 'get_statistics']);

export interface McpServerOptions {
  /** The typed client the tools call: its base URL and API key decide where and as whom. */
  client: TaskClient;
}

/** JSON text, and the same value as structured content. */
function jsonResult(value: unknown, isError = false): CallToolResult {
  const structured = typeof value === 'object' && value !== null && !Array.isArray(value) ? { structuredContent: value as Record<string, unknown> } : {};
  return { content: [{ type: 'text', text: JSON.stringify(value) }], ...structured, ...(isError ? { isError: true } : {}) };
}

/** A failed call as the API's error shape: `{error: {code, message, status?, issues?, task_id?}}`. */
function errorResult(err: unknown): CallToolResult {
  if (err instanceof TaskApiError) {
    return jsonResult(
      {
        error: {
          code: err.code,
          message: err.message,
          status: err.status,
          ...(err.issues.length ? { issues: err.issues } : {}),
          ...(err.taskId ? { task_id: err.taskId } : {}),
          ...(err.retryAfterSeconds !== undefined ? { retry_after: err.retryAfterSeconds } : {}),
        },
      },
      true,
    );
  }
  const e = err instanceof Error ? err : new Error(String(err));
  return jsonResult({ error: { code: e.name === 'TypeError' ? 'invalid_arguments' : 'tool_failed', message: e.message } }, true);
}

/** An MCP server whose tools call the task API through `client`. */
export function createMcpServer({ client }: McpServerOptions): McpServer {
  const server = new McpServer({ name: 'agent-task-queue', version: PRODUCT_VERSION }, { instructions: INSTRUCTIONS });
  const tools = agentTools(client);
  for (const name of Object.keys(AGENT_TOOL_ARGS) as AgentToolName[]) {
    server.registerTool(
      name,
      {
        description: AGENT_TOOL_DESCRIPTIONS[name],
        inputSchema: AGENT_TOOL_ARGS[name],
        annotations: { readOnlyHint: READ_ONLY.has(name), destructiveHint: name === 'cancel_task', openWorldHint: false },
      },
      async (args: unknown, extra: RequestHandlerExtra<ServerRequest, ServerNotification>) => {
        // wait_for_tasks reports each task that finishes, when the caller asked for progress.
        const token = extra._meta?.progressToken;
        const total = name === 'wait_for_tasks' ? ((args as { task_ids?: unknown[] }).task_ids?.length ?? 0) : 0;
        let finished = 0;
        const onFinished =
          token === undefined
            ? undefined
            : (id: string, status: string) => {
                finished++;
                extra
                  .sendNotification({
                    method: 'notifications/progress',
                    params: { progressToken: token, progress: finished, total, message: `${id}: ${status}` },
                  })
                  .catch(() => undefined);
              };
        try {
          return jsonResult(await callAgentTool(tools, name, args, { signal: extra.signal, ...(onFinished ? { onFinished } : {}) }));
        } catch (err) {
          return errorResult(err);
        }
      },
    );
  }
  return server;
}
