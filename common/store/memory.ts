/**
 * In-process task store for the embedded default and unit tests. Same semantics as the
 * Redis adapter (the store conformance suite runs against both); JavaScript's single thread
 * makes each method atomic.
 */
import { DEFAULT_TENANT, RERUNNABLE_STATUSES, isTerminal, type HandlerEvent, type NewTask, type TaskError, type TaskEvent, type TaskRecord } from '../task.ts';
import { quotaUsageOf, windowStartOf } from './access.ts';
import {
  LIST_SCAN_BUDGET,
  type ApiKeyRecord,
  type CancelResult,
  type ClaimOptions,
  type CreateOptions,
  type QuotaUsage,
  type RateState,
  type TenantLimits,
  type CancelWatch,
  type ClaimResult,
  type CreateResult,
  type Admission,
  type ListCursor,
  type ListPage,
  type ListQuery,
  type StoreStats,
  type TaskStore,
  type TaskCounts,
  type TaskStoreOptions,
  type TaskWatch,
  type WorkerInfo,
  type TransitionCode,
  type TransitionResult,
  type CreateWorkflowOptions,
  type CreateWorkflowResult,
  type DeadLetterQuery,
  type NewWorkflow,
  type RerunCharge,
  type RerunResult,
  type WorkflowCancelResult,
  type WorkflowEvent,
  type WorkflowRecord,
} from './port.ts';
import { WatchHub } from './watch-hub.ts';

interface Entry {
  rec: TaskRecord;
  /** A waiting workflow step: needs not done yet. */
  pending: number;
  /** Task ids of the steps that need this one. */
  dependents: string[];
  expiresAt: number | null;
  events: TaskEvent[];
  /** Last event id, as `<ms>-<seq>` like a Redis stream's. */
  lastMs: number;
  lastSeq: number;
}

export class MemoryTaskStore implements TaskStore {
  private readonly tasks = new Map<string, Entry>();
  private readonly outbox = new Map<string, number>();
  /** By tenant and client key. */
  private readonly idempotency = new Map<string, { taskId: string; fingerprint: string; expiresAt: number }>();
  /** POST /workflows' keys, by tenant and client key: apart from the tasks'. */
  private readonly workflowIdempotency = new Map<string, { workflowId: string; fingerprint: string; expiresAt: number }>();
  private readonly apiKeys = new Map<string, { key: ApiKeyRecord; hash: string }>();
  /** Secret hash → key id. */
  private readonly keyIds = new Map<string, string>();
  private readonly limits = new Map<string, TenantLimits>();
  private readonly quotas = new Map<string, { start: number; spent: number }>();
  /** Per-second counters by `<kind>:<tenant>`. */
  private readonly rates = new Map<string, { resetAt: number; used: number }>();
  /** Running task ids of each tenant, with their lease expiry (its cap on running tasks). */
  private readonly running = new Map<string, Map<string, number>>();
  /** How often each queued task was deferred by its tenant's cap. */
  private readonly throttles = new Map<string, number>();
  /** Live workers with the time their heartbeat expires. */
  private readonly workerBeats = new Map<string, { info: WorkerInfo; expiresAt: number }>();
  private readonly ttlMs: number;
  private readonly takeoverDelayMs: number;
  private readonly historyLimit: number;
  private readonly outputLimit: number;
  private readonly readyDelayMs: number;
  private readonly cancelWatchers = new Set<(id: string) => void>();
  private readonly hub = new WatchHub({ subscribe: () => Promise.resolve(), unsubscribe: () => undefined });
  private readonly workflows = new Map<string, { rec: WorkflowRecord; events: WorkflowEvent[]; lastMs: number; lastSeq: number; expiresAt: number | null }>();
  private readonly wfHub = new WatchHub({ subscribe: () => Promise.resolve(), unsubscribe: () => undefined });
  /** Dead letters of each tenant: task id → when it failed for good. */
  private readonly dead = new Map<string, Map<string, number>>();
  private closed = false;
  /** In process: nothing to count. */
  readonly stats: StoreStats = { roundTrips: 0 };

  constructor(
    opts: TaskStoreOptions = {},
    private readonly now: () => number = Date.now,
  ) {
    this.ttlMs = (opts.resultTtlSeconds ?? 86_400) * 1000;
    this.takeoverDelayMs = opts.takeoverDelayMs ?? 1000;
    this.historyLimit = opts.historyLimit ?? 1000;
    this.outputLimit = opts.outputLimitBytes ?? 1024 * 1024;
    this.readyDelayMs = opts.readyPublishDelayMs ?? 2000;
  }

  private entry(id: string): Entry | null {
    const key = id.toLowerCase();
    const entry = this.tasks.get(key);
    if (!entry) return null;
    if (entry.expiresAt !== null && entry.expiresAt <= this.now()) {
      this.tasks.delete(key);
      return null;
    }
    return entry;
  }

  private live(id: string): TaskRecord | null {
    return this.entry(id)?.rec ?? null;
  }

