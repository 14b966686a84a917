/**
 * The one place that turns errors into HTTP answers, all in one JSON shape:
 * `{"error": {"code", "message", "issues"?, "task_id"?, "workflow_id"?, …}}`.
 */
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { z } from 'zod';
import {
  AppError,
  ClientAbortedError,
  ForbiddenError,
  TooManyRequestsError,
  UnauthorizedError,
  IdempotencyKeyReusedError,
  MethodNotAllowedError,
  NotFoundError,
  PayloadTooLargeError,
  TaskFinishedError,
  ConflictError,
  UnavailableError,
  UnsupportedMediaTypeError,
  ValidationError,
  WorkflowKeyReusedError,
  type FieldIssue,
} from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';

export interface ErrorBody {
  error: {
    code: string;
    message: string;
    issues?: FieldIssue[];
    task_id?: string;
    /** 422 of POST /workflows: the workflow the Idempotency-Key made. */
    workflow_id?: string;
    status?: string;
    dependency?: string;
    /** 429: seconds until the request may succeed (also in Retry-After). */
    retry_after?: number;
  };
}

/** Seconds a client should wait before retrying after a 503. */
export const RETRY_AFTER_SECONDS = 5;

export function zodIssues(err: z.ZodError, prefix: (string | number)[] = []): FieldIssue[] {
  return err.issues.map((i) => {
    const path = [...prefix, ...i.path].map(String).join('.');
    // zod names unknown keys in the message, not the path: put them in the path too.
    const keys = i.code === 'unrecognized_keys' ? i.keys.map((k) => (path ? `${path}.${k}` : k)).join(', ') : path;
    return { path: keys, message: i.message };
  });
}

export function validationError(err: z.ZodError, prefix: (string | number)[] = []): ValidationError {
  const issues = zodIssues(err, prefix);
  const first = issues[0];
  const summary = first ? `${first.path || 'body'}: ${first.message}` : 'invalid request';
  return new ValidationError(issues.length > 1 ? `${summary} (and ${issues.length - 1} more)` : summary, issues);
}

export function statusOf(err: unknown): ContentfulStatusCode {
  if (err instanceof ValidationError) return 400;
  if (err instanceof UnauthorizedError) return 401;
  if (err instanceof ForbiddenError) return 403;
  if (err instanceof TooManyRequestsError) return 429;
  // Nobody reads this answer; 400 keeps it out of the 5xx counts.
  if (err instanceof ClientAbortedError) return 400;
  if (err instanceof NotFoundError) return 404;
  if (err instanceof MethodNotAllowedError) return 405;
  if (err instanceof PayloadTooLargeError) return 413;
  if (err instanceof UnsupportedMediaTypeError) return 415;
  if (err instanceof IdempotencyKeyReusedError || err instanceof WorkflowKeyReusedError) return 422;
  if (err instanceof TaskFinishedError || err instanceof ConflictError) return 409;
  if (err instanceof UnavailableError) return 503;
  if (err instanceof HTTPException) return err.status;
  return 500;
}

export function errorBody(err: unknown): ErrorBody {
  if (err instanceof AppError) {
    const body: ErrorBody = { error: { code: err.code, message: err.message } };
    if (err instanceof ValidationError) body.error.issues = err.issues;
    if ((err instanceof NotFoundError || err instanceof IdempotencyKeyReusedError) && err.taskId) body.error.task_id = err.taskId;
    if (err instanceof WorkflowKeyReusedError) body.error.workflow_id = err.workflowId;
    if (err instanceof UnavailableError) body.error.dependency = err.dependency;
    if (err instanceof TooManyRequestsError) body.error.retry_after = err.retryAfterSeconds;
    if (err instanceof TaskFinishedError) {
      body.error.task_id = err.taskId;
      body.error.status = err.status;
    }
    if (err instanceof ConflictError) Object.assign(body.error, err.details);
    return body;
  }
  if (err instanceof HTTPException) return { error: { code: `http_${err.status}`, message: err.message || 'request failed' } };
  return { error: { code: 'internal', message: 'internal error' } };
}

export function renderError(c: Context, err: unknown, logger: Logger): Response {
  const status = statusOf(err);
  // The access log's id (api/access-log.ts), so the error line and the request's line are found together.
  const requestId = c.get('requestId') as string | undefined;
  if (status >= 500) {
    logger.error(status === 503 ? 'dependency unavailable' : 'request failed', {
      request_id: requestId,
      method: c.req.method,
      path: c.req.path,
      err: err instanceof Error ? err.message : String(err),
      stack: status === 500 && err instanceof Error ? err.stack : undefined,
    });
  }
  if (err instanceof ClientAbortedError)
    logger.debug('client went away before its request was read', { request_id: requestId, method: c.req.method, path: c.req.path });
  if (status === 503) c.header('Retry-After', String(RETRY_AFTER_SECONDS));
  if (err instanceof TooManyRequestsError) {
    c.header('Retry-After', String(err.retryAfterSeconds));
    for (const [name, value] of Object.entries(err.headers)) c.header(name, value);
  }
  if (err instanceof UnauthorizedError) {
    c.header('WWW-Authenticate', `Bearer realm="agent-task-queue"${err.bearerError ? `, error="${err.bearerError}"` : ''}`);
  }
  if (err instanceof MethodNotAllowedError) c.header('Allow', err.allow);
  return c.json(errorBody(err), status);
}
