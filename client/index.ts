/**
 * The typed client of the task API: submit, read, stream, wait for, cancel and list tasks.
 * It needs only fetch (Node 20+, browsers, any runtime with web streams); the result-topic
 * subscriber for downstream services is in results.ts.
 */
import { backoffMs, sleep as pause } from '../common/backoff.ts';
import type { Priority, TaskError, TaskStatus } from '../common/task.ts';
import type {
  AcceptedView,
  QuotaView,
  StatsView,
  WorkerView,
  TaskEventData,
  TaskEventName,
  TaskEventView,
  TaskListView,
  TaskView,
  WorkflowAcceptedView,
  WorkflowView,
} from '../common/views.ts';
import type { workflowStepsBody, workflowTemplateBody } from '../common/workflow-schemas.ts';
import { traceHeaders } from '../common/tracing.ts';
import { parseSse, type SseMessage } from './sse.ts';
import type { z } from 'zod';
import { AGENT_TOOL_ARGS, type AgentToolName } from './tools.ts';

export type { Priority, TaskError, TaskStatus };

// --- the wire types: declared once, in common/views.ts, where the server builds them ----------

export type { TaskView, TaskEventData };
export type TaskList = TaskListView;
export type TaskEventType = TaskEventName;
/** One entry of a task's history: an SSE event of GET /tasks/:id/events, or of `history`. */
export type TaskEvent = TaskEventView;

const EVENT_TYPES: ReadonlySet<string> = new Set<TaskEventType>(['status', 'progress', 'log', 'partial', 'done', 'failed', 'cancelled']);
const TERMINAL_EVENTS: ReadonlySet<TaskEventType> = new Set<TaskEventType>(['done', 'failed', 'cancelled']);
const TERMINAL_STATUSES: ReadonlySet<TaskStatus> = new Set<TaskStatus>(['done', 'failed', 'cancelled']);

/** The seed's form (runs the `agent` type) or the general form. */
export type SubmitRequest = { user_id: string; content: string } | { type: string; input: unknown; user_id?: string; priority?: Priority };

/**
 * 202: the task is on its way. `status` is `queued`, except when an Idempotency-Key replays an
 * earlier submission: then it is that task's status now.
 */
export interface SubmitAccepted extends AcceptedView {
  finished: false;
}

/** 200: `waitSeconds` was given and the task finished within it. */
export interface SubmitFinished {
  finished: true;
  task_id: string;
  task: TaskView;
}

export type SubmitAnswer = SubmitAccepted | SubmitFinished;

/** POST /workflows: steps with the steps they need, or a built-in template (`seed_report`) and its input. */
export type WorkflowRequest = z.input<typeof workflowStepsBody> | z.input<typeof workflowTemplateBody>;
/** 202 of POST /workflows: step id → task id, and where to follow it. */
export type WorkflowAccepted = WorkflowAcceptedView;
export type { WorkflowView };

export interface ListFilter {
  status?: TaskStatus;
  user_id?: string;
  type?: string;
  limit?: number;
  /** `next_cursor` of the previous page. */
  cursor?: string;
}

/** GET /quota: the quota of the API key's tenant (`units` 0 = unlimited; then `remaining` is null). */
export type TenantQuota = QuotaView;

/** GET /stats: the tenant's task counts by status and type, the backlog per priority, the live workers. */
export type QueueStats = StatsView;
export type { WorkerView };

export interface ApiIssue {
  /** Dotted path of the offending field, e.g. `input.content`. */
  path: string;
  message: string;
}

// --- errors -------------------------------------------------------------------------------

/**
 * The API answered 4xx or 5xx. Branch on `status` or `code` (or on the subclasses
 * {@link TaskAuthError} and {@link TaskRateLimitError}), never on the message.
 */
export class TaskApiError extends Error {
  override readonly name: string = 'TaskApiError';
  readonly issues: ApiIssue[];
  readonly taskId: string | undefined;
  /** From `Retry-After` (503, 429), or the body's `retry_after`, in seconds. */
  readonly retryAfterSeconds: number | undefined;

  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    extra: { issues?: ApiIssue[]; taskId?: string; retryAfterSeconds?: number } = {},
  ) {
    super(message);
    this.issues = extra.issues ?? [];
    this.taskId = extra.taskId;
    this.retryAfterSeconds = extra.retryAfterSeconds;
  }
}

/**
 * 401 (no API key, or a malformed, unknown or revoked one) or 403 (the key lacks a scope).
 * Never retried: the same key gets the same answer.
 */