  private addEvent(id: string, type: TaskEvent['type'], data: Record<string, unknown>): void {
    const e = this.tasks.get(id);
    if (!e) return;
    const now = this.now();
    if (now > e.lastMs) {
      e.lastMs = now;
      e.lastSeq = 0;
    } else e.lastSeq++;
    e.events.push({ id: `${e.lastMs}-${e.lastSeq}`, type, data: structuredClone(data) });
    if (e.events.length > this.historyLimit) e.events.splice(0, e.events.length - this.historyLimit);
    this.hub.notify(id);
    if (e.rec.workflowId) this.addWorkflowEvent(e.rec.workflowId, id, e.rec.step ?? '', type, data);
  }

  private addWorkflowEvent(wfId: string, taskId: string, step: string, type: WorkflowEvent['type'], data: Record<string, unknown>): void {
    const w = this.workflows.get(wfId);
    if (!w) return;
    const now = this.now();
    if (now > w.lastMs) {
      w.lastMs = now;
      w.lastSeq = 0;
    } else w.lastSeq++;
    w.events.push({ id: `${w.lastMs}-${w.lastSeq}`, type, data: structuredClone(data), taskId, step });
    if (w.events.length > this.historyLimit * 10) w.events.splice(0, w.events.length - this.historyLimit * 10);
    this.wfHub.notify(wfId);
  }

  private applyEvents(rec: TaskRecord, events: readonly HandlerEvent[]): void {
    for (const event of events) {
      if (event.type === 'progress') {
        rec.progress = event.data.percent;
        rec.message = event.data.message;
        rec.updatedAt = this.now();
      } else if (event.type === 'partial' && Buffer.byteLength(rec.output) + Buffer.byteLength(event.data.chunk) <= this.outputLimit) {
        rec.output += event.data.chunk;
      }
      this.addEvent(rec.id, event.type, event.data);
    }
  }

  /** A transition's answer: the code, or the record as the transition left it. */
  private ended(rec: TaskRecord | Exclude<TransitionCode, 'ok'>): Promise<TransitionResult> {
    return Promise.resolve(typeof rec === 'string' ? { code: rec } : { code: 'ok', task: structuredClone(rec) });
  }

  private finish(rec: TaskRecord): void {
    this.outbox.delete(rec.id);
    this.running.get(rec.tenant)?.delete(rec.id);
    const e = this.tasks.get(rec.id);
    if (e) e.expiresAt = this.now() + this.ttlMs;
  }

  /** A step ended done: queues each step whose last need it was (answered, for the caller to publish), and ends the workflow when it was the last. */
  private stepDone(rec: TaskRecord): string[] {
    const ready: string[] = [];
    if (!rec.workflowId) return ready;
    const now = this.now();
    for (const d of this.tasks.get(rec.id)?.dependents ?? []) {
      const e = this.entry(d);
      if (!e || e.rec.status !== 'waiting') continue;
      if (--e.pending > 0) continue;
      Object.assign(e.rec, { status: 'queued', updatedAt: now } satisfies Partial<TaskRecord>);
      this.outbox.set(d, now + this.readyDelayMs);
      this.addEvent(d, 'status', { status: 'queued', attempt: 0 });
      ready.push(d);
    }
    const w = this.workflows.get(rec.workflowId);
    if (w && w.rec.status === 'running') {
      const all = w.rec.steps.every((s) => this.live(s.taskId)?.status === 'done');
      if (all) this.endWorkflow(w.rec.id, 'done', null);
    }
    return ready;
  }

  /** A step failed or was cancelled: the workflow ends so, and every step not finished is cancelled. */
  private stepAborted(rec: TaskRecord, status: 'failed' | 'cancelled', error: TaskError | null): void {
    if (!rec.workflowId) return;
    const w = this.workflows.get(rec.workflowId);
    if (!w || w.rec.status !== 'running') return;
    this.endWorkflow(w.rec.id, status, error, rec.id);
  }

  private endWorkflow(id: string, status: 'done' | 'failed' | 'cancelled', error: TaskError | null, except?: string, reason?: string | null): void {
    const w = this.workflows.get(id);
    if (!w) return;
    const now = this.now();
    Object.assign(w.rec, { status, error, finishedAt: now });
    w.expiresAt = now + this.ttlMs;
    if (status !== 'done') {
      for (const s of w.rec.steps) {
        if (s.taskId === except) continue;
        const t = this.live(s.taskId);
        if (!t || isTerminal(t.status)) continue;
        this.cancelRecord(t, reason ?? `workflow ${status}`);
      }
    }
    this.addWorkflowEvent(id, '', '', 'workflow', { status, ...(error ? { error } : {}) });
  }

  private cancelRecord(rec: TaskRecord, reason: string | null): 'scheduled' | 'waiting' | 'queued' | 'running' {
    const was = rec.status as 'scheduled' | 'waiting' | 'queued' | 'running';
    if (was !== 'running') this.refund(rec);
    const now = this.now();
    Object.assign(rec, { status: 'cancelled', leaseUntil: null, retryAt: null, finishedAt: now, updatedAt: now } satisfies Partial<TaskRecord>);
    this.addEvent(rec.id, 'cancelled', { reason, was });
    this.finish(rec);
    if (was === 'running') for (const w of this.cancelWatchers) queueMicrotask(() => w(rec.id));
    return was;
  }

  private addDead(rec: TaskRecord): void {
    let d = this.dead.get(rec.tenant);
    if (!d) this.dead.set(rec.tenant, (d = new Map<string, number>()));
    d.set(rec.id, this.now());
  }

