/**
 * In-process task store for the embedded default and unit tests. Same semantics as the
 * Redis adapter (the store conformance suite runs against both); JavaScript's single thread
 * makes each method atomic.
 */
import { isTerminal, type NewTask, type TaskError, type TaskRecord } from '../task.ts';
import type { ClaimResult, CreateResult, IdempotencyClaim, TaskStore, TaskStoreOptions, TransitionCode } from './port.ts';

export class MemoryTaskStore implements TaskStore {
  private readonly tasks = new Map<string, { rec: TaskRecord; expiresAt: number | null }>();
  private readonly outbox = new Map<string, number>();
  private readonly idempotency = new Map<string, { taskId: string; fingerprint: string; expiresAt: number }>();
  private readonly ttlMs: number;
  private readonly takeoverDelayMs: number;
  private closed = false;

  constructor(
    opts: TaskStoreOptions = {},
    private readonly now: () => number = Date.now,
  ) {
    this.ttlMs = (opts.resultTtlSeconds ?? 86_400) * 1000;
    this.takeoverDelayMs = opts.takeoverDelayMs ?? 1000;
  }

  private live(id: string): TaskRecord | null {
    const key = id.toLowerCase();
    const entry = this.tasks.get(key);
    if (!entry) return null;
    if (entry.expiresAt !== null && entry.expiresAt <= this.now()) {
      this.tasks.delete(key);
      return null;
    }
    return entry.rec;
  }

  private finish(rec: TaskRecord): void {
    this.outbox.delete(rec.id);
    this.tasks.set(rec.id, { rec, expiresAt: this.now() + this.ttlMs });
  }

  /** Owner check shared by every transition a worker makes on a running task. */
  private owned(id: string, worker: string): TaskRecord | Exclude<TransitionCode, 'ok'> {
    const rec = this.live(id);
    if (!rec) return 'missing';
    if (isTerminal(rec.status)) return 'terminal';
    if (rec.status !== 'running' || rec.worker !== worker) return 'not_owner';
    return rec;
  }

  private sweep(): void {
    const now = this.now();
    for (const [id, { expiresAt }] of this.tasks) if (expiresAt !== null && expiresAt <= now) this.tasks.delete(id);
    for (const [key, { expiresAt }] of this.idempotency) if (expiresAt <= now) this.idempotency.delete(key);
  }

  create(task: NewTask, publishDueAt: number, idem?: IdempotencyClaim): Promise<CreateResult> {
    this.assertOpen();
    if (this.tasks.size % 1024 === 0) this.sweep();
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
    });
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

  progress(id: string, worker: string, percent: number, message: string | null): Promise<TransitionCode> {
    this.assertOpen();
    const rec = this.owned(id, worker);
    if (typeof rec === 'string') return Promise.resolve(rec);
    rec.progress = percent;
    rec.message = message;
    rec.updatedAt = this.now();
    return Promise.resolve('ok');
  }

  complete(id: string, worker: string, result: unknown): Promise<TransitionCode> {
    this.assertOpen();
    const rec = this.owned(id, worker);
    if (typeof rec === 'string') return Promise.resolve(rec);
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
    return Promise.resolve('ok');
  }

  retryLater(id: string, worker: string, error: TaskError, retryAt: number): Promise<TransitionCode> {
    this.assertOpen();
    const rec = this.owned(id, worker);
    if (typeof rec === 'string') return Promise.resolve(rec);
    Object.assign(rec, {
      status: 'queued',
      error,
      worker: null,
      leaseUntil: null,
      retryAt,
      updatedAt: this.now(),
    } satisfies Partial<TaskRecord>);
    this.outbox.set(rec.id, retryAt);
    return Promise.resolve('ok');
  }

  fail(id: string, worker: string, error: TaskError): Promise<TransitionCode> {
    this.assertOpen();
    const rec = this.owned(id, worker);
    if (typeof rec === 'string') return Promise.resolve(rec);
    const now = this.now();
    Object.assign(rec, { status: 'failed', error, leaseUntil: null, finishedAt: now, updatedAt: now } satisfies Partial<TaskRecord>);
    this.finish(rec);
    return Promise.resolve('ok');
  }

  failQueued(id: string, error: TaskError): Promise<TransitionCode> {
    this.assertOpen();
    const rec = this.live(id);
    if (!rec) return Promise.resolve('missing');
    if (isTerminal(rec.status)) return Promise.resolve('terminal');
    if (rec.status !== 'queued') return Promise.resolve('conflict');
    const now = this.now();
    Object.assign(rec, { status: 'failed', error, resultPublished: true, finishedAt: now, updatedAt: now } satisfies Partial<TaskRecord>);
    this.finish(rec);
    return Promise.resolve('ok');
  }

  markResultPublished(id: string): Promise<void> {
    this.assertOpen();
    const rec = this.live(id);
    if (rec) rec.resultPublished = true;
    return Promise.resolve();
  }

  outboxPublished(id: string, attempt: number): Promise<void> {
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

  ping(): Promise<void> {
    this.assertOpen();
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('task store is closed');
  }
}