export class TaskAuthError extends TaskApiError {
  override readonly name: string = 'TaskAuthError';
  /** Whether the request carried an `Authorization` header (a 401 without one: set `apiKey`). */
  readonly keySent: boolean;
  /** 403: the scope the key lacks, e.g. `tasks:write`, when the API names it. */
  readonly scope: string | undefined;

  constructor(status: number, code: string, message: string, extra: { keySent: boolean; scope?: string; retryAfterSeconds?: number }) {
    super(status, code, message, extra);
    this.keySent = extra.keySent;
    this.scope = extra.scope;
  }
}

/** A `RateLimit` header of the IETF draft, e.g. `"submits";r=0;t=1`, with its `RateLimit-Policy`. */
export interface RateLimitInfo {
  /** The policy's name, e.g. `submits`. */
  policy: string;
  /** `r`: requests left in the window. */
  remaining: number | undefined;
  /** `t`: seconds until the window resets. */
  resetSeconds: number | undefined;
  /** `q` of the policy: requests per window. */
  quota: number | undefined;
  /** `w` of the policy: the window, in seconds. */
  windowSeconds: number | undefined;
}

/**
 * 429: `rate_limited` (too many requests for now; retried by the client where it may, see
 * `maxRetryAfterMs`) or `quota_exceeded` (the tenant's quota window is spent; never retried,
 * `retryAfterSeconds` says when it resets and may be hours). Another code (a proxy's 429 is
 * `http_429`) is treated as a rate limit.
 */
export class TaskRateLimitError extends TaskApiError {
  override readonly name: string = 'TaskRateLimitError';
  /** When the request may succeed, from `retryAfterSeconds`; undefined when the API did not say. */
  readonly retryAt: Date | undefined;
  /** The IETF draft headers of a rate limit, when sent. */
  readonly rateLimit: RateLimitInfo | undefined;

  constructor(code: string, message: string, extra: { retryAfterSeconds?: number; rateLimit?: RateLimitInfo }) {
    super(429, code, message, extra);
    this.retryAt = extra.retryAfterSeconds === undefined ? undefined : new Date(Date.now() + extra.retryAfterSeconds * 1000);
    this.rateLimit = extra.rateLimit;
  }

  /** The tenant's quota is spent until its window resets: waiting a little will not help. */
  get quotaExceeded(): boolean {
    return this.code === 'quota_exceeded';
  }
}

/** wait() gave up: the task was not finished within `timeoutMs`. It may still finish later. */
export class TaskWaitTimeoutError extends Error {
  override readonly name = 'TaskWaitTimeoutError';

  constructor(
    readonly taskId: string,
    readonly timeoutMs: number,
  ) {
    super(`task ${taskId} did not finish within ${timeoutMs} ms`);
  }
}

/** The event stream is unusable: not `text/event-stream`, bad event data, or it keeps closing empty. */
export class TaskStreamError extends Error {
  override readonly name = 'TaskStreamError';

  constructor(
    readonly taskId: string,
    message: string,
  ) {
    super(message);
  }
}

// --- the client ---------------------------------------------------------------------------

export interface TaskClientOptions {
  /** Where the API is, e.g. `http://localhost:8000`; a path prefix is kept. */
  baseUrl: string;
  /** Default: the global fetch. */
  fetch?: typeof fetch;
  /**
   * The API key (`atq_…`), sent as `Authorization: Bearer <key>` with every request, the event
   * streams included. The client reads nothing from the environment: callers typically pass
   * `apiKey: process.env.ATQ_API_KEY`. Undefined or empty sends no key (enough for a server
   * with AUTH=off). Takes precedence over an `authorization` in `headers`.
   */
  apiKey?: string;
  /** Sent with every request. */
  headers?: Record<string, string>;
  /** How often wait() asks when it cannot stream. Default 1000 ms. */
  pollIntervalMs?: number;
  /**
   * Retries of an idempotent call (a read, a cancel, a submit with an `idempotencyKey`) after
   * a 503 or a network error, waiting `Retry-After` (at most 5 s) or a backoff, and after a
   * 429 `rate_limited`, waiting its `Retry-After` (see `maxRetryAfterMs`). Also bounds
   * reconnects of a stream that closes empty. Default 3.
   */
  retries?: number;
  /**
   * The longest `Retry-After` of a 429 `rate_limited` that a retry waits out; a longer one is
   * thrown at once as a {@link TaskRateLimitError}, for the caller to decide. Default 30 000 ms.
   * A 429 `quota_exceeded`, a 401 and a 403 are never retried.
   */
  maxRetryAfterMs?: number;
  /**
   * A stream that sends nothing, not even a keep-alive, for this long is dropped and opened
   * again. Default 45 000 ms: three missed keep-alives.
   */
  streamIdleMs?: number;
}