  /** Owner check shared by every transition a worker makes on a running task. */
  private owned(id: string, worker: string): TaskRecord | Exclude<TransitionCode, 'ok'> {
    const rec = this.live(id);
    if (!rec) return 'missing';
    if (isTerminal(rec.status)) return 'terminal';
    if (rec.status !== 'running' || rec.worker !== worker) return 'not_owner';
    return rec;
  }

  private sweepAll(): void {
    const now = this.now();
    for (const [id, { expiresAt }] of this.tasks) if (expiresAt !== null && expiresAt <= now) this.tasks.delete(id);
    for (const [key, { expiresAt }] of this.idempotency) if (expiresAt <= now) this.idempotency.delete(key);
    for (const [key, { expiresAt }] of this.workflowIdempotency) if (expiresAt <= now) this.workflowIdempotency.delete(key);
  }

  /** A per-second counter: counts the request unless the limit is reached. */
  private count(key: string, limit: number): RateState & { allowed: boolean } {
    const now = this.now();
    let r = this.rates.get(key);
    if (!r || r.resetAt <= now) this.rates.set(key, (r = { resetAt: now + 1000, used: 0 }));
    if (r.used >= limit) return { allowed: false, limit, remaining: 0, resetMs: r.resetAt - now };
    r.used++;
    return { allowed: true, limit, remaining: limit - r.used, resetMs: r.resetAt - now };
  }

  /** A new task's entry: a record not started, with `over` for what create and createWorkflow set. */
  private newEntry(task: NewTask, over: Partial<TaskRecord> & Pick<TaskRecord, 'status'>): Entry {
    const rec: TaskRecord = {
      ...task,
      id: task.id.toLowerCase(),
      tenant: task.tenant ?? DEFAULT_TENANT,
      attempt: 0,
      progress: 0,
      message: null,
      output: '',
      result: null,
      error: null,
      worker: null,
      leaseUntil: null,
      retryAt: null,
      resultPublished: false,
      requestPublished: false,
      cost: 0,
      quotaWindow: null,
      downgraded: false,
      traceContext: { ...task.traceContext },
      runAt: null,
      workflowId: null,
      step: null,
      needs: [],
      reruns: 0,
      startedAt: null,
      finishedAt: null,
      updatedAt: this.now(),
      ...over,
    };
    rec.input = structuredClone('input' in over ? over.input : task.input);
    return { rec, pending: 0, dependents: [], expiresAt: null, events: [], lastMs: 0, lastSeq: 0 };
  }

  /** The tenant's submit rate (its own limit, else the admission's): one submit counted, or refused. */
  private submitRate(tenant: string, adm: Admission | undefined): { limited: RateState } | { rate?: RateState } {
    const perSecond = this.limits.get(tenant)?.submitsPerSecond ?? adm?.submitsPerSecond ?? 0;
    if (perSecond <= 0) return {};
    const { allowed, ...state } = this.count(`submits:${tenant}`, perSecond);
    return allowed ? { rate: state } : { limited: state };
  }

  /** Spends the admission's cost (or its downgrade's) from the tenant's quota window, or answers why not: the Lua `admit` of the Redis store. */
  private spendQuota(
    tenant: string,
    adm: Pick<Admission, 'quotaUnits' | 'quotaWindowSeconds' | 'cost' | 'downgrade'> | undefined,
  ): { exceeded: Extract<CreateResult, { outcome: 'quota_exceeded' }> } | { cost: number; quotaWindow: number | null; downgraded: boolean } {
    const own = this.limits.get(tenant) ?? {};
    const units = own.quotaUnits ?? adm?.quotaUnits ?? 0;
    if (!adm || units <= 0) return { cost: 0, quotaWindow: null, downgraded: false };
    const now = this.now();
    const windowSeconds = own.quotaWindowSeconds ?? adm.quotaWindowSeconds;
    const start = windowStartOf(now, windowSeconds * 1000);
    const q = this.quotas.get(tenant);
    const spent = q && q.start === start ? q.spent : 0;
    let cost = adm.cost;
    let downgraded = false;
    if (spent + cost > units) {
      if (!adm.downgrade || spent + adm.downgrade.cost > units) {
        const resetsAt = start + windowSeconds * 1000;
        return {
          exceeded: { outcome: 'quota_exceeded', retryAfterMs: resetsAt - now, usage: { tenant, units, windowSeconds, spent, windowStart: start, resetsAt } },
        };
      }
      cost = adm.downgrade.cost;
      downgraded = true;
    }
    if (cost <= 0) return { cost: 0, quotaWindow: null, downgraded };
    this.quotas.set(tenant, { start, spent: spent + cost });
    return { cost, quotaWindow: start, downgraded };
  }

