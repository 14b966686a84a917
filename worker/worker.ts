/**
 * A member of the worker consumer group: takes request messages, claims the task in the
 * store (the idempotent step), runs the handler of its type with a renewed lease, records
 * the outcome, publishes the result, and only then acknowledges the message.
 */
import type { Broker, Delivery, Subscription } from '../common/broker/port.ts';
import { backoffMs, retrying } from '../common/backoff.ts';
import { AppError, NonRetryableError, TaskCancelledError, TaskTimeoutError, UnavailableError, errorMessage } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { groupFor, requestTopicFor, resultOutgoing } from '../common/messages.ts';
import type { HandlerContext, TaskRegistry, TaskType } from '../common/registry.ts';
import type { CancelWatch, TaskStore, TransitionCode } from '../common/store/port.ts';
import { PRIORITIES, requestMessageSchema, type HandlerEvent, type Priority, type TaskError, type TaskRecord } from '../common/task.ts';
import { PriorityGate } from './priority-gate.ts';

export interface WorkerOptions {
  id: string;
  /** Base request topic: the worker consumes the topic of each priority (requestTopicFor). */
  requestTopic: string;
  resultTopic: string;
  /** Base consumer group (groupFor gives each priority's group). */
  group: string;
  /** Tasks this worker runs at once, all priorities together. */
  concurrency: number;
  /** Lease on a running task; renewed every third of it. */
  leaseMs: number;
  /** How long shutdown waits for running tasks. */
  shutdownGraceMs: number;
  /** Default attempts per task type. */
  maxAttempts: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /** Default time one attempt may take. */
  taskTimeoutMs: number;
}

export interface WorkerDeps {
  broker: Broker;
  store: TaskStore;
  registry: TaskRegistry;
  logger: Logger;
  options: WorkerOptions;
}

export type WorkerState = 'created' | 'running' | 'draining' | 'stopped';

/** What happened to one delivery, for logs and tests. */
export type Outcome = 'done' | 'failed' | 'retry' | 'duplicate' | 'busy' | 'lost' | 'poison' | 'republished' | 'cancelled';

/** Store calls the worker must not lose to a short Redis blip. */
const storeRetry = { tries: 5, baseMs: 200, maxMs: 2000, retriable: (e: unknown) => e instanceof UnavailableError };

export class Worker {
  private state: WorkerState = 'created';
  private subscriptions: Subscription[] = [];
  private gate: PriorityGate | undefined;
  private cancelWatch: CancelWatch | undefined;
  /** Running handlers by task id. */
  private readonly controllers = new Map<string, AbortController>();
  private stopping: Promise<void> | undefined;
  /** Counters since start, for logs and the status endpoint. */
  readonly stats = { done: 0, failed: 0, retried: 0, duplicates: 0, cancelled: 0, handlerRuns: 0 };

  constructor(private readonly deps: WorkerDeps) {}

  get currentState(): WorkerState {
    return this.state;
  }

  /** Deliveries in hand: running, or waiting for a slot. */
  get inFlight(): number {
    return this.subscriptions.reduce((n, s) => n + s.inFlight, 0);
  }

  async start(): Promise<void> {
    if (this.state !== 'created') throw new Error(`worker is ${this.state}`);
    const { broker, options, logger } = this.deps;
    this.state = 'running';
    // Cancellations reach the worker that runs the task through the store, whatever the broker.
    this.cancelWatch = await this.deps.store.watchCancellations((id) => {
      const c = this.controllers.get(id);
      if (c && !c.signal.aborted) {
        logger.info('cancel requested; aborting the handler', { task_id: id });
        c.abort(new TaskCancelledError());
      }
    });
    // One subscription per priority; the gate hands the shared slots to the highest waiting.
    const gate = (this.gate = new PriorityGate(options.concurrency));
    const lane = (p: Priority) => async (d: Delivery) => {
      await gate.acquire(p);
      try {
        await this.handle(d);
      } finally {
        gate.release();
      }
    };
    // Each lane may hold one delivery more than the slots, so that when a slot frees a
    // high-priority message is already waiting at the gate, not still being fetched.
    this.subscriptions = await Promise.all(
      PRIORITIES.map((p) =>
        broker.subscribe(requestTopicFor(options.requestTopic, p), groupFor(options.group, p), lane(p), { concurrency: options.concurrency + 1 }),
      ),
    );
    logger.info('worker started', { worker: options.id, group: options.group, topic: options.requestTopic, concurrency: options.concurrency });
  }