const MAX_RETRY_DELAY_MS = 5000;
/** Long-poll length of wait()'s fallback: short enough for proxies' idle timeouts. */
const LONG_POLL_SECONDS = 20;

interface Call {
  method: 'GET' | 'POST' | 'DELETE';
  path: string;
  query?: Record<string, string | number | undefined>;
  body?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal | undefined;
  /** Whether the call may be sent again after a 503, a 429 `rate_limited` or a network error. */
  retry: boolean;
  /** Called before each attempt, and before each wait between attempts. */
  onAttempt?: () => void;
  onRetryWait?: () => void;
}

export class TaskClient {
  private readonly baseUrl: string;
  private readonly fetch: typeof fetch;
  private readonly headers: Record<string, string>;
  private readonly apiKey: string | undefined;
  private readonly pollIntervalMs: number;
  private readonly retries: number;
  private readonly maxRetryAfterMs: number;
  private readonly streamIdleMs: number;

  constructor(opts: TaskClientOptions) {
    new URL(opts.baseUrl); // throws a TypeError now rather than at the first call
    this.baseUrl = opts.baseUrl.replace(/\/+$/, '');
    const f = opts.fetch ?? globalThis.fetch;
    this.fetch = (input, init) => f(input, init);
    this.headers = opts.headers ?? {};
    const key = opts.apiKey?.trim();
    // A pasted `Bearer atq_…`, or two keys: fail now rather than with a 401 at the first call.
    if (key && /\s/.test(key)) throw new TypeError('apiKey must be the bare key (atq_…), without "Bearer " or spaces');
    this.apiKey = key || undefined;
    this.pollIntervalMs = opts.pollIntervalMs ?? 1000;
    this.retries = opts.retries ?? 3;
    this.maxRetryAfterMs = opts.maxRetryAfterMs ?? 30_000;
    this.streamIdleMs = opts.streamIdleMs ?? 45_000;
  }

  /**
   * POST /tasks. With `waitSeconds` (0-60) the API holds the answer until the task finishes
   * or the time is up, and answers `{ finished: true, task }` if it finished.
   */
  async submit(req: SubmitRequest, opts: { idempotencyKey?: string; waitSeconds?: number; signal?: AbortSignal } = {}): Promise<SubmitAnswer> {
    const key = opts.idempotencyKey;
    const res = await this.send({
      method: 'POST',
      path: '/tasks',
      query: { wait: opts.waitSeconds },
      body: req,
      headers: key === undefined ? {} : { 'idempotency-key': key },
      signal: opts.signal,
      // Without a key a retry could create a second task: the API (or a proxy in front of it,
      // whose 503 says nothing about what reached the API) may have taken the first request.
      // With one, the API answers the retry with the task the first request created.
      retry: key !== undefined,
    });
    if (res.status === 200) {
      const task = (await res.json()) as TaskView;
      return { finished: true, task_id: task.task_id, task };
    }
    return { ...((await res.json()) as Omit<SubmitAccepted, 'finished'>), finished: false };
  }

  /** GET /tasks/:id; `waitSeconds` (0-60) holds the answer until the task is finished or the time is up. */
  async get(id: string, opts: { history?: boolean; waitSeconds?: number; signal?: AbortSignal } = {}): Promise<TaskView> {
    const query = { history: opts.history ? 'true' : undefined, wait: opts.waitSeconds };
    const res = await this.send({ method: 'GET', path: taskPath(id), query, signal: opts.signal, retry: true });
    return (await res.json()) as TaskView;
  }

  /**
   * DELETE /tasks/:id: the task as cancelled. A task that had already finished answers 409.
   * Retried like any idempotent call, so if an answer is lost the retry may get that 409 for
   * a task this very call cancelled.
   */
  async cancel(id: string, opts: { signal?: AbortSignal } = {}): Promise<TaskView> {
    const res = await this.send({ method: 'DELETE', path: taskPath(id), signal: opts.signal, retry: true });
    return (await res.json()) as TaskView;
  }

