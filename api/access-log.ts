/**
 * One access-log line per HTTP request, and its request id: the caller's `X-Request-Id` if it
 * is 1–128 visible ASCII characters, otherwise a new UUID. The id is echoed as `X-Request-Id`
 * on every answer (errors and event streams included) and is `c.get('requestId')` for handlers.
 * The line is written when the answer starts (an event stream's at its 200, not at its end),
 * and names the route pattern, never the query string or the Authorization header.
 */
import { randomUUID } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import { matchedRoutes } from 'hono/route';
import type { Logger } from '../common/logger.ts';
import type { AppEnv } from './auth.ts';

const REQUEST_ID_RE = /^[\x21-\x7e]{1,128}$/;
const HEADER = 'X-Request-Id';

/** The caller's request id if it is acceptable, else a new one. */
export function requestIdOf(incoming: string | undefined): string {
  return incoming !== undefined && REQUEST_ID_RE.test(incoming) ? incoming : randomUUID();
}

/** The pattern of the route that answered (`/tasks/:id`), or the path when no route matched. */
function routeOf(c: Parameters<MiddlewareHandler<AppEnv>>[0]): string {
  for (const r of matchedRoutes(c)) if (r.path !== '*' && r.path !== '/*') return r.path;
  return c.req.path;
}

export function accessLog(logger: Logger): MiddlewareHandler<AppEnv> {
  // The level is fixed for the process: with LOG_LEVEL=warn this costs the request id only.
  const on = logger.enabled?.('info') ?? true;
  return async (c, next) => {
    const start = on ? performance.now() : 0;
    const id = requestIdOf(c.req.header('x-request-id'));
    c.set('requestId', id);
    c.header(HEADER, id);
    await next();
    // A handler's own Response (not built through c) does not carry the prepared header.
    if (!c.res.headers.has(HEADER)) c.header(HEADER, id);
    if (!on) return;
    logger.info('request', {
      method: c.req.method,
      route: routeOf(c),
      path: c.req.path,
      status: c.res.status,
      duration_ms: Math.round((performance.now() - start) * 10) / 10,
      request_id: id,
      tenant: c.get('principal')?.tenant,
    });
  };
}
