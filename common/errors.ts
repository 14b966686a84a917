/**
 * One error hierarchy for the whole product. Code branches on `instanceof` or on `code`,
 * never on message text; `api/errors.ts` is the one place that maps these to HTTP answers.
 */

export interface FieldIssue {
  /** Dotted path of the offending field, e.g. `input.content`; empty for the whole body. */
  path: string;
  message: string;
}

export class AppError extends Error {
  /** Stable machine-readable code, snake_case. */
  readonly code: string;
  /** Whether the same operation may succeed if tried again later. */
  readonly retriable: boolean;

  constructor(code: string, message: string, opts: { cause?: unknown; retriable?: boolean } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = code;
    this.retriable = opts.retriable ?? false;
  }
}

/** A request body or parameter did not match its schema. */
export class ValidationError extends AppError {
  constructor(
    message: string,
    readonly issues: FieldIssue[] = [],
  ) {
    super('validation_failed', message);
  }
}

export class NotFoundError extends AppError {
  constructor(
    message: string,
    readonly taskId?: string,
  ) {
    super('not_found', message);
  }
}

export class MethodNotAllowedError extends AppError {
  constructor(
    method: string,
    /** The methods the route takes, for the Allow header. */
    readonly allow: string,
  ) {
    super('method_not_allowed', `${method} is not allowed here; use ${allow}`);
  }
}

export class PayloadTooLargeError extends AppError {
  constructor(readonly limitBytes: number) {
    super('payload_too_large', `request body is larger than ${limitBytes} bytes`);
  }
}

export class UnsupportedMediaTypeError extends AppError {
  constructor(contentType: string | undefined) {
    // A JSON type with another charset is refused for its charset: say so, not just "must be JSON".
    const charset = contentType && /^application\/(?:[\w.+-]+\+)?json\s*;/i.test(contentType) ? ' in UTF-8 (charset utf-8 or none)' : '';
    super('unsupported_media_type', `content-type must be application/json${charset}, got ${contentType ?? 'none'}`);
  }
}

/** An Idempotency-Key was used before for a different request: answer 422. */
export class IdempotencyKeyReusedError extends AppError {
  constructor(readonly taskId: string) {
    super('idempotency_key_reused', `this Idempotency-Key was used for a different request (task ${taskId})`);
  }
}

/** POST /workflows' Idempotency-Key was used before for a different request: answer 422, naming the workflow it started. */
export class WorkflowKeyReusedError extends AppError {
  constructor(readonly workflowId: string) {
    super('idempotency_key_reused', `this Idempotency-Key was used for a different request (workflow ${workflowId})`);
  }
}

/** No API key, or one that is unknown or revoked: answer 401 with WWW-Authenticate. */
export class UnauthorizedError extends AppError {
  constructor(
    message: string,
    /** RFC 6750's error attribute: absent when no credentials were sent at all. */
    readonly bearerError?: 'invalid_request' | 'invalid_token',
  ) {
    super('unauthorized', message);
  }
}

/** The key is valid but lacks the scope the route needs: answer 403. */
export class ForbiddenError extends AppError {
  constructor(readonly scope: string) {
    super('forbidden', `this API key lacks the scope ${scope}`);
  }
}

/**
 * Too many requests (`rate_limited`) or not enough quota units (`quota_exceeded`): answer 429
 * with Retry-After and, for a rate limit, the RateLimit-Policy and RateLimit headers.
 */
export class TooManyRequestsError extends AppError {
  constructor(
    code: 'rate_limited' | 'quota_exceeded',
    message: string,
    readonly retryAfterSeconds: number,
    /** Extra response headers (the IETF draft's RateLimit-Policy / RateLimit). */
    readonly headers: Record<string, string> = {},
  ) {
    super(code, message, { retriable: true });
  }
}

/** The client went away before its request was read (an aborted upload): routine, nobody to answer. */
export class ClientAbortedError extends AppError {
  constructor(message = 'the client closed the connection before the request was read', opts: { cause?: unknown } = {}) {
    super('client_aborted', message, opts);
  }
}

export type Dependency = 'redis' | 'broker';

/** A dependency (Redis or the broker) is unreachable or too slow: answer 503, try later. */
export class UnavailableError extends AppError {
  constructor(
    readonly dependency: Dependency,
    message: string,
    opts: { cause?: unknown } = {},
  ) {
    super(`${dependency}_unavailable`, message, { ...opts, retriable: true });
  }
}

/** A bad setting at start: the process prints it and exits 1. */
export class ConfigError extends AppError {
  constructor(readonly issues: FieldIssue[]) {
    super('invalid_config', `invalid configuration:\n${issues.map((i) => `  ${i.path}: ${i.message}`).join('\n')}`);
  }
}

/**
 * Thrown by a task handler (or built with {@link nonRetryable}) for a failure that another
 * attempt cannot fix, e.g. invalid input: the task fails at once instead of being retried.
 */
export class NonRetryableError extends AppError {
  constructor(message: string, code = 'non_retryable', opts: { cause?: unknown } = {}) {
    super(code, message, { ...opts, retriable: false });
  }
}

export const nonRetryable = (message: string, code?: string): NonRetryableError => new NonRetryableError(message, code);

/** A handler ran past its task type's timeout. Retryable: the next attempt may be faster. */
export class TaskTimeoutError extends AppError {
  constructor(readonly timeoutMs: number) {
    super('timeout', `task handler did not finish within ${timeoutMs} ms`, { retriable: true });
  }
}

/** The task was cancelled by a caller: the reason of the handler's AbortSignal. Never retried. */
export class TaskCancelledError extends AppError {
  constructor() {
    super('cancelled', 'the task was cancelled', { retriable: false });
  }
}

/** DELETE on a task that has already finished: answer 409. */
export class TaskFinishedError extends AppError {
  constructor(
    readonly taskId: string,
    readonly status: string,
  ) {
    super('task_finished', `task ${taskId} has already finished (${status}); only queued or running tasks can be cancelled`);
  }
}

/** A request that conflicts with the state of what it names (a rerun of a task still running, a cancel of a finished workflow): 409. */
export class ConflictError extends AppError {
  constructor(
    code: 'task_not_retryable' | 'workflow_finished',
    message: string,
    readonly details: { task_id?: string; status?: string } = {},
  ) {
    super(code, message);
  }
}

/** Rejects with `onTimeout()` when `promise` has not settled within `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
