/** In-process schedule store: the embedded mode's, and the unit tests'. Same semantics as the Redis one. */
import type { CommitResult, ScheduleCommit, ScheduleCursor, SchedulePage, ScheduleRecord, ScheduleStore } from './port.ts';

const copy = (s: ScheduleRecord): ScheduleRecord => structuredClone(s);

export class MemoryScheduleStore implements ScheduleStore {
  private readonly records = new Map<string, ScheduleRecord>();
  /** id → when it is next due (absent: paused, or no next run). */
  private readonly dueAt = new Map<string, number>();
  private closed = false;

  private assertOpen(): void {
    if (this.closed) throw new Error('schedule store is closed');
  }

  private place(s: ScheduleRecord, at: number | null): void {
    if (s.paused || at === null) this.dueAt.delete(s.id);
    else this.dueAt.set(s.id, at);
  }

  create(s: ScheduleRecord): Promise<void> {
    this.assertOpen();
    if (this.records.has(s.id)) return Promise.reject(new Error(`schedule id collision: ${s.id}`));
    this.records.set(s.id, copy(s));
    this.place(s, s.nextRunAt);
    return Promise.resolve();
  }

  get(id: string): Promise<ScheduleRecord | null> {
    this.assertOpen();
    const s = this.records.get(id);
    return Promise.resolve(s ? copy(s) : null);
  }

  list(tenant: string, limit: number, after?: ScheduleCursor): Promise<SchedulePage> {
    this.assertOpen();
    const all = [...this.records.values()]
      .filter((s) => s.tenant === tenant)
      .sort((a, b) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : -1))
      .filter((s) => !after || s.createdAt < after.createdAt || (s.createdAt === after.createdAt && s.id < after.id));
    const page = all.slice(0, limit);
    const last = page[page.length - 1];
    return Promise.resolve({ schedules: page.map(copy), next: all.length > limit && last ? { createdAt: last.createdAt, id: last.id } : null });
  }

  setPaused(id: string, tenant: string, paused: boolean, nextRunAt: number | null, now: number): Promise<ScheduleRecord | null> {
    this.assertOpen();
    const s = this.records.get(id);
    if (!s || s.tenant !== tenant) return Promise.resolve(null);
    if (s.paused !== paused) {
      s.paused = paused;
      s.updatedAt = now;
      if (!paused) s.nextRunAt = nextRunAt;
      this.place(s, s.nextRunAt);
    }
    return Promise.resolve(copy(s));
  }

  delete(id: string, tenant: string): Promise<boolean> {
    this.assertOpen();
    const s = this.records.get(id);
    if (!s || s.tenant !== tenant) return Promise.resolve(false);
    this.records.delete(id);
    this.dueAt.delete(id);
    return Promise.resolve(true);
  }

  due(now: number, limit: number): Promise<string[]> {
    this.assertOpen();
    const ids = [...this.dueAt.entries()]
      .filter(([, at]) => at <= now)
      .sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : 1))
      .slice(0, limit)
      .map(([id]) => id);
    return Promise.resolve(ids);
  }

  lease(id: string, now: number, leaseMs: number): Promise<ScheduleRecord | null> {
    this.assertOpen();
    const at = this.dueAt.get(id);
    const s = this.records.get(id);
    if (at === undefined || at > now || !s || s.paused) return Promise.resolve(null);
    this.dueAt.set(id, now + leaseMs);
    return Promise.resolve(copy(s));
  }

  commit(id: string, expectedNextRunAt: number | null, c: ScheduleCommit): Promise<CommitResult> {
    this.assertOpen();
    const s = this.records.get(id);
    if (!s || s.nextRunAt !== expectedNextRunAt) return Promise.resolve('conflict');
    s.nextRunAt = c.nextRunAt;
    s.updatedAt = c.updatedAt;
    if (c.fired) {
      s.lastFiredAt = c.fired.slotAt;
      s.lastTaskId = c.fired.taskId;
      s.fired++;
    }
    s.skipped += c.skipped ?? 0;
    if (c.error !== undefined) s.lastError = c.error;
    this.place(s, c.dueAt);
    return Promise.resolve(s.paused ? 'paused' : 'ok');
  }

  ping(): Promise<void> {
    this.assertOpen();
    return Promise.resolve();
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}
