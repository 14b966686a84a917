/**
 * GET /metrics (Prometheus text format, no API key, like the probes), GET /stats (scope
 * tasks:read), and the middleware that counts HTTP requests and submissions.
 */
import type { Context, Hono, MiddlewareHandler } from 'hono';
import { matchedRoutes } from 'hono/route';
import type { Backlog } from '../common/backlog.ts';
import { TooManyRequestsError } from '../common/errors.ts';
import { secondsSince, submitOutcomeOf, type Metrics, type SubmitOutcome } from '../common/metrics.ts';
import type { TaskStore } from '../common/store/port.ts';
import { toStatsView } from '../common/views.ts';
import type { AppEnv, Principal } from './auth.ts';

type Env = AppEnv;

/** The routes of this module and the methods each takes, for the 405s. */
export const OBSERVABILITY_METHODS: readonly [string, string][] = [
  ['/metrics', 'GET'],
  ['/stats', 'GET'],
];

/** The POST /tasks that reached submitTask, which counts them itself (source `http`). */
const submitted = new WeakSet<Request>();

/** Notes that a POST /tasks goes on to submitTask (called by its handler once the body is read, just before it). */
export function noteSubmitting(c: Context<Env>): void {
  submitted.add(c.req.raw);
}

/** The outcome of a POST /tasks refused before submitTask. */
function submitOutcome(c: Context<Env>): SubmitOutcome {
  if (c.error instanceof TooManyRequestsError) return submitOutcomeOf(c.error);
  return c.res.status >= 500 ? 'unavailable' : 'rejected';
}

/**
 * The route pattern of a request: the first route of its path that is not a catch-all
 * middleware, so a 401 from the auth middleware still counts under `/tasks`; `/*` when no
 * route has the path (a 404).
 */
function routeOf(c: Context<Env>): string {
  return matchedRoutes(c).find((r) => r.path !== '/*' && r.path !== '*')?.path ?? '/*';
}

/**
 * Counts every request by method, route pattern (so `/tasks/:id`, and `/*` for no route) and status, and times it. A POST /tasks
 * refused before its body was read as a task (no key, a bad body) counts as a submission of type `other` here; one that reached
 * submitTask is counted there, by its type.
 */
export function httpMetrics(metrics: Metrics): MiddlewareHandler<Env> {
  return async (c, next) => {
    const start = performance.now();
    await next();
    const route = routeOf(c);
    const method = c.req.method;
    metrics.httpRequests.inc({ method, route, status: String(c.res.status) });
    metrics.httpSeconds.observe({ method, route }, secondsSince(start));
    if (method === 'POST' && route === '/tasks' && !submitted.has(c.req.raw)) {
      const outcome = submitOutcome(c);
      metrics.submitted.inc({ type: 'other', outcome, source: 'http' });
      metrics.submitSeconds.observe({ outcome }, secondsSince(start));
    }
  };
}

export function mountObservability(
  app: Hono<Env>,
  deps: {
    store: TaskStore;
    metrics: Metrics | undefined;
    backlog: (() => Promise<Backlog>) | undefined;
    caller: (c: Context<Env>, scope: 'tasks:read') => Promise<Principal>;
  },
): void {
  const { store, metrics, caller } = deps;
  const backlog = deps.backlog ?? (() => Promise.resolve({ high: null, normal: null, low: null }));

  if (metrics) {
    app.get('/metrics', async (c) => {
      const { body, contentType } = await metrics.scrape();
      return c.body(body, 200, { 'Content-Type': contentType });
    });
  }

  app.get('/stats', async (c) => {
    const p = await caller(c, 'tasks:read');
    const [counts, queued, workers] = await Promise.all([store.countTasks(p.tenant), backlog(), store.workers()]);
    return c.json(toStatsView(p.tenant, counts, queued, workers));
  });
}