  create(task: NewTask, publishDueAt: number, opts: CreateOptions = {}): Promise<CreateResult> {
    this.assertOpen();
    if (this.tasks.size % 1024 === 0) this.sweepAll();
    const { idempotency: idem, admission: adm } = opts;
    const id = task.id.toLowerCase();
    const tenant = task.tenant ?? DEFAULT_TENANT;
    const now = this.now();
    const limited = this.submitRate(tenant, adm);
    if ('limited' in limited) return Promise.resolve({ outcome: 'rate_limited', rate: limited.limited });
    const { rate } = limited;
    const withRate = <T extends object>(r: T): Promise<T & { rate?: RateState }> => Promise.resolve(rate ? { ...r, rate } : r);
    const idemKey = idem ? `${tenant}\n${idem.key}` : undefined;
    if (idem && idemKey) {
      const bound = this.idempotency.get(idemKey);
      if (bound && bound.expiresAt > now) return withRate({ outcome: 'replay' as const, taskId: bound.taskId, fingerprint: bound.fingerprint });
    }
    if (this.live(id)) return Promise.resolve({ outcome: 'exists' });
    const spent = this.spendQuota(tenant, adm);
    if ('exceeded' in spent) return Promise.resolve(spent.exceeded);
    const { cost, quotaWindow, downgraded } = spent;
    const input = downgraded && adm?.downgrade ? adm.downgrade.input : task.input;
    if (idem && idemKey) this.idempotency.set(idemKey, { taskId: id, fingerprint: idem.fingerprint, expiresAt: now + idem.ttlSeconds * 1000 });
    const runAt = task.runAt ?? null;
    this.tasks.set(id, this.newEntry(task, { input, status: runAt === null ? 'queued' : 'scheduled', retryAt: runAt, cost, quotaWindow, downgraded, runAt }));
    this.addEvent(id, 'status', runAt === null ? { status: 'queued', attempt: 0 } : { status: 'scheduled', attempt: 0, run_at: runAt });
    this.outbox.set(id, runAt ?? publishDueAt);
    return withRate({ outcome: 'created' as const, downgraded });
  }

  get(id: string): Promise<TaskRecord | null> {
    this.assertOpen();
    const rec = this.live(id);
    return Promise.resolve(rec ? structuredClone(rec) : null);
  }

  claim(id: string, worker: string, leaseMs: number, opts: ClaimOptions = {}): Promise<ClaimResult> {
    this.assertOpen();
    const rec = this.live(id);
    const now = this.now();
    if (!rec) return Promise.resolve({ outcome: 'missing' });
    if (isTerminal(rec.status)) return Promise.resolve({ outcome: 'terminal', task: structuredClone(rec) });
    const leased = rec.status === 'running' && (rec.leaseUntil ?? 0) > now;
    const notDue = (rec.status === 'queued' || rec.status === 'scheduled') && (rec.retryAt ?? 0) > now;
    // A waiting step's needs are not done: it has no message of its own yet (a stray one is dropped).
    if (leased || notDue || rec.status === 'waiting') return Promise.resolve({ outcome: 'busy', task: structuredClone(rec) });
    const lost = rec.status === 'running';
    if (lost && rec.attempt >= rec.maxAttempts) {
      const error = {
        code: 'worker_lost',
        retriable: false,
        message: `the worker running attempt ${rec.attempt} of ${rec.attempt} stopped (its lease expired); no attempts left`,
      };
      Object.assign(rec, { status: 'failed', error, leaseUntil: null, finishedAt: now, updatedAt: now } satisfies Partial<TaskRecord>);
      this.finish(rec);
      this.addEvent(rec.id, 'failed', { error });
      this.addDead(rec);
      this.stepAborted(rec, 'failed', error);
      return Promise.resolve({ outcome: 'exhausted', task: structuredClone(rec) });
    }
    const cap = this.limits.get(rec.tenant)?.maxRunning ?? opts.maxRunning ?? 0;
    let running = this.running.get(rec.tenant);
    if (cap > 0) {
      if (!running) this.running.set(rec.tenant, (running = new Map<string, number>()));
      for (const [taskId, until] of running) if (until <= now) running.delete(taskId);
      if (!running.has(rec.id) && running.size >= cap) {
        // Deferred through the outbox, longer each time, so a big backlog is not re-offered every second.
        const n = this.throttles.get(rec.id) ?? 0;
        this.throttles.set(rec.id, n + 1);
        const at = now + (opts.throttleMs ?? 1000) * 2 ** Math.min(n, 4);
        Object.assign(rec, { status: 'queued', worker: null, leaseUntil: null, retryAt: at, updatedAt: now } satisfies Partial<TaskRecord>);
        this.outbox.set(rec.id, at);
        if (lost) this.addEvent(rec.id, 'status', { status: 'queued', attempt: rec.attempt, reason: 'worker_lost' });
        return Promise.resolve({ outcome: 'throttled', task: structuredClone(rec) });
      }
    }
    this.throttles.delete(rec.id);
    Object.assign(rec, {
      status: 'running',
      worker,
      attempt: rec.attempt + 1,
      leaseUntil: now + leaseMs,
      retryAt: null,
      startedAt: now,
      updatedAt: now,
    } satisfies Partial<TaskRecord>);
    if (cap > 0) running?.set(rec.id, now + leaseMs);
    this.outbox.set(rec.id, now + leaseMs + this.takeoverDelayMs);
    this.addEvent(
      rec.id,
      'status',
      lost ? { status: 'running', attempt: rec.attempt, worker, after_lost_lease: true } : { status: 'running', attempt: rec.attempt, worker },
    );
    return Promise.resolve(
      lost ? { outcome: 'claimed', task: structuredClone(rec), afterLostLease: true } : { outcome: 'claimed', task: structuredClone(rec) },
    );
  }