  /**
   * GET /quota: the tenant of the API key, its quota units per window, and what is spent and
   * left of the current window.
   */
  async quota(opts: { signal?: AbortSignal } = {}): Promise<TenantQuota> {
    const res = await this.send({ method: 'GET', path: '/quota', signal: opts.signal, retry: true });
    return (await res.json()) as TenantQuota;
  }

  /**
   * GET /stats: counts of the tenant's tasks by status and by type (of its newest 2000;
   * `tasks.truncated` says when there are more), the request backlog per priority (null
   * where the broker cannot tell) and the live workers.
   */
  async stats(opts: { signal?: AbortSignal } = {}): Promise<QueueStats> {
    const res = await this.send({ method: 'GET', path: '/stats', signal: opts.signal, retry: true });
    return (await res.json()) as QueueStats;
  }

  /**
   * POST /workflows: every step becomes a task at once (those with needs wait for them); answers
   * each step's task id. Retried (a 503, a 429 `rate_limited`, a network error) only with an
   * `idempotencyKey`, as submit: the API answers the retry with the workflow the first request
   * started. Without one a retry could start a second workflow.
   */
  async submitWorkflow(req: WorkflowRequest, opts: { idempotencyKey?: string; signal?: AbortSignal } = {}): Promise<WorkflowAccepted> {
    const key = opts.idempotencyKey;
    const res = await this.send({
      method: 'POST',
      path: '/workflows',
      body: req,
      headers: key === undefined ? {} : { 'idempotency-key': key },
      signal: opts.signal,
      retry: key !== undefined,
    });
    return (await res.json()) as WorkflowAccepted;
  }

  /** GET /workflows/:id: the workflow's status and progress, and each step's, with its result once done. */
  async getWorkflow(id: string, opts: { signal?: AbortSignal } = {}): Promise<WorkflowView> {
    const res = await this.send({ method: 'GET', path: `/workflows/${encodeURIComponent(id)}`, signal: opts.signal, retry: true });
    return (await res.json()) as WorkflowView;
  }

  /** One page of GET /tasks, newest first. */
  async list(filter: ListFilter = {}, opts: { signal?: AbortSignal } = {}): Promise<TaskList> {
    const res = await this.send({ method: 'GET', path: '/tasks', query: { ...filter }, signal: opts.signal, retry: true });
    return (await res.json()) as TaskList;
  }

  /** Every task that matches, page after page (`limit` is the page size). */
  async *listAll(filter: ListFilter = {}, opts: { signal?: AbortSignal } = {}): AsyncGenerator<TaskView> {
    let cursor = filter.cursor;
    do {
      const page = await this.list({ ...filter, cursor }, opts);
      yield* page.tasks;
      cursor = page.next_cursor ?? undefined;
    } while (cursor !== undefined);
  }

  /**
   * The task's events from GET /tasks/:id/events, from the start or after `lastEventId`. A
   * connection that drops before the terminal event is opened again with `Last-Event-ID`, so
   * no event is lost or repeated; iteration ends after the terminal event (done, failed or
   * cancelled).
   */
  stream(id: string, opts: { lastEventId?: string; signal?: AbortSignal } = {}): AsyncGenerator<TaskEvent> {
    return this.events(id, opts.lastEventId, opts.signal, this.retries);
  }

