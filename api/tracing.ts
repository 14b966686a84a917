/**
 * One server span per HTTP request, continuing an incoming W3C `traceparent` (or starting a
 * trace). Everything the request does (the submit's producer span, store calls, a cancel's
 * result publish) runs inside it. Skipped entirely when the process exports no traces.
 */
import type { MiddlewareHandler } from 'hono';
import { routePath } from 'hono/route';
import { SpanKind, SpanStatusCode, contextFrom, inSpan, isTracing } from '../common/tracing.ts';
import type { AppEnv } from './auth.ts';

export const traceRequests: MiddlewareHandler<AppEnv> = async (c, next) => {
  if (!isTracing()) return next();
  const parent = contextFrom(c.req.header());
  await inSpan(c.req.method, { kind: SpanKind.SERVER, parent, attributes: { 'http.request.method': c.req.method, 'url.path': c.req.path } }, async (span) => {
    await next();
    // The route pattern is known once routing ran; ids stay out of the span name.
    const route = routePath(c, -1);
    span.updateName(`${c.req.method} ${route}`);
    span.setAttribute('http.route', route);
    span.setAttribute('http.response.status_code', c.res.status);
    const tenant = c.get('principal') as { tenant?: string } | undefined;
    if (tenant?.tenant) span.setAttribute('atq.tenant', tenant.tenant);
    if (c.res.status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
  });
};