  renewLease(id: string, worker: string, leaseMs: number): Promise<TransitionCode> {
    this.assertOpen();
    const rec = this.owned(id, worker);
    if (typeof rec === 'string') return Promise.resolve(rec);
    const now = this.now();
    rec.leaseUntil = now + leaseMs;
    this.outbox.set(rec.id, rec.leaseUntil + this.takeoverDelayMs);
    const running = this.running.get(rec.tenant);
    if (running?.has(rec.id)) running.set(rec.id, rec.leaseUntil);
    return Promise.resolve('ok');
  }

  report(id: string, worker: string, events: readonly HandlerEvent[]): Promise<TransitionCode> {
    this.assertOpen();
    const rec = this.owned(id, worker);
    if (typeof rec === 'string') return Promise.resolve(rec);
    this.applyEvents(rec, events);
    return Promise.resolve('ok');
  }

  complete(id: string, worker: string, result: unknown, events: readonly HandlerEvent[] = []): Promise<TransitionResult> {
    this.assertOpen();
    const rec = this.owned(id, worker);
    if (typeof rec === 'string') return this.ended(rec);
    this.applyEvents(rec, events);
    const now = this.now();
    Object.assign(rec, {
      status: 'done',
      result: structuredClone(result),
      progress: 100,
      leaseUntil: null,
      finishedAt: now,
      updatedAt: now,
    } satisfies Partial<TaskRecord>);
    this.finish(rec);
    this.addEvent(rec.id, 'done', { result: rec.result });
    const ready = this.stepDone(rec);
    return Promise.resolve(ready.length > 0 ? { code: 'ok', task: structuredClone(rec), ready } : { code: 'ok', task: structuredClone(rec) });
  }

  retryLater(id: string, worker: string, error: TaskError, retryAt: number, events: readonly HandlerEvent[] = []): Promise<TransitionResult> {
    this.assertOpen();
    const rec = this.owned(id, worker);
    if (typeof rec === 'string') return this.ended(rec);
    this.applyEvents(rec, events);
    Object.assign(rec, {
      status: 'queued',
      error,
      worker: null,
      leaseUntil: null,
      retryAt,
      updatedAt: this.now(),
    } satisfies Partial<TaskRecord>);
    this.outbox.set(rec.id, retryAt);
    this.running.get(rec.tenant)?.delete(rec.id);
    this.addEvent(rec.id, 'status', { status: 'queued', attempt: rec.attempt, retry_at: retryAt, error });
    return this.ended(rec);
  }

  fail(id: string, worker: string, error: TaskError, events: readonly HandlerEvent[] = []): Promise<TransitionResult> {
    this.assertOpen();
    const rec = this.owned(id, worker);
    if (typeof rec === 'string') return this.ended(rec);
    this.applyEvents(rec, events);
    const now = this.now();
    Object.assign(rec, { status: 'failed', error, leaseUntil: null, finishedAt: now, updatedAt: now } satisfies Partial<TaskRecord>);
    this.finish(rec);
    this.addEvent(rec.id, 'failed', { error });
    this.addDead(rec);
    this.stepAborted(rec, 'failed', error);
    return this.ended(rec);
  }

  /** A task that never started gives back the quota units it spent, if its window is still on. */
  private refund(rec: TaskRecord): void {
    if (rec.attempt > 0 || rec.cost <= 0 || rec.quotaWindow === null) return;
    const q = this.quotas.get(rec.tenant);
    if (q && q.start === rec.quotaWindow) q.spent -= rec.cost;
    rec.cost = 0;
  }

  failQueued(id: string, error: TaskError, idempotencyKey?: string, tenant: string = DEFAULT_TENANT): Promise<TransitionCode> {
    this.assertOpen();
    const rec = this.live(id);
    if (!rec) return Promise.resolve('missing');
    if (isTerminal(rec.status)) return Promise.resolve('terminal');
    if (rec.status !== 'queued') return Promise.resolve('conflict');
    this.refund(rec);
    const now = this.now();
    Object.assign(rec, { status: 'failed', error, resultPublished: true, finishedAt: now, updatedAt: now } satisfies Partial<TaskRecord>);
    this.addEvent(rec.id, 'failed', { error });
    this.finish(rec);
    this.stepAborted(rec, 'failed', error);
    const idemKey = `${tenant}\n${idempotencyKey}`;
    if (idempotencyKey !== undefined && this.idempotency.get(idemKey)?.taskId === rec.id) this.idempotency.delete(idemKey);
    return Promise.resolve('ok');
  }

  markResultPublished(id: string): Promise<void> {
    this.assertOpen();
    const rec = this.live(id);
    if (rec) rec.resultPublished = true;
    return Promise.resolve();
  }

  disarmOutbox(id: string, attempt: number): Promise<void> {
    this.assertOpen();
    const key = id.toLowerCase();
    const rec = this.live(key);
    if (rec) rec.requestPublished = true;
    // A queued task with a retry_at still ahead was deferred since (its tenant at its cap): its entry stays.
    const deferred = (rec?.retryAt ?? 0) > this.now();
    const published = (rec?.status === 'queued' || rec?.status === 'scheduled') && rec.attempt === attempt && !deferred;
    if (!rec || isTerminal(rec.status) || published) this.outbox.delete(key);
    return Promise.resolve();
  }

