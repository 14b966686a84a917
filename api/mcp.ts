/**
 * POST /mcp: the MCP server (mcp/server.ts) over streamable HTTP, stateless (a server and a
 * transport per request, no session). Its tools run as the caller: they call this same app in
 * process, with the request's own Authorization header, so every tool call is authenticated,
 * scoped, rate limited and logged as the route it uses. The auth middleware has already
 * answered 401 to a request without a valid key (AUTH=keys).
 */
import type { Context, Hono } from 'hono';
import { WebStandardStreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js';
import { TaskClient } from '../client/index.ts';
import { MethodNotAllowedError, errorMessage } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { createMcpServer } from '../mcp/server.ts';
import type { AppEnv } from './auth.ts';

export interface McpDeps {
  logger: Logger;
  /** API_BODY_LIMIT: the largest JSON-RPC body read. */
  bodyLimit: number;
  /** Aborted when the process stops: running tool calls (a long wait_for_tasks) end. */
  shutdownSignal?: AbortSignal | undefined;
}

export function mountMcp(app: Hono<AppEnv>, deps: McpDeps): void {
  app.post('/mcp', async (c) => {
    const authorization = c.req.header('authorization');
    const client = new TaskClient({
      // The caller's own origin, so the status_url of a task is one the caller can reach.
      baseUrl: new URL(c.req.url).origin,
      fetch: async (input, init) => app.fetch(new Request(input, init)),
      // The inner requests log under the request id of this one.
      headers: { ...(authorization !== undefined ? { authorization } : {}), 'x-request-id': c.get('requestId') },
    });
    const server = createMcpServer({ client });
    const transport = new WebStandardStreamableHTTPServerTransport({ sessionIdGenerator: undefined, maxRequestBodySize: deps.bodyLimit });
    transport.onerror = (err) => deps.logger.debug('mcp request refused', { err: errorMessage(err) });
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      // Aborts the tool calls still running: their waits and event streams end.
      server.close().catch((err: unknown) => deps.logger.warn('could not close an MCP server', { err: errorMessage(err) }));
    };
    const stop = deps.shutdownSignal ? AbortSignal.any([c.req.raw.signal, deps.shutdownSignal]) : c.req.raw.signal;
    if (stop.aborted) close();
    else stop.addEventListener('abort', close, { once: true });
    await server.connect(transport);
    const res = await transport.handleRequest(c.req.raw);
    if (!res.body) {
      close();
      return res;
    }
    // An event stream ends once every answer of the request is sent: then nothing is left to run.
    const body = res.body.pipeThrough(new TransformStream<Uint8Array, Uint8Array>({ flush: close }));
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  });
  app.all('/mcp', (c: Context<AppEnv>) => {
    // Stateless: no session to open a GET stream on or to DELETE.
    throw new MethodNotAllowedError(c.req.method, 'POST');
  });
}
