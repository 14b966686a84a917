/** A worker's /metrics: a tiny node:http server on METRICS_PORT serving the process's registry. */
import { createServer, type Server } from 'node:http';
import { errorMessage } from './errors.ts';
import type { Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';

export interface MetricsServer {
  /** The port it listens on (the one asked for, or the one the OS chose for 0 in tests). */
  readonly port: number;
  close(): Promise<void>;
}

/** Serves GET /metrics on `port` (all interfaces unless `host`); anything else is a 404. */
export async function serveMetrics(metrics: Metrics, port: number, logger: Logger, host?: string): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(path === '/metrics' ? 405 : 404, { 'Content-Type': 'text/plain' }).end(path === '/metrics' ? 'GET only\n' : 'not found\n');
      return;
    }
    metrics.scrape().then(
      ({ body, contentType }) => res.writeHead(200, { 'Content-Type': contentType }).end(req.method === 'HEAD' ? undefined : body),
      (err: unknown) => {
        logger.warn('metrics scrape failed', { err: errorMessage(err) });
        res.writeHead(500, { 'Content-Type': 'text/plain' }).end('scrape failed\n');
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address();
  const actual = typeof addr === 'object' && addr ? addr.port : port;
  logger.info('metrics listening', { port: actual, path: '/metrics' });
  return {
    port: actual,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