  outboxDue(limit: number, holdMs: number): Promise<string[]> {
    this.assertOpen();
    const now = this.now();
    const due = [...this.outbox]
      .filter(([, at]) => at <= now)
      .sort((a, b) => a[1] - b[1])
      .slice(0, limit)
      .map(([id]) => id);
    for (const id of due) this.outbox.set(id, now + holdMs);
    return Promise.resolve(due);
  }

  events(id: string, after: string | null, limit: number): Promise<TaskEvent[]> {
    this.assertOpen();
    const e = this.entry(id);
    if (!e) return Promise.resolve([]);
    const [ams = 0, aseq = -1] = after === null ? [0, -1] : after.split('-').map(Number);
    const later = e.events.filter((ev) => {
      const [ms = 0, seq = 0] = ev.id.split('-').map(Number);
      return ms > ams || (ms === ams && seq > aseq);
    });
    return Promise.resolve(structuredClone(later.slice(0, limit)));
  }

  cancel(id: string, reason: string | null, tenant?: string): Promise<CancelResult> {
    this.assertOpen();
    const rec = this.live(id);
    if (!rec || (tenant !== undefined && rec.tenant !== tenant)) return Promise.resolve({ outcome: 'missing' });
    if (isTerminal(rec.status)) return Promise.resolve({ outcome: 'terminal', task: structuredClone(rec) });
    const was = this.cancelRecord(rec, reason);
    this.stepAborted(rec, 'cancelled', null);
    return Promise.resolve({ outcome: 'cancelled', was, task: structuredClone(rec) });
  }

  watch(id: string): Promise<TaskWatch> {
    this.assertOpen();
    return this.hub.watch(id);
  }

  watchCancellations(onCancel: (id: string) => void): Promise<CancelWatch> {
    this.cancelWatchers.add(onCancel);
    return Promise.resolve({
      close: () => {
        this.cancelWatchers.delete(onCancel);
        return Promise.resolve();
      },
    });
  }

