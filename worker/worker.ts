/**
 * A member of the worker consumer group: takes request messages, claims the task in the
 * store (the idempotent step), runs the handler of its type with a renewed lease, records
 * the outcome, publishes the result, and only then acknowledges the message.
 */
import type { Broker, Delivery, Subscription } from '../common/broker/port.ts';
import { backoffMs, retrying } from '../common/backoff.ts';
import { AppError, NonRetryableError, TaskCancelledError, errorMessage } from '../common/errors.ts';
import type { Logger } from '../common/logger.ts';
import { groupFor, requestTopicFor } from '../common/messages.ts';
import type { TaskRegistry, TaskType } from '../common/registry.ts';
import { publishResult, storeRetry } from '../common/results.ts';
import type { CancelWatch, TaskStore, TransitionCode } from '../common/store/port.ts';
import { PRIORITIES, requestMessageSchema, type HandlerEvent, type Priority, type RequestMessage, type TaskError, type TaskRecord } from '../common/task.ts';
import { SpanKind, contextFrom, inSpan, trace } from '../common/tracing.ts';
import { runAttempt, type AttemptOutcome } from './attempt.ts';
import { PriorityGate } from './priority-gate.ts';
import type { Metrics } from '../common/metrics.ts';
import { startHeartbeat, type Heartbeat } from './heartbeat.ts';
import type { HandlerContext, SpawnStep } from '../common/registry.ts';
import { endCancelledSteps, publishReady, resolveWorkflow, startWorkflow, uuidFrom, workflowSteps, type WorkflowStepSpec } from '../common/workflows.ts';

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
  retryBaseMs: number;
  retryMaxMs: number;
  /** Default time one attempt may take. */
  taskTimeoutMs: number;
  /** Default cap on a tenant's tasks running at once, across all workers (a tenant's own wins); 0 = none. */
  maxRunningPerTenant?: number;
  /** First delay before a task over its tenant's cap is offered again (it doubles, to 16×). Default 1000 ms. */
  throttleMs?: number;
  /** How often the worker renews its entry in the live-worker list (GET /stats); 0 or absent: no entry. */
  heartbeatMs?: number;
  /** For ctx.spawn: how long the first child steps' publish may take, and when the relay publishes them otherwise. */
  publishTimeoutMs?: number;
  relayAfterMs?: number;
  /** For ctx.spawn: the deployment's default limits its workflows are admitted against. */
  limits?: { submitsPerSecond: number; quotaUnits: number; quotaWindowSeconds: number };
}

export interface WorkerDeps {
  broker: Broker;
  store: TaskStore;
  registry: TaskRegistry;
  logger: Logger;
  options: WorkerOptions;
  /** Prometheus metrics of the process (common/metrics.ts); none when absent. */
  metrics?: Metrics;
}

export type WorkerState = 'created' | 'running' | 'draining' | 'stopped';

/** What happened to one delivery, for logs and tests. */
export type Outcome = 'done' | 'failed' | 'retry' | 'duplicate' | 'busy' | 'throttled' | 'lost' | 'poison' | 'republished' | 'cancelled';