  /**
   * Resolves with the task once it is finished (done, failed or cancelled: check `status`).
   * Follows the event stream; if that is unavailable (no SSE route, a proxy that buffers or
   * cuts it, network errors) it polls GET /tasks/:id instead. Rejects with a
   * {@link TaskWaitTimeoutError} after `timeoutMs`, and with the signal's reason on abort.
   */
  async wait(id: string, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<TaskView> {
    const { timeoutMs } = opts;
    const deadline = new AbortController();
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => deadline.abort(new TaskWaitTimeoutError(id, timeoutMs)), timeoutMs);
    const signal = opts.signal ? AbortSignal.any([opts.signal, deadline.signal]) : deadline.signal;
    try {
      return (await this.waitByStream(id, signal)) ?? (await this.waitByPolling(id, signal));
    } catch (err) {
      // A custom fetch may reject an abort with an error of its own: report why we stopped.
      throw signal.aborted ? signal.reason : err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The finished task, or undefined when streaming did not work out. */
  private async waitByStream(id: string, signal: AbortSignal): Promise<TaskView | undefined> {
    try {
      // No reconnect after a connection that closed or went idle empty: that smells of a
      // proxy in the way, and polling is the better bet.
      for await (const event of this.events(id, undefined, signal, 0)) if (TERMINAL_EVENTS.has(event.event)) break;
    } catch (err) {
      if (signal.aborted) throw err;
      // Refused rather than unavailable: polling would be refused just the same.
      if (err instanceof TaskAuthError || (err instanceof TaskRateLimitError && err.quotaExceeded)) throw err;
      return undefined;
    }
    const task = await this.get(id, { signal });
    return TERMINAL_STATUSES.has(task.status) ? task : undefined;
  }

  private async waitByPolling(id: string, signal: AbortSignal): Promise<TaskView> {
    for (;;) {
      const started = Date.now();
      const task = await this.get(id, { waitSeconds: LONG_POLL_SECONDS, signal });
      if (TERMINAL_STATUSES.has(task.status)) return task;
      // A server that answers at once (no long polling) is still asked at most once per interval.
      await sleep(this.pollIntervalMs - (Date.now() - started), signal);
    }
  }

  /** @param maxEmpty connections in a row that may end without an event before giving up */
  private async *events(id: string, lastEventId: string | undefined, signal: AbortSignal | undefined, maxEmpty: number): AsyncGenerator<TaskEvent> {
    let lastId = lastEventId;
    let empty = 0;
    let retryMs: number | undefined;
    for (;;) {
      const conn = new AbortController();
      const connSignal = signal ? AbortSignal.any([signal, conn.signal]) : conn.signal;
      // Also runs while waiting for the headers: some proxies hold the whole answer back.
      let idle: ReturnType<typeof setTimeout> | undefined;
      const touch = () => {
        clearTimeout(idle);
        idle = setTimeout(() => conn.abort(), this.streamIdleMs);
      };
      touch();
      let reading = false;
      let received = false;
      try {
        const res = await this.send({
          method: 'GET',
          path: `${taskPath(id)}/events`,
          headers: { accept: 'text/event-stream', ...(lastId ? { 'last-event-id': lastId } : {}) },
          signal: connSignal,
          retry: true,
          // Waits between retries (a 429's Retry-After may be long) are not silence of the stream.
          onAttempt: touch,
          onRetryWait: () => clearTimeout(idle),
        });
        const type = res.headers.get('content-type') ?? '';
        if (!res.body || !/^text\/event-stream\b/i.test(type)) {
          throw new TaskStreamError(id, `GET /tasks/${id}/events answered ${type || 'no content type'}, not text/event-stream`);
        }
        const body = res.body.pipeThrough(
          new TransformStream<Uint8Array, Uint8Array>({
            transform(chunk, ctl) {
              touch();
              ctl.enqueue(chunk);
            },
          }),
        );
        reading = true;
        for await (const msg of parseSse(body, connSignal)) {
          if (msg.retry !== undefined) retryMs = msg.retry;
          if (msg.id !== undefined) lastId = msg.id || undefined;
          const event = toTaskEvent(id, msg);
          if (!event) continue;
          received = true;
          yield event;
          if (TERMINAL_EVENTS.has(event.event)) return;
        }
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        // A connection that broke while being read, or went silent, is opened again. Other
        // errors are final: send() has already retried what it may.
        if (err instanceof TaskStreamError || !(reading || conn.signal.aborted)) throw err;
      } finally {
        clearTimeout(idle);
        conn.abort();
      }
      empty = received ? 0 : empty + 1;
      if (empty > maxEmpty) throw new TaskStreamError(id, `the event stream of task ${id} ended ${empty} time(s) in a row without an event`);
      // Never at once, even after a good connection: a server that keeps closing must not spin us.
      await sleep(retryMs ?? backoffMs(empty + 1, 250, MAX_RETRY_DELAY_MS), signal);
    }
  }

  private async send(call: Call): Promise<Response> {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(call.query ?? {})) if (v !== undefined) params.set(k, String(v));
    const qs = params.toString();
    const url = `${this.baseUrl}${call.path}${qs ? `?${qs}` : ''}`;
    const headers = new Headers({ accept: 'application/json' });
    for (const [k, v] of Object.entries({ ...this.headers, ...call.headers })) headers.set(k, v);
    if (this.apiKey !== undefined) headers.set('authorization', `Bearer ${this.apiKey}`);
    // The caller's trace context (W3C traceparent), when it runs inside a span: the task's trace continues it.
    for (const [k, v] of Object.entries(traceHeaders())) headers.set(k, v);
    const keySent = headers.has('authorization');
    let body: string | undefined;
    if (call.body !== undefined) {
      headers.set('content-type', 'application/json');
      body = JSON.stringify(call.body);
    }
    for (let attempt = 1; ; attempt++) {
      const mayRetry = call.retry && attempt <= this.retries;
      let res: Response;
      call.onAttempt?.();
      try {
        res = await this.fetch(url, { method: call.method, headers, body, signal: call.signal });
      } catch (err) {
        if (!mayRetry || call.signal?.aborted) throw err;
        call.onRetryWait?.();
        await sleep(backoffMs(attempt, 250, MAX_RETRY_DELAY_MS), call.signal);
        continue;
      }
      if (res.ok) return res;
      const error = await toApiError(res, keySent);
      if (!mayRetry) throw error;
      const after = error.retryAfterSeconds;
      let waitMs: number;
      if (res.status === 503) {
        waitMs = after === undefined ? backoffMs(attempt, 250, MAX_RETRY_DELAY_MS) : Math.min(after * 1000, MAX_RETRY_DELAY_MS);
      } else if (error instanceof TaskRateLimitError && !error.quotaExceeded) {
        // The API says when: wait that long, or not at all if it is longer than the caller allows.
        waitMs = after === undefined ? backoffMs(attempt, 250, MAX_RETRY_DELAY_MS) : after * 1000;
        if (waitMs > this.maxRetryAfterMs) throw error;
      } else {
        // 401, 403, quota_exceeded and the other 4xx answer the same again; other 5xx are not ours to repeat.
        throw error;
      }
      call.onRetryWait?.();
      await sleep(waitMs, call.signal);
    }
  }
}

const taskPath = (id: string): string => `/tasks/${encodeURIComponent(id)}`;

function toTaskEvent(taskId: string, msg: SseMessage): TaskEvent | undefined {
  // Unknown names (a newer server's, or the default "message") are skipped, not fatal.
  if (!EVENT_TYPES.has(msg.event)) return undefined;
  let data: unknown;
  try {
    data = JSON.parse(msg.data);
  } catch {
    throw new TaskStreamError(taskId, `event ${msg.id ?? '(no id)'} (${msg.event}) of task ${taskId} has data that is not JSON`);
  }
  return { id: msg.id ?? '', event: msg.event, data } as TaskEvent;
}

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Seconds, or an HTTP date. */
function parseRetryAfter(header: string | null): number | undefined {
  if (header === null) return undefined;
  if (/^\s*\d+\s*$/.test(header)) return Number(header);
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

async function toApiError(res: Response, keySent: boolean): Promise<TaskApiError> {
  const text = await res.text().catch(() => '');
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const e = isRecord(body) ? body.error : undefined;
  const ours = isRecord(e) && typeof e.code === 'string' && typeof e.message === 'string' ? e : undefined;
  // Not our API's shape: a proxy's page, most likely.
  const detail = text.trim().slice(0, 200);
  const code = ours ? String(ours.code) : `http_${res.status}`;
  const message = ours ? String(ours.message) : `HTTP ${res.status}${detail ? `: ${detail}` : ''}`;
  // The body's copy too: a browser sees Retry-After only if CORS exposes it.
  const bodyRetryAfter = ours && typeof ours.retry_after === 'number' && ours.retry_after >= 0 ? Math.ceil(ours.retry_after) : undefined;
  const retryAfterSeconds = parseRetryAfter(res.headers.get('retry-after')) ?? bodyRetryAfter;

  if (res.status === 401 || res.status === 403) {
    const scope = res.status === 403 ? /\bscope\s+([\w:.*/-]+)/i.exec(message)?.[1] : undefined;
    const advice =
      res.status === 403
        ? `use an API key that has ${scope ? `the scope ${scope}` : 'the scope this needs'}`
        : keySent
          ? 'the API key was refused (malformed, unknown or revoked): check the apiKey of the TaskClient'
          : 'no API key was sent: set the apiKey of the TaskClient (e.g. apiKey: process.env.ATQ_API_KEY)';
    return new TaskAuthError(res.status, code, `${message} (HTTP ${res.status} ${code}): ${advice}`, { keySent, scope, retryAfterSeconds });
  }
  if (res.status === 429) {
    const when =
      retryAfterSeconds === undefined ? undefined : `${formatSeconds(retryAfterSeconds)} (at ${new Date(Date.now() + retryAfterSeconds * 1000).toISOString()})`;
    const advice =
      code === 'quota_exceeded'
        ? `the tenant's quota is spent${when ? `; it resets in ${when}` : ''}. Not retried: try again ${when ? 'then' : 'later'}, see quota()`
        : `too many requests; try again ${when ? `in ${when}` : 'shortly'}`;
    return new TaskRateLimitError(code, `${message} (HTTP 429 ${code}): ${advice}`, { retryAfterSeconds, rateLimit: parseRateLimit(res.headers) });
  }
  return new TaskApiError(res.status, code, message, {
    issues: ours && Array.isArray(ours.issues) ? (ours.issues as ApiIssue[]) : undefined,
    taskId: ours && typeof ours.task_id === 'string' ? ours.task_id : undefined,
    retryAfterSeconds,
  });
}

/** `42 s`, `12 min`, `3 h 5 min`. */
function formatSeconds(s: number): string {
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  const min = Math.round(s / 60);
  return `${Math.floor(min / 60)} h${min % 60 ? ` ${min % 60} min` : ''}`;
}

/** The members of a structured-field list like `"submits";r=0;t=1, "reads";r=5`: name → parameters. */
function parseSfList(header: string | null): Map<string, Record<string, string>> {
  const out = new Map<string, Record<string, string>>();
  for (const member of header?.split(',') ?? []) {
    const m = /^\s*(?:"([^"]*)"|([A-Za-z*][\w:.*/-]*))\s*(.*)$/.exec(member);
    if (!m) continue;
    const params: Record<string, string> = {};
    for (const p of (m[3] ?? '').split(';')) {
      const [k, v] = p.split('=', 2).map((x) => x.trim());
      if (k && v !== undefined) params[k] = v;
    }
    out.set(m[1] ?? m[2] ?? '', params);
  }
  return out;
}

/** The first policy of the IETF draft's `RateLimit`, with its `RateLimit-Policy`; undefined without those headers. */
function parseRateLimit(headers: Headers): RateLimitInfo | undefined {
  const limits = parseSfList(headers.get('ratelimit'));
  const policies = parseSfList(headers.get('ratelimit-policy'));
  const policy = [...limits.keys(), ...policies.keys()][0];
  if (policy === undefined) return undefined;
  const limit = limits.get(policy) ?? {};
  const num = (v: string | undefined) => (v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined);
  const def = policies.get(policy) ?? {};
  return { policy, remaining: num(limit.r), resetSeconds: num(limit.t), quota: num(def.q), windowSeconds: num(def.w) };
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts. */
async function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  signal?.throwIfAborted();
  if (ms > 0) await pause(ms, signal);
  signal?.throwIfAborted();
}

// --- seed 002's agent tools ----------------------------------------------------------------

/**
 * The tool set of seed 002's async agent over this API, to hand to an agent framework: it
 * submits tasks, goes on thinking, waits for the ones it needs and collects their results.
 * The tools call `client`, so they send its API key and retry as it does. They throw the
 * client's errors, whose messages are written for the model: a 401/403 says which key or
 * scope is wrong, a 429 whether it is a rate limit or a spent quota and when to try again.
 */
export function agentTools(client: TaskClient) {
  return {
    /** Submits a task and answers its id at once. */
    submit_task: async (
      type: string,
      input: unknown,
      opts: Omit<Extract<SubmitRequest, { type: string }>, 'type' | 'input'> & { idempotency_key?: string } = {},
    ): Promise<string> => {
      const { idempotency_key: idempotencyKey, ...rest } = opts;
      return (await client.submit({ type, input, ...rest }, idempotencyKey === undefined ? {} : { idempotencyKey })).task_id;
    },

    /**
     * Waits until every task is finished, or `maxWaitSeconds` has passed; answers each task's
     * status then (a task still running after the wait is not an error).
     */
    wait_for_tasks: async (
      ids: string[],
      maxWaitSeconds?: number,
      opts: { signal?: AbortSignal; onFinished?: (id: string, status: TaskStatus) => void } = {},
    ): Promise<Record<string, TaskStatus>> => {
      const timeoutMs = maxWaitSeconds === undefined ? undefined : maxWaitSeconds * 1000;
      const { signal } = opts;
      const statusOf = async (id: string): Promise<[string, TaskStatus]> => {
        try {
          const { status } = await client.wait(id, { timeoutMs, signal });
          opts.onFinished?.(id, status);
          return [id, status];
        } catch (err) {
          if (err instanceof TaskWaitTimeoutError) return [id, (await client.get(id, { signal })).status];
          throw err;
        }
      };
      return Object.fromEntries(await Promise.all(ids.map(statusOf)));
    },

    /** The results of the tasks among `ids` that are done, by task id; the others are left out. */
    get_task_results: async (ids: string[]): Promise<Record<string, unknown>> => {
      const tasks = await Promise.all(ids.map(async (id) => [id, await client.get(id)] as const));
      return Object.fromEntries(tasks.filter(([, t]) => t.status === 'done').map(([id, t]) => [id, t.result]));
    },

    /** One task's status, progress and result. */
    check_task: (id: string): Promise<TaskView> => client.get(id),

    /** One page of tasks, newest first. */
    list_tasks: (filter?: ListFilter): Promise<TaskList> => client.list(filter),

    /** Cancels a queued or running task; answers it, now `cancelled` (a finished one is a 409). */
    cancel_task: (id: string): Promise<TaskView> => client.cancel(id),

    /** Starts a workflow (steps with their needs, or a template); answers its id and each step's task id. */
    submit_workflow: (req: WorkflowRequest, opts: { idempotency_key?: string } = {}): Promise<WorkflowAccepted> =>
      client.submitWorkflow(req, opts.idempotency_key === undefined ? {} : { idempotencyKey: opts.idempotency_key }),

    /** The tenant's quota: units per window, spent, remaining (null when unlimited) and when it resets. */
    get_quota: (): Promise<TenantQuota> => client.quota(),

    /** How busy the queue is: the tenant's tasks by status and type, the backlog per priority, the live workers. */
    get_statistics: (): Promise<QueueStats> => client.stats(),
  };
}

export type AgentTools = ReturnType<typeof agentTools>;

export { AGENT_TOOL_ARGS, AGENT_TOOL_DESCRIPTIONS, toolDefinitions, type AgentToolArgs, type AgentToolName, type ToolDefinition } from './tools.ts';

/**
 * Runs one agent tool by name with the JSON arguments a model sent (a function call of
 * {@link toolDefinitions}): checks them against the tool's schema, then calls `tools`.
 * Answers a JSON value (an object), or throws: a TypeError naming the wrong argument, or the
 * client's error. `onFinished` hears each task wait_for_tasks sees finish.
 */
export async function callAgentTool(
  tools: AgentTools,
  name: string,
  args: unknown,
  opts: { signal?: AbortSignal; onFinished?: (id: string, status: TaskStatus) => void } = {},
): Promise<unknown> {
  const parse = <S extends z.ZodType>(schema: S): z.output<S> => {
    const parsed = schema.safeParse(args ?? {});
    if (parsed.success) return parsed.data;
    const issues = parsed.error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(arguments)'}: ${i.message}`);
    throw new TypeError(`invalid arguments for ${name}: ${issues.join('; ')}`);
  };
  const tool = name as AgentToolName;
  switch (tool) {
    case 'submit_task': {
      const { type, input, ...rest } = parse(AGENT_TOOL_ARGS.submit_task);
      return { task_id: await tools.submit_task(type, input, rest) };
    }
    case 'check_task':
      return tools.check_task(parse(AGENT_TOOL_ARGS.check_task).task_id);
    case 'wait_for_tasks': {
      const a = parse(AGENT_TOOL_ARGS.wait_for_tasks);
      return tools.wait_for_tasks(a.task_ids, a.max_wait_seconds, opts);
    }
    case 'get_task_results':
      return tools.get_task_results(parse(AGENT_TOOL_ARGS.get_task_results).task_ids);
    case 'list_tasks':
      return tools.list_tasks(parse(AGENT_TOOL_ARGS.list_tasks));
    case 'cancel_task':
      return tools.cancel_task(parse(AGENT_TOOL_ARGS.cancel_task).task_id);
    case 'submit_workflow': {
      const { idempotency_key } = parse(AGENT_TOOL_ARGS.submit_workflow);
      // As the model sent it (but the key, a header): the API checks the form it is and names what is wrong.
      const { idempotency_key: _key, ...req } = args as WorkflowRequest & { idempotency_key?: string };
      return tools.submit_workflow(req, idempotency_key === undefined ? {} : { idempotency_key });
    }
    case 'get_quota':
      parse(AGENT_TOOL_ARGS.get_quota);
      return tools.get_quota();
    case 'get_statistics':
      parse(AGENT_TOOL_ARGS.get_statistics);
      return tools.get_statistics();
    default:
      throw new TypeError(`unknown tool ${JSON.stringify(name)}; the tools are ${Object.keys(AGENT_TOOL_ARGS).join(', ')}`);
  }
}