  list(q: ListQuery): Promise<ListPage> {
    this.assertOpen();
    const tenant = q.tenant ?? DEFAULT_TENANT;
    const all = [...this.tasks.values()]
      .map((e) => e.rec)
      .filter((r) => r.tenant === tenant)
      .filter((r) => !q.after || r.createdAt < q.after.createdAt || (r.createdAt === q.after.createdAt && r.id < q.after.id))
      .sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : -1));
    const tasks: TaskRecord[] = [];
    let scanned = 0;
    for (const r of all) {
      scanned++;
      const last = { createdAt: r.createdAt, id: r.id };
      if (!this.live(r.id)) continue;
      const match = (!q.status || r.status === q.status) && (!q.type || r.type === q.type) && (q.userId === undefined || r.userId === q.userId);
      if (match) tasks.push(structuredClone(r));
      if (tasks.length === q.limit || scanned >= LIST_SCAN_BUDGET) return Promise.resolve({ tasks, next: last });
    }
    return Promise.resolve({ tasks, next: null });
  }

  sweep(_limit: number): Promise<number> {
    this.assertOpen();
    const before = this.tasks.size;
    this.sweepAll();
    return Promise.resolve(before - this.tasks.size);
  }

  // --- access ---

  createKey(key: ApiKeyRecord, secretHash: string): Promise<void> {
    this.assertOpen();
    this.apiKeys.set(key.id, { key: structuredClone(key), hash: secretHash });
    this.keyIds.set(secretHash, key.id);
    return Promise.resolve();
  }

  findKey(secretHash: string): Promise<ApiKeyRecord | null> {
    this.assertOpen();
    const entry = this.apiKeys.get(this.keyIds.get(secretHash) ?? '');
    return Promise.resolve(entry ? structuredClone(entry.key) : null);
  }

  listKeys(tenant?: string): Promise<ApiKeyRecord[]> {
    this.assertOpen();
    const keys = [...this.apiKeys.values()].map((e) => structuredClone(e.key)).filter((k) => tenant === undefined || k.tenant === tenant);
    return Promise.resolve(keys.sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1)));
  }

  revokeKey(id: string): Promise<boolean> {
    this.assertOpen();
    const entry = this.apiKeys.get(id);
    if (entry) this.keyIds.delete(entry.hash);
    return Promise.resolve(this.apiKeys.delete(id));
  }

  tenantLimits(tenant: string): Promise<TenantLimits> {
    this.assertOpen();
    return Promise.resolve({ ...this.limits.get(tenant) });
  }

  setTenantLimits(tenant: string, limits: { [K in keyof TenantLimits]?: number | null }): Promise<TenantLimits> {
    this.assertOpen();
    const own: TenantLimits = { ...this.limits.get(tenant) };
    for (const [field, v] of Object.entries(limits) as [keyof TenantLimits, number | null | undefined][]) {
      if (v === null) delete own[field];
      else if (v !== undefined) own[field] = v;
    }
    this.limits.set(tenant, own);
    return Promise.resolve({ ...own });
  }

  quotaUsage(tenant: string, defaults: { quotaUnits: number; quotaWindowSeconds: number }): Promise<QuotaUsage> {
    this.assertOpen();
    return Promise.resolve(quotaUsageOf(tenant, this.limits.get(tenant) ?? {}, defaults, this.quotas.get(tenant) ?? {}, this.now()));
  }

  hit(tenant: string, kind: 'reads' | 'submits', perSecond: number): Promise<(RateState & { allowed: boolean }) | null> {
    this.assertOpen();
    return Promise.resolve(perSecond > 0 ? this.count(`${kind}:${tenant}`, perSecond) : null);
  }

  // --- live workers and statistics ---

  heartbeat(info: WorkerInfo, ttlMs: number): Promise<void> {
    this.assertOpen();
    const now = this.now();
    this.workerBeats.set(info.id, { info: { ...info, seenAt: now }, expiresAt: now + ttlMs });
    return Promise.resolve();
  }

  workers(): Promise<WorkerInfo[]> {
    this.assertOpen();
    const now = this.now();
    for (const [id, w] of this.workerBeats) if (w.expiresAt <= now) this.workerBeats.delete(id);
    return Promise.resolve([...this.workerBeats.values()].map((w) => ({ ...w.info })).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)));
  }

  removeWorker(id: string): Promise<void> {
    this.assertOpen();
    this.workerBeats.delete(id);
    return Promise.resolve();
  }

  countTasks(tenant: string, budget: number = LIST_SCAN_BUDGET): Promise<TaskCounts> {
    this.assertOpen();
    const recs = [...this.tasks.values()]
      .filter((e) => e.rec.tenant === tenant && (e.expiresAt === null || e.expiresAt > this.now()))
      .map((e) => e.rec)
      .sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : -1));
    const counts: TaskCounts = {
      byStatus: { scheduled: 0, waiting: 0, queued: 0, running: 0, done: 0, failed: 0, cancelled: 0 },
      byType: {},
      scanned: 0,
      truncated: recs.length > budget,
    };
    for (const r of recs.slice(0, budget)) {
      counts.scanned++;
      counts.byStatus[r.status]++;
      counts.byType[r.type] = (counts.byType[r.type] ?? 0) + 1;
    }
    return Promise.resolve(counts);
  }

  // --- delayed tasks, workflows, reruns and dead letters ---

  createWorkflow(wf: NewWorkflow, publishDueAt: number, opts: CreateWorkflowOptions = {}): Promise<CreateWorkflowResult> {
    this.assertOpen();
    const id = wf.id.toLowerCase();
    if (this.workflows.has(id)) return Promise.resolve({ outcome: 'exists' });
    const tenant = wf.tenant;
    // As create's, with no downgrade: the sum of the steps' costs, or nothing.
    const adm = opts.admission ? { ...opts.admission, downgrade: undefined } : undefined;
    const limited = this.submitRate(tenant, adm);
    if ('limited' in limited) return Promise.resolve({ outcome: 'rate_limited', rate: limited.limited });
    const { rate } = limited;
    const idem = opts.idempotency;
    const idemKey = idem ? `${tenant}\n${idem.key}` : undefined;
    if (idemKey) {
      const bound = this.workflowIdempotency.get(idemKey);
      if (bound && bound.expiresAt > this.now()) {
        const replay = { outcome: 'replay' as const, workflowId: bound.workflowId, fingerprint: bound.fingerprint };
        return Promise.resolve(rate ? { ...replay, rate } : replay);
      }
    }
    const spent = this.spendQuota(tenant, adm);
    if ('exceeded' in spent) return Promise.resolve(spent.exceeded);
    const { cost, quotaWindow } = spent;
    const taskOf = new Map(wf.steps.map((s) => [s.step, s.task.id.toLowerCase()]));
    this.workflows.set(id, {
      rec: {
        id,
        tenant,
        name: wf.name,
        userId: wf.userId,
        parentTaskId: wf.parentTaskId,
        status: 'running',
        steps: wf.steps.map((s) => ({ step: s.step, taskId: s.task.id.toLowerCase() })),
        error: null,
        createdAt: wf.createdAt,
        finishedAt: null,
      },
      events: [],
      lastMs: 0,
      lastSeq: 0,
      expiresAt: null,
    });
    wf.steps.forEach((s, i) => {
      const tid = s.task.id.toLowerCase();
      const needs = s.needs.map((n) => taskOf.get(n) ?? '');
      const waiting = needs.length > 0;
      const entry = this.newEntry(s.task, {
        status: waiting ? 'waiting' : 'queued',
        // The workflow's units are counted on its first step: a cancel before it starts gives them back.
        cost: i === 0 ? cost : 0,
        quotaWindow: i === 0 ? quotaWindow : null,
        workflowId: id,
        step: s.step,
        needs,
      });
      entry.pending = needs.length;
      entry.dependents = wf.steps.filter((o) => o.needs.includes(s.step)).map((o) => o.task.id.toLowerCase());
      this.tasks.set(tid, entry);
      this.addEvent(tid, 'status', { status: waiting ? 'waiting' : 'queued', attempt: 0 });
      if (!waiting) this.outbox.set(tid, publishDueAt);
    });
    if (idem && idemKey)
      this.workflowIdempotency.set(idemKey, { workflowId: id, fingerprint: idem.fingerprint, expiresAt: this.now() + idem.ttlSeconds * 1000 });
    return Promise.resolve(rate ? { outcome: 'created', rate } : { outcome: 'created' });
  }

  private liveWorkflow(id: string): WorkflowRecord | null {
    const key = id.toLowerCase();
    const w = this.workflows.get(key);
    if (!w) return null;
    if (w.expiresAt !== null && w.expiresAt <= this.now()) {
      this.workflows.delete(key);
      return null;
    }
    return w.rec;
  }

  getWorkflow(id: string): Promise<WorkflowRecord | null> {
    this.assertOpen();
    const w = this.liveWorkflow(id);
    return Promise.resolve(w ? structuredClone(w) : null);
  }

  listWorkflows(tenant: string, limit: number, after?: ListCursor): Promise<{ workflows: WorkflowRecord[]; next: ListCursor | null }> {
    this.assertOpen();
    const all = [...this.workflows.keys()]
      .map((id) => this.liveWorkflow(id))
      .filter((w): w is WorkflowRecord => w !== null && w.tenant === tenant)
      .filter((w) => !after || w.createdAt < after.createdAt || (w.createdAt === after.createdAt && w.id < after.id))
      .sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : -1));
    const page = all.slice(0, limit);
    const last = page.at(-1);
    return Promise.resolve({ workflows: structuredClone(page), next: all.length > limit && last ? { createdAt: last.createdAt, id: last.id } : null });
  }

  cancelWorkflow(id: string, reason: string | null, tenant?: string, idempotencyKey?: string): Promise<WorkflowCancelResult> {
    this.assertOpen();
    const w = this.liveWorkflow(id);
    if (!w || (tenant !== undefined && w.tenant !== tenant)) return Promise.resolve({ outcome: 'missing' });
    if (w.status !== 'running') return Promise.resolve({ outcome: 'terminal', workflow: structuredClone(w) });
    this.endWorkflow(w.id, 'cancelled', null, undefined, reason);
    const idemKey = `${tenant ?? DEFAULT_TENANT}\n${idempotencyKey}`;
    if (idempotencyKey !== undefined && this.workflowIdempotency.get(idemKey)?.workflowId === w.id) this.workflowIdempotency.delete(idemKey);
    return Promise.resolve({ outcome: 'cancelled', workflow: structuredClone(w) });
  }

  workflowEvents(id: string, after: string | null, limit: number): Promise<WorkflowEvent[]> {
    this.assertOpen();
    if (!this.liveWorkflow(id)) return Promise.resolve([]);
    const w = this.workflows.get(id.toLowerCase());
    const [ams = 0, aseq = -1] = after === null ? [0, -1] : after.split('-').map(Number);
    const later = (w?.events ?? []).filter((ev) => {
      const [ms = 0, seq = 0] = ev.id.split('-').map(Number);
      return ms > ams || (ms === ams && seq > aseq);
    });
    return Promise.resolve(structuredClone(later.slice(0, limit)));
  }

  watchWorkflow(id: string): Promise<TaskWatch> {
    this.assertOpen();
    return this.wfHub.watch(id.toLowerCase());
  }

  rerun(id: string, publishDueAt: number, tenant?: string, charge?: RerunCharge): Promise<RerunResult> {
    this.assertOpen();
    const rec = this.live(id);
    if (!rec || (tenant !== undefined && rec.tenant !== tenant)) return Promise.resolve({ outcome: 'missing' });
    if (!RERUNNABLE_STATUSES.has(rec.status) || rec.workflowId) return Promise.resolve({ outcome: 'conflict', task: structuredClone(rec) });
    const spent = this.spendQuota(rec.tenant, charge);
    if ('exceeded' in spent) return Promise.resolve(spent.exceeded);
    const now = this.now();
    Object.assign(rec, {
      cost: spent.cost,
      quotaWindow: spent.quotaWindow,
      status: 'queued',
      attempt: 0,
      error: null,
      result: null,
      progress: 0,
      message: null,
      worker: null,
      leaseUntil: null,
      retryAt: null,
      resultPublished: false,
      requestPublished: false,
      reruns: rec.reruns + 1,
      startedAt: null,
      finishedAt: null,
      updatedAt: now,
    } satisfies Partial<TaskRecord>);
    const e = this.tasks.get(rec.id);
    if (e) e.expiresAt = null;
    this.dead.get(rec.tenant)?.delete(rec.id);
    this.addEvent(rec.id, 'status', { status: 'queued', attempt: 0, rerun: rec.reruns });
    this.outbox.set(rec.id, publishDueAt);
    return Promise.resolve({ outcome: 'rerun', task: structuredClone(rec) });
  }

  deadLetters(q: DeadLetterQuery): Promise<ListPage> {
    this.assertOpen();
    const d = this.dead.get(q.tenant) ?? new Map<string, number>();
    const entries = [...d]
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? 1 : -1))
      .filter(([tid, at]) => !q.after || at < q.after.createdAt || (at === q.after.createdAt && tid < q.after.id));
    const tasks: TaskRecord[] = [];
    let scanned = 0;
    for (const [tid, at] of entries) {
      scanned++;
      const rec = this.live(tid);
      if (!rec || rec.status !== 'failed') {
        d.delete(tid);
        continue;
      }
      if ((!q.type || rec.type === q.type) && (!q.code || rec.error?.code === q.code)) tasks.push(structuredClone(rec));
      if (tasks.length === q.limit || scanned >= LIST_SCAN_BUDGET) return Promise.resolve({ tasks, next: { createdAt: at, id: tid } });
    }
    return Promise.resolve({ tasks, next: null });
  }

  ping(): Promise<void> {
    this.assertOpen();
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.closed = true;
    this.cancelWatchers.clear();
    return Promise.resolve();
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('task store is closed');
  }
}
