/**
 * The MCP server for agents over stdio (`npm run mcp`): an MCP client (Claude Desktop, an
 * agent framework) starts it as a child process and speaks JSON-RPC on its stdin and stdout.
 * Its tools call the API at ATQ_API_URL with ATQ_API_KEY, through the typed client. stdout is the
 * protocol, so logs go to stderr only (as every process's do).
 */
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { TaskClient } from './client/index.ts';
import { errorMessage } from './common/errors.ts';
import { loadConfigOrExit, onShutdown, processLogger } from './common/wiring.ts';
import { createMcpServer } from './mcp/server.ts';

const config = loadConfigOrExit();
const logger = processLogger(config, 'mcp');
const client = new TaskClient({ baseUrl: config.mcp.apiUrl, apiKey: config.mcp.apiKey });
const server = createMcpServer({ client });
const transport = new StdioServerTransport();
transport.onerror = (err) => logger.warn('MCP message refused', { err: errorMessage(err) });

let closing: Promise<void> | undefined;
/** Ends the tool calls still running (their waits and streams), then the transport. */
const close = () => (closing ??= server.close());
onShutdown(logger, close);
// The client went away (it closes our stdin first): nothing is left to answer.
process.stdin.once('end', () => {
  void close().then(() => process.exit(0));
});

await server.connect(transport);
logger.info('MCP server on stdio', { api: config.mcp.apiUrl, with_api_key: config.mcp.apiKey !== undefined });