  /** Processes one delivery. Resolving acknowledges it; throwing gets it redelivered. */
  async handle(d: Delivery): Promise<Outcome> {
    const { store, registry, options } = this.deps;
    let body: unknown;
    try {
      body = JSON.parse(d.body);
    } catch {
      return this.poison(d, 'not_json', 'the body is not JSON');
    }
    const parsed = requestMessageSchema.safeParse(body);
    if (!parsed.success) {
      const first = parsed.error.issues[0];
      return this.poison(d, 'schema_mismatch', `not a request message: ${first ? `${first.path.join('.')}: ${first.message}` : 'invalid'}`);
    }
    const msg = parsed.data;
    const log = this.deps.logger.child({ task_id: msg.task_id, type: msg.type });

    const claim = await store.claim(msg.task_id, options.id, options.leaseMs);
    switch (claim.outcome) {
      case 'missing':
        return this.poison(d, 'unknown_task', `no record for task ${msg.task_id} (expired or never created)`);
      case 'busy':
        log.debug('task is held by another worker or not due; message dropped', { status: claim.task.status, worker: claim.task.worker });
        return 'busy';
      case 'terminal':
        // The worker that finished it may have died before publishing the result.
        if (!claim.task.resultPublished) {
          await this.publishResult(claim.task);
          log.info('published the result of a finished task on redelivery', { status: claim.task.status });
          return 'republished';
        }
        this.stats.duplicates++;
        return 'duplicate';
      case 'claimed':
        break;
    }

    const task = claim.task;
    const type = registry.get(task.type);
    if (!type) {
      return this.finishFailed(d, task, { code: 'unknown_type', message: `no handler for task type ${task.type}`, retriable: false }, log);
    }
    return this.run(d, task, type, log);
  }

  /** A message that can never be processed: to the dead-letter topic with the reason, then acknowledged. */
  private async poison(d: Delivery, code: string, reason: string): Promise<Outcome> {
    this.deps.logger.error('poison message sent to the dead-letter topic', { key: d.key, topic: d.topic, code, reason });
    await this.deadLetter(d, code, reason);
    return 'poison';
  }

  private async deadLetter(d: Delivery, code: string, reason: string): Promise<void> {
    const { broker, options } = this.deps;
    await broker.publish(broker.deadLetterTopic(options.group), {
      key: d.key,
      body: d.body,
      ...(d.tag !== undefined ? { tag: d.tag } : {}),
      headers: {
        ...d.headers,
        'dlq-code': code,
        'dlq-reason': reason.slice(0, 1000),
        'dlq-source-topic': d.topic,
        'dlq-delivery-attempt': String(d.attempt),
        'dlq-worker': options.id,
        'dlq-at': new Date().toISOString(),
      },
    });
  }

  private async run(d: Delivery, task: TaskRecord, type: TaskType, log: Logger): Promise<Outcome> {
    const { store, options } = this.deps;
    const maxAttempts = task.maxAttempts || type.maxAttempts || options.maxAttempts;
    const controller = new AbortController();
    this.controllers.set(task.id, controller);
    const lost = (code: TransitionCode) => {
      if (code !== 'ok' && !controller.signal.aborted) {
        log.warn('lost the task (lease taken over or task ended); stopping the handler', { code });
        controller.abort(new Error(`task lost: ${code}`));
      }
    };
    const renew = setInterval(
      () => {
        store.renewLease(task.id, options.id, options.leaseMs).then(lost, (err: unknown) => {
          log.warn('lease renewal failed; will retry', { err: errorMessage(err) });
        });
      },
      Math.max(250, Math.floor(options.leaseMs / 3)),
    );

    // History writes go one after another, so the history keeps the order of the calls and
    // everything the handler reported is stored before the task's end.
    let history: Promise<void> = Promise.resolve();
    const record = (what: string, write: () => Promise<TransitionCode>): Promise<void> =>
      (history = history.then(async () => {
        try {
          lost(await write());
        } catch (err) {
          log.warn(`could not record ${what}`, { err: errorMessage(err) });
        }
      }));
    const emit = (event: HandlerEvent) => record(event.type, () => store.emit(task.id, options.id, event));
    const ctx: HandlerContext = {
      taskId: task.id,
      attempt: task.attempt,
      userId: task.userId,
      signal: controller.signal,
      progress: (percent, message) => {
        const p = Math.max(0, Math.min(100, Math.round(Number.isFinite(percent) ? percent : 0)));
        return record('progress', () => store.progress(task.id, options.id, p, message ?? null));
      },
      log: (level, message, data) => {
        log[level](message, { ...data, attempt: task.attempt });
        void emit({ type: 'log', data: data === undefined ? { level, message } : { level, message, data } });
      },
      partial: (chunk) => (typeof chunk === 'string' && chunk !== '' ? emit({ type: 'partial', data: { chunk } }) : Promise.resolve()),
    };

    log.info('task started', { attempt: task.attempt, max_attempts: maxAttempts });
    const started = Date.now();
    let result: unknown;
    let failure: unknown;
    try {
      const input = type.input.safeParse(task.input);
      if (!input.success) {
        throw new NonRetryableError(`input does not match the ${type.name} schema: ${input.error.issues[0]?.message ?? ''}`, 'invalid_input');
      }
      this.stats.handlerRuns++;
      const timeoutMs = type.timeoutMs ?? options.taskTimeoutMs;
      const timer = setTimeout(() => controller.abort(new TaskTimeoutError(timeoutMs)), timeoutMs);
      try {
        result = await Promise.race([
          type.handler(ctx, input.data),
          new Promise<never>((_, reject) => controller.signal.addEventListener('abort', () => reject(controller.signal.reason as Error), { once: true })),
        ]);
      } finally {
        clearTimeout(timer);
      }
    } catch (err) {
      failure = err;
    } finally {
      clearInterval(renew);
      this.controllers.delete(task.id);
      await history;
    }

    if (failure === undefined) {
      const code = await retrying(() => store.complete(task.id, options.id, result ?? null), storeRetry);
      if (code !== 'ok') return this.notOurs(task.id, code, log);
      this.stats.done++;
      log.info('task done', { attempt: task.attempt, duration_ms: Date.now() - started });
      const done = await store.get(task.id);
      if (done) await this.publishResult(done);
      return 'done';
    }

    const error = toTaskError(failure);
    if (error.retriable && task.attempt < maxAttempts) {
      const delay = backoffMs(task.attempt, options.retryBaseMs, options.retryMaxMs);
      const code = await retrying(() => store.retryLater(task.id, options.id, error, Date.now() + delay), storeRetry);
      if (code !== 'ok') return this.notOurs(task.id, code, log);
      this.stats.retried++;
      log.warn('task failed; will retry', { attempt: task.attempt, max_attempts: maxAttempts, retry_in_ms: delay, err: error.message });
      return 'retry';
    }
    return this.finishFailed(d, task, error, log);
  }

