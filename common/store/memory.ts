/**
 * In-process task store for the embedded default and unit tests. Same semantics as the
 * Redis adapter (the store conformance suite runs against both); JavaScript's single thread
 * makes each method atomic.
 */
import { isTerminal, type HandlerEvent, type NewTask, type TaskError, type TaskEvent, type TaskRecord } from '../task.ts';
import {
  LIST_SCAN_BUDGET,
  type CancelResult,
  type CancelWatch,
  type ClaimResult,
  type CreateResult,
  type IdempotencyClaim,
  type ListPage,
  type ListQuery,
  type StoreStats,
  type TaskStore,
  type TaskStoreOptions,
  type TaskWatch,
  type TransitionCode,
  type TransitionResult,
} from './port.ts';
import { WatchHub } from './watch-hub.ts';

interface Entry {
  rec: TaskRecord;
  expiresAt: number | null;
  events: TaskEvent[];
  /** Last event id, as `<ms>-<seq>` like a Redis stream's. */
  lastMs: number;
  lastSeq: number;
}

export class MemoryTaskStore implements TaskStore {
  private readonly tasks = new Map<string, Entry>();
  private readonly outbox = new Map<string, number>();
  private readonly idempotency = new Map<string, { taskId: string; fingerprint: string; expiresAt: number }>();
  private readonly ttlMs: number;
  private readonly takeoverDelayMs: number;
  private readonly historyLimit: number;
  private readonly outputLimit: number;
  private readonly cancelWatchers = new Set<(id: string) => void>();
  private readonly hub = new WatchHub({ subscribe: () => Promise.resolve(), unsubscribe: () => undefined });
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
    const e = this.tasks.get(rec.id);
    if (e) e.expiresAt = this.now() + this.ttlMs;
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
  }

  create(task: NewTask, publishDueAt: number, idem?: IdempotencyClaim): Promise<CreateResult> {
    this.assertOpen();
    if (this.tasks.size % 1024 === 0) this.sweepAll();
    const id = task.id.toLowerCase();
    const now = this.now();
    if (idem) {
      const bound = this.idempotency.get(idem.key);
      if (bound && bound.expiresAt > now) return Promise.resolve({ outcome: 'replay', taskId: bound.taskId, fingerprint: bound.fingerprint });
    }
    if (this.live(id)) return Promise.resolve({ outcome: 'exists' });
    if (idem) this.idempotency.set(idem.key, { taskId: id, fingerprint: idem.fingerprint, expiresAt: now + idem.ttlSeconds * 1000 });
    this.tasks.set(id, {
      rec: {
        ...task,
        id,
        status: 'queued',
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
        startedAt: null,
        finishedAt: null,
        updatedAt: now,
      },
      expiresAt: null,
      events: [],
      lastMs: 0,
      lastSeq: 0,
    });
    this.addEvent(id, 'status', { status: 'queued', attempt: 0 });
    this.outbox.set(id, publishDueAt);
    return Promise.resolve({ outcome: 'created' });
  }

  get(id: string): Promise<TaskRecord | null> {
    this.assertOpen();
    const rec = this.live(id);
    return Promise.resolve(rec ? structuredClone(rec) : null);
  }

  claim(id: string, worker: string, leaseMs: number): Promise<ClaimResult> {
    this.assertOpen();
    const rec = this.live(id);
    const now = this.now();
    if (!rec) return Promise.resolve({ outcome: 'missing' });
    if (isTerminal(rec.status)) return Promise.resolve({ outcome: 'terminal', task: structuredClone(rec) });
    const leased = rec.status === 'running' && (rec.leaseUntil ?? 0) > now;
    const notDue = rec.status === 'queued' && (rec.retryAt ?? 0) > now;
    if (leased || notDue) return Promise.resolve({ outcome: 'busy', task: structuredClone(rec) });
    Object.assign(rec, {
      status: 'running',
      worker,
      attempt: rec.attempt + 1,
      leaseUntil: now + leaseMs,
      retryAt: null,
      startedAt: now,
      updatedAt: now,
    } satisfies Partial<TaskRecord>);
    this.outbox.set(rec.id, now + leaseMs + this.takeoverDelayMs);
    this.addEvent(rec.id, 'status', { status: 'running', attempt: rec.attempt, worker });
    return Promise.resolve({ outcome: 'claimed', task: structuredClone(rec) });
  }

  renewLease(id: string, worker: string, leaseMs: number): Promise<TransitionCode> {
    this.assertOpen();
    const rec = this.owned(id, worker);
    if (typeof rec === 'string') return Promise.resolve(rec);
    const now = this.now();
    rec.leaseUntil = now + leaseMs;
    this.outbox.set(rec.id, rec.leaseUntil + this.takeoverDelayMs);
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
    return this.ended(rec);
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
    return this.ended(rec);
  }

  failQueued(id: string, error: TaskError, idempotencyKey?: string): Promise<TransitionCode> {
    this.assertOpen();
    const rec = this.live(id);
    if (!rec) return Promise.resolve('missing');
    if (isTerminal(rec.status)) return Promise.resolve('terminal');
    if (rec.status !== 'queued') return Promise.resolve('conflict');
    const now = this.now();
    Object.assign(rec, { status: 'failed', error, resultPublished: true, finishedAt: now, updatedAt: now } satisfies Partial<TaskRecord>);
    this.addEvent(rec.id, 'failed', { error });
    this.finish(rec);
    if (idempotencyKey !== undefined && this.idempotency.get(idempotencyKey)?.taskId === rec.id) this.idempotency.delete(idempotencyKey);
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
    if (!rec || isTerminal(rec.status) || (rec.status === 'queued' && rec.attempt === attempt)) this.outbox.delete(key);
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

  cancel(id: string, reason: string | null): Promise<CancelResult> {
    this.assertOpen();
    const rec = this.live(id);
    if (!rec) return Promise.resolve({ outcome: 'missing' });
    if (isTerminal(rec.status)) return Promise.resolve({ outcome: 'terminal', task: structuredClone(rec) });
    const was = rec.status as 'queued' | 'running';
    const now = this.now();
    Object.assign(rec, { status: 'cancelled', leaseUntil: null, retryAt: null, finishedAt: now, updatedAt: now } satisfies Partial<TaskRecord>);
    this.addEvent(rec.id, 'cancelled', { reason, was });
    this.finish(rec);
    if (was === 'running') for (const w of this.cancelWatchers) queueMicrotask(() => w(rec.id));
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
    const all = [...this.tasks.values()]
      .map((e) => e.rec)
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