export class Worker {
  private state: WorkerState = 'created';
  private subscriptions: Subscription[] = [];
  private gate: PriorityGate | undefined;
  private cancelWatch: CancelWatch | undefined;
  /** Running handlers by task id. */
  private readonly controllers = new Map<string, AbortController>();
  private stopping: Promise<void> | undefined;
  private heartbeat: Heartbeat | undefined;
  private untrackSlots: (() => void) | undefined;
  /** Counters since start, for logs and the status endpoint. */
  readonly stats = { done: 0, failed: 0, retried: 0, duplicates: 0, cancelled: 0, handlerRuns: 0, throttled: 0, workerLost: 0 };

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
    const running = () => this.controllers.size;
    this.untrackSlots = this.deps.metrics?.trackSlots({ running, free: () => Math.max(0, options.concurrency - running()) });
    if (options.heartbeatMs)
      this.heartbeat = startHeartbeat(this.deps.store, { id: options.id, concurrency: options.concurrency, running }, options.heartbeatMs, logger);
    logger.info('worker started', { worker: options.id, group: options.group, topic: options.requestTopic, concurrency: options.concurrency });
  }

  /** Processes one delivery. Resolving acknowledges it; throwing gets it redelivered. */
  async handle(d: Delivery): Promise<Outcome> {
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
    // The span of this delivery continues the trace of the submission (the message's traceparent).
    const attributes = { 'atq.task_id': msg.task_id, 'atq.type': msg.type, 'atq.tenant': msg.tenant, 'messaging.message.delivery_attempt': d.attempt };
    return inSpan(`process ${msg.type}`, { kind: SpanKind.CONSUMER, parent: contextFrom(d.headers), attributes }, async (span) => {
      const outcome = await this.process(d, msg);
      span.setAttribute('atq.outcome', outcome);
      return outcome;
    });
  }

  private async process(d: Delivery, msg: RequestMessage): Promise<Outcome> {
    const { store, registry, options } = this.deps;
    const log = this.deps.logger.child({ task_id: msg.task_id, type: msg.type });
    const claim = await inSpan('claim', {}, async (span) => {
      const r = await store.claim(msg.task_id, options.id, options.leaseMs, {
        maxRunning: options.maxRunningPerTenant ?? 0,
        throttleMs: options.throttleMs ?? 1000,
      });
      span.setAttribute('atq.claim', r.outcome);
      return r;
    });
    if (claim.outcome !== 'missing') trace.getActiveSpan()?.setAttribute('atq.attempt', claim.task.attempt);
    switch (claim.outcome) {
      case 'missing':
        return this.poison(d, 'unknown_task', `no record for task ${msg.task_id} (expired or never created)`);
      case 'busy':
        log.debug('task is held by another worker or not due; message dropped', { status: claim.task.status, worker: claim.task.worker });
        return 'busy';
      case 'throttled':
        // The relay offers it again at retry_at; the slot goes to another tenant's message now.
        this.stats.throttled++;
        log.debug('tenant is at its cap of running tasks; task deferred', { tenant: claim.task.tenant, retry_at: claim.task.retryAt });
        return 'throttled';
      case 'exhausted':
        // Its worker died on the last attempt (an input that kills workers, say): not run again.
        this.stats.workerLost++;
        this.stats.failed++;
        this.deps.metrics?.leaseLost.inc({ type: this.deps.metrics.type(claim.task.type), outcome: 'exhausted' });
        this.deps.metrics?.finished.inc({ type: this.deps.metrics.type(claim.task.type), outcome: 'failed' });
        log.error('task failed: its worker stopped on the last attempt', { attempt: claim.task.attempt, code: claim.task.error?.code });
        await this.endAbortedSteps(claim.task, log);
        await this.publishResult(claim.task);
        await this.deadLetter(d, 'worker_lost', claim.task.error?.message ?? 'worker lost');
        return 'failed';
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
        this.claimed(claim.task, claim.afterLostLease === true);
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
    this.deps.metrics?.deadLetters.inc({ code: this.deps.metrics.code(code) });
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
    // Resolved once, at submit, from the type or MAX_ATTEMPTS.
    const maxAttempts = task.maxAttempts;
    const controller = new AbortController();
    this.controllers.set(task.id, controller);
    log.info('task started', { attempt: task.attempt, max_attempts: maxAttempts });
    const started = Date.now();
    let outcome: AttemptOutcome;
    try {
      const needs = await this.needsOf(task);
      outcome = await runAttempt(
        store,
        task,
        type,
        controller,
        { worker: options.id, leaseMs: options.leaseMs, taskTimeoutMs: options.taskTimeoutMs, needs, spawn: this.spawner(task) },
        log,
      );
    } finally {
      this.controllers.delete(task.id);
    }
    if (outcome.ok || outcome.ran) this.stats.handlerRuns++;

    if (outcome.ok) {
      const r = await inSpan('store done', {}, () => retrying(() => store.complete(task.id, options.id, outcome.result ?? null, outcome.events), storeRetry));
      if (r.code !== 'ok') return this.notOurs(task, r.code, log);
      this.stats.done++;
      this.ended(r.task, 'done');
      log.info('task done', { attempt: task.attempt, duration_ms: Date.now() - started });
      // The workflow steps this completion readied go out now (the relay would, a little later).
      if (r.ready) await publishReady(store, this.deps.broker, options.requestTopic, r.ready, log);
      await this.publishResult(r.task);
      return 'done';
    }

    const error = toTaskError(outcome.error);
    if (error.retriable && task.attempt < maxAttempts) {
      const delay = backoffMs(task.attempt, options.retryBaseMs, options.retryMaxMs);
      const r = await inSpan('store retry', {}, () =>
        retrying(() => store.retryLater(task.id, options.id, error, Date.now() + delay, outcome.events), storeRetry),
      );
      if (r.code !== 'ok') return this.notOurs(task, r.code, log);
      this.stats.retried++;
      this.ended(task, 'retry');
      log.warn('task failed; will retry', { attempt: task.attempt, max_attempts: maxAttempts, retry_in_ms: delay, err: error.message });
      return 'retry';
    }
    return this.finishFailed(d, task, error, log, outcome.events);
  }

  /** The last attempt failed (or cannot be retried): failed in the store, a failure result, and the message to the dead letters. */
  private async finishFailed(d: Delivery, task: TaskRecord, error: TaskError, log: Logger, events: HandlerEvent[] = []): Promise<Outcome> {
    const { store, options } = this.deps;
    const r = await inSpan('store failed', {}, () => retrying(() => store.fail(task.id, options.id, error, events), storeRetry));
    if (r.code !== 'ok') return this.notOurs(task, r.code, log);
    this.stats.failed++;
    this.ended(r.task, 'failed');
    log.error('task failed', { attempt: task.attempt, code: error.code, err: error.message });
    await this.endAbortedSteps(r.task, log);
    await this.publishResult(r.task);
    await this.deadLetter(d, error.code, `failed after ${task.attempt} attempt(s): ${error.message}`);
    return 'failed';
  }

  /**
   * A transition found the task no longer ours: cancelled meanwhile (then this worker, the
   * one that ran it, publishes the `cancelled` result), ended by our own earlier try whose
   * answer was lost (a store timeout that still landed), or taken over after a lost lease.
   */
  private async notOurs(task: TaskRecord, code: TransitionCode, log: Logger): Promise<Outcome> {
    const now = code === 'terminal' ? await retrying(() => this.deps.store.get(task.id), storeRetry) : null;
    if (now?.status === 'cancelled') {
      this.stats.cancelled++;
      this.ended(now, 'cancelled');
      log.info('task cancelled', { attempt: now.attempt });
      if (!now.resultPublished) await this.publishResult(now);
      return 'cancelled';
    }
    if (now && now.worker === this.deps.options.id && !now.resultPublished) {
      log.info('our own end transition had landed; publishing its result', { status: now.status });
      this.ended(now, now.status === 'done' ? 'done' : 'failed');
      await this.publishResult(now);
      return now.status === 'done' ? 'done' : 'failed';
    }
    // Our lease expired and another worker claimed the task (or it is gone): that worker counts its end.
    this.ended(task, 'lost');
    log.warn('finished, but the task is no longer ours; result discarded', { code });
    return 'lost';
  }

  /**
   * A workflow step that failed failed its workflow too, cancelling its other steps: counts
   * those not running and publishes their cancelled results (their workers end theirs).
   */
  private async endAbortedSteps(task: TaskRecord, log: Logger): Promise<void> {
    if (!task.workflowId) return;
    const { store, broker, metrics, options } = this.deps;
    const deps = { store, broker, logger: log, metrics, resultTopic: options.resultTopic, publishTimeoutMs: options.publishTimeoutMs ?? 5000 };
    try {
      await endCancelledSteps(deps, await workflowSteps(store, task.workflowId), task.id);
    } catch (err) {
      log.warn('could not end the cancelled steps of a failed workflow', { workflow_id: task.workflowId, err: errorMessage(err) });
    }
  }

  /** ctx.needs of a workflow step: the results of the steps it needs, by step id. */
  private async needsOf(task: TaskRecord): Promise<Record<string, unknown>> {
    if (task.needs.length === 0) return {};
    const recs = await Promise.all(task.needs.map((id) => retrying(() => this.deps.store.get(id), storeRetry)));
    const out: Record<string, unknown> = {};
    recs.forEach((r, i) => {
      if (r) out[r.step ?? task.needs[i] ?? ''] = r.result;
    });
    return out;
  }

  /** ctx.spawn of a task: each call starts a workflow whose id derives from the task and the call's order. */
  private spawner(task: TaskRecord): HandlerContext['spawn'] {
    let calls = 0;
    return async (children: SpawnStep[], opts: { then?: SpawnStep; name?: string } = {}) => {
      const { store, broker, registry, logger, options } = this.deps;
      const n = calls++;
      const steps: WorkflowStepSpec[] = children.map((c, i) => ({
        id: c.id ?? `child-${i + 1}`,
        type: c.type,
        input: c.input,
        priority: c.priority ?? task.priority,
      }));
      const then = opts.then;
      if (then)
        steps.push({ id: then.id ?? 'then', type: then.type, input: then.input, priority: then.priority ?? task.priority, needs: steps.map((s) => s.id) });
      const spec = resolveWorkflow(
        { name: opts.name ?? `${task.type} ${task.id.slice(0, 8)}`, ...(task.userId ? { user_id: task.userId } : {}), steps },
        registry,
        task.maxAttempts,
      );
      const started = await startWorkflow(
        {
          store,
          broker,
          logger,
          registry,
          requestTopic: options.requestTopic,
          publishTimeoutMs: options.publishTimeoutMs ?? 5000,
          relayAfterMs: options.relayAfterMs ?? 2000,
          limits: options.limits ?? { submitsPerSecond: 0, quotaUnits: 0, quotaWindowSeconds: 86_400 },
          metrics: this.deps.metrics,
        },
        task.tenant,
        spec,
        { id: uuidFrom(`spawn/${task.id}/${n}`), parentTaskId: task.id },
      );
      logger.info('spawned a workflow', { task_id: task.id, workflow_id: started.workflowId, steps: Object.keys(started.steps).length, new: started.created });
      return { workflowId: started.workflowId, steps: started.steps };
    };
  }

  /** Metrics of a claim: the queue wait of a first attempt, a re-run after a lost lease. */
  private claimed(task: TaskRecord, afterLostLease: boolean): void {
    const m = this.deps.metrics;
    if (!m) return;
    const type = m.type(task.type);
    if (afterLostLease) m.leaseLost.inc({ type, outcome: 'rerun' });
    if (task.attempt === 1 && task.startedAt !== null) m.queueWaitSeconds.observe({ type }, Math.max(0, task.startedAt - task.createdAt) / 1000);
  }

  /** Metrics of an attempt's end: its run time (from the claim), and the task's end or retry (a lost attempt: its run time only). */
  private ended(task: TaskRecord, outcome: 'done' | 'failed' | 'retry' | 'cancelled' | 'lost'): void {
    const m = this.deps.metrics;
    if (!m) return;
    const type = m.type(task.type);
    if (task.startedAt !== null) m.runSeconds.observe({ type, outcome }, Math.max(0, Date.now() - task.startedAt) / 1000);
    if (outcome === 'retry') m.retries.inc({ type });
    else if (outcome !== 'lost') m.finished.inc({ type, outcome });
  }

  private publishResult(task: TaskRecord): Promise<void> {
    return publishResult(this.deps.broker, this.deps.store, this.deps.options.resultTopic, task);
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
      await this.heartbeat?.stop();
      this.untrackSlots?.();
      logger.info('worker stopped', { ...this.stats });
    })();
    return this.stopping;
  }
}

function toTaskError(err: unknown): TaskError {
  if (err instanceof AppError) return { code: err.code, message: err.message, retriable: err.retriable && !(err instanceof NonRetryableError) };
  return { code: 'handler_error', message: errorMessage(err), retriable: true };
}