  /** The last attempt failed (or cannot be retried): failed in the store, a failure result, and the message to the dead letters. */
  private async finishFailed(d: Delivery, task: TaskRecord, error: TaskError, log: Logger): Promise<Outcome> {
    const { store, options } = this.deps;
    const code = await retrying(() => store.fail(task.id, options.id, error), storeRetry);
    if (code !== 'ok') return this.notOurs(task.id, code, log);
    this.stats.failed++;
    log.error('task failed', { attempt: task.attempt, code: error.code, err: error.message });
    const failed = await store.get(task.id);
    if (failed) await this.publishResult(failed);
    await this.deadLetter(d, error.code, `failed after ${task.attempt} attempt(s): ${error.message}`);
    return 'failed';
  }

  /**
   * A transition found the task no longer ours: cancelled meanwhile (then this worker, the
   * one that ran it, publishes the `cancelled` result), or taken over after a lost lease.
   */
  private async notOurs(id: string, code: TransitionCode, log: Logger): Promise<Outcome> {
    const now = code === 'terminal' ? await retrying(() => this.deps.store.get(id), storeRetry) : null;
    if (now?.status === 'cancelled') {
      this.stats.cancelled++;
      log.info('task cancelled', { attempt: now.attempt });
      if (!now.resultPublished) await this.publishResult(now);
      return 'cancelled';
    }
    log.warn('finished, but the task is no longer ours; result discarded', { code });
    return 'lost';
  }

  private async publishResult(task: TaskRecord): Promise<void> {
    await this.deps.broker.publish(this.deps.options.resultTopic, resultOutgoing(task));
    await retrying(() => this.deps.store.markResultPublished(task.id), storeRetry);
  }

  /**
   * Stops taking messages, lets running tasks finish within the grace period, then aborts
   * the rest (their messages are not acknowledged and go to another worker). Safe twice.
   */
  shutdown(): Promise<void> {
    this.stopping ??= (async () => {
      if (this.state === 'created') {
        this.state = 'stopped';
        return;
      }
      this.state = 'draining';
      const { logger, options } = this.deps;
      logger.info('worker draining', { in_flight: this.inFlight, grace_ms: options.shutdownGraceMs });
      const abortLeft = setTimeout(() => {
        for (const c of this.controllers.values()) c.abort(new Error('worker is shutting down'));
      }, options.shutdownGraceMs);
      // Deliveries still waiting for a slot go back to the broker at once.
      this.gate?.close();
      try {
        // A little extra grace so aborted handlers can unwind before the subscriptions leave.
        await Promise.all(this.subscriptions.map((s) => s.close({ graceMs: options.shutdownGraceMs + 2000 })));
      } finally {
        clearTimeout(abortLeft);
        await this.cancelWatch?.close().catch(() => undefined);
        this.state = 'stopped';
      }
      logger.info('worker stopped', { ...this.stats });
    })();
    return this.stopping;
  }
}

function toTaskError(err: unknown): TaskError {
  if (err instanceof AppError) return { code: err.code, message: err.message, retriable: err.retriable && !(err instanceof NonRetryableError) };
  return { code: 'handler_error', message: errorMessage(err), retriable: true };
}
