/**
 * Redis task store (node-redis). One hash per task, transitions as Lua scripts
 * (redis-scripts.ts), the outbox as a sorted set. Commands fail fast while Redis is down
 * (no offline queue) and each call has a timeout, so callers get an UnavailableError — the
 * API's 503 — instead of a hang.
 */
import { createHash } from 'node:crypto';
import { createClient, createCluster, type RedisClientOptions, type RedisClientType, type RedisClusterType } from 'redis';
import { sleep } from '../backoff.ts';
import { Batcher } from '../batcher.ts';
import { UnavailableError, errorMessage, withTimeout } from '../errors.ts';
import { DEFAULT_KEY_PREFIX, makeKeys, type Keys } from '../keys.ts';
import type { Logger } from '../logger.ts';
import { silentLogger } from '../logger.ts';
import {
  DEFAULT_TENANT,
  EVENT_TYPES,
  type HandlerEvent,
  type NewTask,
  type Priority,
  type TaskError,
  type TaskEvent,
  type TaskEventType,
  type TaskRecord,
  type TaskStatus,
} from '../task.ts';
import {
  LIST_SCAN_BUDGET,
  type ApiKeyRecord,
  type CancelResult,
  type ClaimOptions,
  type CreateOptions,
  type QuotaUsage,
  type RateState,
  type Scope,
  type TenantLimits,
  type CancelWatch,
  type ClaimResult,
  type CreateResult,
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
  type ListCursor,
  type NewWorkflow,
  type RerunCharge,
  type RerunResult,
  type WorkflowCancelResult,
  type WorkflowEvent,
  type WorkflowRecord,
  type WorkflowStatus,
} from './port.ts';
import { LIMIT_FIELDS, quotaUsageOf } from './access.ts';
import { SCRIPTS, type ScriptName } from './redis-scripts.ts';
import { WatchHub } from './watch-hub.ts';

/** Where Redis is and how to log in: a single node, or the seed node of a Redis Cluster. */
export interface RedisConnectionOptions {
  /** `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS); overrides host, port and db. */
  url?: string | undefined;
  host?: string;
  port?: number;
  /** ACL user (Redis 6+). */
  username?: string | undefined;
  password?: string | undefined;
  db?: number;
  /** TLS to a host:port given without a URL. Default false (a `rediss://` URL turns it on). */
  tls?: boolean;
  /** The node is a seed of a Redis Cluster: the other nodes are discovered from it. Default false. */
  cluster?: boolean;
}

export interface RedisTaskStoreOptions extends TaskStoreOptions, RedisConnectionOptions {
  /**
   * Prefix of every key. Default `{atq}:`. On a cluster it must hold a hash tag (`{…}`):
   * the keys one script touches must share a slot, as BullMQ's do.
   */
  keyPrefix?: string;
  /** Timeout of one store call. Default 5000 ms. */
  opTimeoutMs?: number;
  logger?: Logger;
}

const SHA = Object.fromEntries(Object.entries(SCRIPTS).map(([name, src]) => [name, createHash('sha1').update(src).digest('hex')])) as Record<
  ScriptName,
  string
>;

const json = (v: unknown): string => JSON.stringify(v ?? null);
const num = (s: string | undefined): number | null => (s === undefined || s === '' ? null : Number(s));
const parseJson = (s: string | undefined): unknown => (s === undefined || s === '' ? null : JSON.parse(s));

/** Turns a hash (as an object or a flat field/value list) into a record. */
function toRecord(h: Record<string, string>, output = ''): TaskRecord {
  return {
    id: h.id ?? '',
    tenant: h.tenant || DEFAULT_TENANT,
    type: h.type ?? '',
    status: (h.status ?? 'queued') as TaskStatus,
    input: parseJson(h.input),
    userId: h.user_id || null,
    priority: (h.priority || 'normal') as Priority,
    attempt: num(h.attempt) ?? 0,
    maxAttempts: num(h.max_attempts) ?? 1,
    progress: num(h.progress) ?? 0,
    message: h.message || null,
    output,
    result: parseJson(h.result),
    error: parseJson(h.error) as TaskError | null,
    worker: h.worker || null,
    leaseUntil: num(h.lease_until),
    retryAt: num(h.retry_at),
    resultPublished: h.result_published === '1',
    // Records from before this field were published (or relayed) long since.
    requestPublished: h.request_published !== '0',
    cost: num(h.cost) ?? 0,
    quotaWindow: num(h.quota_window),
    downgraded: h.downgraded === '1',
    traceContext: h.trace ? (JSON.parse(h.trace) as Record<string, string>) : {},
    runAt: num(h.run_at),
    workflowId: h.workflow || null,
    step: h.step || null,
    needs: h.needs ? (JSON.parse(h.needs) as string[]) : [],
    reruns: num(h.reruns) ?? 0,
    createdAt: num(h.created_at) ?? 0,
    startedAt: num(h.started_at),
    finishedAt: num(h.finished_at),
    updatedAt: num(h.updated_at) ?? 0,
  };
}

function pairs(flat: unknown[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1]);
  return out;
}

/** A transition's reply: the code alone, or the code followed by the record (and the steps it readied, `__ready`). */
function toTransitionResult(reply: unknown): TransitionResult {
  if (!Array.isArray(reply)) return { code: reply as Exclude<TransitionCode, 'ok'> };
  const h = pairs(reply.slice(1) as unknown[]);
  const ready = h.__ready;
  return ready ? { code: 'ok', task: toRecord(h), ready: ready.split(',') } : { code: 'ok', task: toRecord(h) };
}

function toWorkflow(h: Record<string, string>): WorkflowRecord | null {
  if (!h.id || !h.tenant) return null;
  return {
    id: h.id,
    tenant: h.tenant,
    name: h.name || null,
    userId: h.user_id || null,
    parentTaskId: h.parent_task || null,
    status: (h.status ?? 'running') as WorkflowStatus,
    steps: (JSON.parse(h.steps ?? '[]') as [string, string][]).map(([step, taskId]) => ({ step, taskId })),
    error: parseJson(h.error) as TaskError | null,
    createdAt: num(h.created_at) ?? 0,
    finishedAt: num(h.finished_at),
  };
}

/** The flat arguments of handler events for the scripts' apply_events (see redis-scripts.ts). */
function eventArgs(events: readonly HandlerEvent[], outputLimit: string): string[] {
  const out = [String(events.length), outputLimit];
  for (const e of events) {
    if (e.type === 'progress') out.push('progress', String(e.data.percent), e.data.message ?? '');
    else out.push(e.type, json(e.data), e.type === 'partial' ? e.data.chunk : '');
  }
  return out;
}

export { DEFAULT_KEY_PREFIX };

function toKey(h: Record<string, string>): ApiKeyRecord | null {
  if (!h.id || !h.tenant) return null;
  return {
    id: h.id,
    tenant: h.tenant,
    scopes: (h.scopes ?? '').split(',').filter((s): s is Scope => s !== ''),
    name: h.name || null,
    createdAt: Number(h.created_at ?? 0),
  };
}

function toLimits(h: Record<string, string>): TenantLimits {
  const out: TenantLimits = {};
  for (const [field, name] of LIMIT_FIELDS) {
    const v = h[name];
    if (v !== undefined && v !== '' && Number.isFinite(Number(v))) out[field] = Number(v);
  }
  return out;
}

type Client = RedisClientType | RedisClusterType;

export class RedisTaskStore implements TaskStore {
  private readonly client: Client;
  private readonly keys: Keys;
  private readonly ttl: string;
  private readonly historyLimit: string;
  private readonly outputLimit: string;
  private readonly takeoverDelay: string;
  private readonly readyDelay: string;
  private readonly opTimeoutMs: number;
  private readonly logger: Logger;
  private readonly cluster: boolean;
  private lastErrorLog = 0;
  private connecting: Promise<unknown> | undefined;
  /** Result marks and outbox disarms ride together: one script per batch. */
  private readonly marks: Batcher<string>;
  private readonly disarms: Batcher<{ id: string; attempt: number }>;
  private hub: WatchHub | undefined;
  private wfHub: WatchHub | undefined;
  private subscriber: Client | undefined;
  private subscriberConnecting: Promise<void> | undefined;
  readonly stats: StoreStats = { roundTrips: 0 };

  constructor(opts: RedisTaskStoreOptions) {
    const prefix = opts.keyPrefix ?? DEFAULT_KEY_PREFIX;
    this.cluster = opts.cluster ?? false;
    if (this.cluster && !/\{[^}]+\}/.test(prefix)) {
      throw new TypeError(`on a Redis Cluster the key prefix needs a hash tag, like {atq}: (got ${JSON.stringify(prefix)})`);
    }
    this.keys = makeKeys(prefix);
    this.ttl = String(opts.resultTtlSeconds ?? 86_400);
    this.historyLimit = String(opts.historyLimit ?? 1000);
    this.outputLimit = String(opts.outputLimitBytes ?? 1024 * 1024);
    this.takeoverDelay = String(opts.takeoverDelayMs ?? 1000);
    this.readyDelay = String(opts.readyPublishDelayMs ?? 2000);
    this.opTimeoutMs = opts.opTimeoutMs ?? 5000;
    this.logger = opts.logger ?? silentLogger;
    this.client = createRedisClient(opts);
    this.client.on('error', (err: unknown) => {
      // node-redis emits an error per failed reconnect; log one line every 10 s at most.
      if (Date.now() - this.lastErrorLog > 10_000) {
        this.lastErrorLog = Date.now();
        this.logger.warn('redis connection error', { err: errorMessage(err) });
      }
    });
    this.client.on('ready', () => this.logger.info('redis connected', { cluster: this.cluster }));
    this.marks = new Batcher({
      maxBatch: 200,
      send: async (ids) => {
        await this.script(
          'markPublished',
          ids.map((id) => this.keys.task(id)),
          [],
        );
        return ids.map(() => undefined);
      },
    });
    this.disarms = new Batcher({
      maxBatch: 200,
      send: async (items) => {
        await this.script(
          'disarmOutbox',
          [this.keys.outbox(), ...items.map((d) => this.keys.task(d.id))],
          items.flatMap((d) => [d.id.toLowerCase(), d.attempt]),
        );
        return items.map(() => undefined);
      },
    });
  }

  /**
   * Starts connecting. Resolves once connected or after `waitMs` (default: the op timeout);
   * never rejects, so a process can start while Redis is down and serve 503s until it is back.
   */
  async connect(waitMs = this.opTimeoutMs): Promise<boolean> {
    this.connecting ??= this.client.connect().catch((err: unknown) => {
      this.logger.warn('redis connect failed', { err: errorMessage(err) });
    });
    await Promise.race([this.connecting, new Promise((r) => setTimeout(r, waitMs).unref())]);
    return this.client.isReady;
  }

  private async call<T>(op: string, fn: () => Promise<T>): Promise<T> {
    this.stats.roundTrips++;
    if (!this.client.isReady) {
      void this.connect(0);
      throw new UnavailableError('redis', `redis is not connected (${op})`);
    }
    try {
      return await withTimeout(fn(), this.opTimeoutMs, () => new UnavailableError('redis', `redis did not answer ${op} within ${this.opTimeoutMs} ms`));
    } catch (err) {
      if (err instanceof UnavailableError) throw err;
      throw new UnavailableError('redis', `redis ${op} failed: ${errorMessage(err)}`, { cause: err });
    }
  }

  private script(name: ScriptName, keys: string[], args: (string | number)[]): Promise<unknown> {
    return this.call(name, async () => {
      const tail = [String(keys.length), ...keys, ...args.map(String)];
      try {
        return await this.send(keys[0], ['EVALSHA', SHA[name], ...tail]);
      } catch (err) {
        if (!errorMessage(err).includes('NOSCRIPT')) throw err;
        return await this.send(keys[0], ['EVAL', SCRIPTS[name], ...tail]);
      }
    });
  }

  /** A raw command; on a cluster it goes to the node of `firstKey`. */
  private send(firstKey: string | undefined, args: string[]): Promise<unknown> {
    if (this.cluster) return (this.client as RedisClusterType).sendCommand(firstKey, false, args);
    return (this.client as RedisClientType).sendCommand(args);
  }

  /** The KEYS and leading ARGVs every transition script shares (see redis-scripts.ts). */
  private frame(id: string): { keys: string[]; args: string[] } {
    const k = this.keys;
    return {
      keys: [k.task(id), k.outbox(), k.events(id), k.expiring(), k.output(id)],
      args: [this.historyLimit, this.ttl, id.toLowerCase()],
    };
  }

  private async transition(name: ScriptName, id: string, args: (string | number)[]): Promise<TransitionCode> {
    const f = this.frame(id);
    return (await this.script(name, f.keys, [...f.args, ...args])) as TransitionCode;
  }

  /** A transition that ends an attempt and answers the record. */
  private async ending(name: ScriptName, id: string, args: (string | number)[], events: readonly HandlerEvent[]): Promise<TransitionResult> {
    const f = this.frame(id);
    return toTransitionResult(await this.script(name, f.keys, [...f.args, ...args, ...eventArgs(events, this.outputLimit)]));
  }

  async create(task: NewTask, publishDueAt: number, opts: CreateOptions = {}): Promise<CreateResult> {
    const id = task.id.toLowerCase();
    const tenant = task.tenant ?? DEFAULT_TENANT;
    const { idempotency: idem, admission: adm } = opts;
    const fields: Record<string, string | number> = {
      id,
      tenant,
      type: task.type,
      status: task.runAt === undefined ? 'queued' : 'scheduled',
      input: json(task.input),
      user_id: task.userId ?? '',
      priority: task.priority,
      attempt: 0,
      max_attempts: task.maxAttempts,
      progress: 0,
      result_published: 0,
      request_published: 0,
      created_at: task.createdAt,
      updated_at: task.createdAt,
    };
    if (task.traceContext && Object.keys(task.traceContext).length > 0) fields.trace = json(task.traceContext);
    // A delayed task is not due before run_at: the relay publishes it then, and a claim before is `busy`.
    if (task.runAt !== undefined) Object.assign(fields, { run_at: task.runAt, retry_at: task.runAt });
    const k = this.keys;
    const keys = [
      k.task(id),
      k.outbox(),
      idem ? k.idempotency(tenant, idem.key) : k.unused(),
      k.events(id),
      k.index(tenant),
      task.userId ? k.userIndex(tenant, task.userId) : k.unused(),
      k.tenant(tenant),
      k.quota(tenant),
      k.rate(tenant, 'submits'),
    ];
    const args = [
      this.historyLimit,
      task.runAt ?? publishDueAt,
      idem ? `${id}|${idem.fingerprint}` : '',
      idem?.ttlSeconds ?? 0,
      adm?.submitsPerSecond ?? 0,
      adm?.quotaUnits ?? 0,
      adm?.quotaWindowSeconds ?? 86_400,
      adm?.cost ?? 0,
      adm?.downgrade ? adm.downgrade.cost : '',
      adm?.downgrade ? json(adm.downgrade.input) : '',
      ...Object.entries(fields).flat(),
    ];
    const [outcome, a, b, c, d, limit, remaining, reset, window] = (await this.script('create', keys, args)) as [string, ...(string | number)[]];
    const rate: RateState | undefined = Number(limit) >= 0 ? { limit: Number(limit), remaining: Number(remaining), resetMs: Number(reset) } : undefined;
    const withRate = <T extends object>(r: T): T & { rate?: RateState } => (rate ? { ...r, rate } : r);
    switch (outcome) {
      case 'created':
        return withRate({ outcome, downgraded: Number(a) === 1 });
      case 'exists':
        return { outcome };
      case 'rate_limited':
        return { outcome, rate: rate ?? { limit: 0, remaining: 0, resetMs: 1000 } };
      case 'quota_exceeded': {
        const windowStart = Number(d);
        const windowSeconds = Number(window);
        const usage = { tenant, units: Number(b), windowSeconds, spent: Number(c), windowStart, resetsAt: windowStart + windowSeconds * 1000 };
        return { outcome, retryAfterMs: Number(a), usage };
      }
      default: {
        const [taskId = '', fingerprint = ''] = String(a ?? '').split('|');
        return withRate({ outcome: 'replay' as const, taskId, fingerprint });
      }
    }
  }

  async get(id: string): Promise<TaskRecord | null> {
    const key = this.keys.task(id);
    const outputKey = this.keys.output(id);
    const [h, output] = (await this.call('get', () => this.client.multi().hGetAll(key).get(outputKey).exec())) as unknown as [
      Record<string, string>,
      string | null,
    ];
    return Object.keys(h).length === 0 ? null : toRecord(h, output ?? '');
  }

  async claim(id: string, worker: string, leaseMs: number, opts: ClaimOptions = {}): Promise<ClaimResult> {
    const f = this.frame(id);
    const args = [...f.args, worker, leaseMs, this.takeoverDelay, opts.maxRunning ?? 0, opts.throttleMs ?? 1000];
    const reply = (await this.script('claim', f.keys, args)) as unknown[];
    const [code, ...rest] = reply;
    if (code === 'missing') return { outcome: 'missing' };
    const task = toRecord(pairs(rest));
    if (code === 'claimed_lost') return { outcome: 'claimed', task, afterLostLease: true };
    if (code === 'claimed' || code === 'terminal' || code === 'busy' || code === 'throttled' || code === 'exhausted') return { outcome: code, task };
    throw new Error(`unexpected claim reply ${String(code)}`);
  }

  renewLease(id: string, worker: string, leaseMs: number): Promise<TransitionCode> {
    return this.transition('renew', id, [worker, leaseMs, this.takeoverDelay]);
  }

  async report(id: string, worker: string, events: readonly HandlerEvent[]): Promise<TransitionCode> {
    if (events.length === 0) return 'ok';
    return this.transition('report', id, [worker, ...eventArgs(events, this.outputLimit)]);
  }

  complete(id: string, worker: string, result: unknown, events: readonly HandlerEvent[] = []): Promise<TransitionResult> {
    return this.ending('complete', id, [worker, json(result), this.readyDelay], events);
  }

  retryLater(id: string, worker: string, error: TaskError, retryAt: number, events: readonly HandlerEvent[] = []): Promise<TransitionResult> {
    return this.ending('retry', id, [worker, json(error), retryAt], events);
  }

  fail(id: string, worker: string, error: TaskError, events: readonly HandlerEvent[] = []): Promise<TransitionResult> {
    return this.ending('fail', id, [worker, json(error)], events);
  }

  async failQueued(id: string, error: TaskError, idempotencyKey?: string, tenant: string = DEFAULT_TENANT): Promise<TransitionCode> {
    const f = this.frame(id);
    const keys = [...f.keys, idempotencyKey === undefined ? this.keys.unused() : this.keys.idempotency(tenant, idempotencyKey)];
    return (await this.script('failQueued', keys, [...f.args, json(error), idempotencyKey === undefined ? '' : '1'])) as TransitionCode;
  }

  markResultPublished(id: string): Promise<void> {
    this.keys.task(id); // a bad id fails here, not the whole batch
    return this.marks.add(id);
  }

  disarmOutbox(id: string, attempt: number): Promise<void> {
    this.keys.task(id);
    return this.disarms.add({ id, attempt });
  }

  async events(id: string, after: string | null, limit: number): Promise<TaskEvent[]> {
    const key = this.keys.events(id);
    const start = after === null ? '-' : `(${after}`;
    const entries = await this.call('events', () => this.client.xRange(key, start, '+', { COUNT: limit }));
    return (entries ?? []).flatMap((e) => {
      if (!e) return [];
      const type = e.message.type as TaskEventType;
      if (!EVENT_TYPES.includes(type)) return [];
      return [{ id: e.id, type, data: parseJson(e.message.data) as Record<string, unknown> }];
    });
  }

  async watch(id: string): Promise<TaskWatch> {
    const channelOf = (taskId: string) => this.keys.events(taskId);
    this.hub ??= new WatchHub({
      subscribe: async (taskId) => {
        const sub = await this.subscriberClient();
        await this.call('subscribe', () => sub.subscribe(channelOf(taskId), () => this.hub?.notify(taskId)));
      },
      unsubscribe: (taskId) => {
        void this.subscriber?.unsubscribe(channelOf(taskId)).catch(() => undefined);
      },
    });
    return this.hub.watch(id);
  }

  /**
   * The one connection of this process that listens for task news. node-redis subscribes it
   * again after a reconnect; news sent meanwhile is lost, so every watch is woken then to
   * read the store again.
   */
  private async subscriberClient(): Promise<Client> {
    if (!this.subscriber) {
      const sub = this.client.duplicate();
      this.subscriber = sub;
      sub.on('error', (err: unknown) => this.logger.debug('redis watch connection error', { err: errorMessage(err) }));
      // Back after a reconnect: wake every watch to read the store again.
      let reconnected = false;
      sub.on(this.cluster ? 'node-reconnecting' : 'reconnecting', () => (reconnected = true));
      sub.on(this.cluster ? 'node-ready' : 'ready', () => {
        if (reconnected) this.hub?.notifyAll();
        reconnected = false;
      });
      this.subscriberConnecting = sub.connect().then(
        () => undefined,
        (err: unknown) => this.logger.warn('redis watch connection failed', { err: errorMessage(err) }),
      );
    }
    const sub = this.subscriber;
    if (!sub.isReady) {
      await Promise.race([this.subscriberConnecting, sleep(this.opTimeoutMs)]);
      if (!sub.isReady) throw new UnavailableError('redis', 'redis is not connected (watch)');
    }
    return sub;
  }

  async cancel(id: string, reason: string | null, tenant?: string): Promise<CancelResult> {
    const f = this.frame(id);
    const reply = (await this.script('cancel', f.keys, [...f.args, reason ?? '', this.keys.cancelChannel(), tenant ?? ''])) as unknown[];
    const [code, ...rest] = reply;
    if (code === 'missing') return { outcome: 'missing' };
    const task = toRecord(pairs(rest));
    if (code === 'terminal') return { outcome: 'terminal', task };
    if (code === 'queued' || code === 'running' || code === 'scheduled' || code === 'waiting') return { outcome: 'cancelled', was: code, task };
    throw new Error(`unexpected cancel reply ${String(code)}`);
  }

  async watchCancellations(onCancel: (id: string) => void): Promise<CancelWatch> {
    // Subscribing takes a connection of its own; node-redis resubscribes after a reconnect.
    // A worker may start while Redis is down: then this keeps connecting in the background,
    // and until it is up a cancel reaches a running task at its next lease renewal.
    const sub = this.client.duplicate();
    sub.on('error', (err: unknown) => this.logger.debug('redis cancel-watch connection error', { err: errorMessage(err) }));
    const ready = (async () => {
      await sub.connect();
      await sub.subscribe(this.keys.cancelChannel(), (id) => onCancel(id));
    })();
    ready.catch((err: unknown) => this.logger.warn('could not watch cancellations', { err: errorMessage(err) }));
    await Promise.race([ready.catch(() => undefined), new Promise((r) => setTimeout(r, this.opTimeoutMs).unref())]);
    return {
      close: async () => {
        try {
          if (sub.isReady) await sub.close();
          else sub.destroy();
        } catch {
          // Already closed, or never opened.
        }
      },
    };
  }

  async list(q: ListQuery): Promise<ListPage> {
    const tenant = q.tenant ?? DEFAULT_TENANT;
    const indexKey = q.userId !== undefined ? this.keys.userIndex(tenant, q.userId) : this.keys.index(tenant);
    return this.scanNewest('list', indexKey, q.limit, q.after, (rec) => {
      // Expired before the sweeper got to it.
      if (!rec) return 'gone';
      const match =
        rec.tenant === tenant &&
        (!q.status || rec.status === q.status) &&
        (!q.type || rec.type === q.type) &&
        (q.userId === undefined || rec.userId === q.userId);
      return match ? 'keep' : 'skip';
    });
  }

  /**
   * Pages through a sorted set of task ids, highest score first, after `after`: up to `limit`
   * records `judge` keeps, looking at LIST_SCAN_BUDGET entries at most. Entries it calls
   * `gone` leave the set.
   */
  private async scanNewest(
    op: string,
    key: string,
    limit: number,
    after: ListCursor | undefined,
    judge: (rec: TaskRecord | null) => 'keep' | 'skip' | 'gone',
  ): Promise<ListPage> {
    const tasks: TaskRecord[] = [];
    const page = 200;
    const top = after ? String(after.createdAt) : '+inf';
    let offset = 0;
    let scanned = 0;
    let last: ListCursor | null = null;
    for (;;) {
      const entries = await this.call(op, () => this.client.zRangeWithScores(key, top, '-inf', { BY: 'SCORE', REV: true, LIMIT: { offset, count: page } }));
      offset += entries.length;
      // Members of one score come newest-id-first (REV): skip what the cursor already passed.
      const fresh = entries.filter((e) => !after || e.score < after.createdAt || e.value < after.id);
      const recs = await Promise.all(fresh.map((e) => this.get(e.value)));
      const gone: string[] = [];
      for (const [i, e] of fresh.entries()) {
        scanned++;
        last = { createdAt: e.score, id: e.value };
        const rec = recs[i] ?? null;
        const verdict = judge(rec);
        if (verdict === 'gone') gone.push(e.value);
        if (verdict !== 'keep' || !rec) continue;
        tasks.push(rec);
        if (tasks.length === limit) return { tasks, next: last };
      }
      // They were before `offset`: step it back.
      if (gone.length > 0) {
        await this.call(op, () => this.client.zRem(key, gone));
        offset -= gone.length;
      }
      if (entries.length < page) return { tasks, next: null };
      if (scanned >= LIST_SCAN_BUDGET) return { tasks, next: last };
    }
  }

  async sweep(limit: number): Promise<number> {
    const k = this.keys;
    const due = await this.call('sweep', () => this.client.zRangeByScore(k.expiring(), '-inf', Date.now(), { LIMIT: { offset: 0, count: limit } }));
    if (due.length === 0) return 0;
    await this.call('sweep', () => {
      const m = this.client.multi();
      for (const member of due) {
        // `<36-char task id><tenant>\n<user id>` (or, from before tenants, `<id><user id>`):
        // the id is a UUID and neither a tenant nor a user id holds a newline, so the split is exact.
        const id = member.slice(0, 36);
        const rest = member.slice(36);
        const nl = rest.indexOf('\n');
        const tenant = nl < 0 ? DEFAULT_TENANT : rest.slice(0, nl);
        const user = nl < 0 ? rest : rest.slice(nl + 1);
        m.zRem(k.index(tenant), id);
        if (user !== '') m.zRem(k.userIndex(tenant, user), id);
        m.zRem(k.expiring(), member);
      }
      return m.exec();
    });
    return due.length;
  }

  async outboxDue(limit: number, holdMs: number): Promise<string[]> {
    return (await this.script('outboxDue', [this.keys.outbox()], [limit, holdMs])) as string[];
  }

  // --- access ---

  async createKey(key: ApiKeyRecord, secretHash: string): Promise<void> {
    const k = this.keys;
    const fields = { id: key.id, tenant: key.tenant, scopes: key.scopes.join(','), name: key.name ?? '', created_at: String(key.createdAt) };
    await this.call('createKey', () => this.client.multi().hSet(k.apiKey(secretHash), fields).hSet(k.apiKeys(), key.id, secretHash).exec());
  }

  async findKey(secretHash: string): Promise<ApiKeyRecord | null> {
    const h = await this.call('findKey', () => this.client.hGetAll(this.keys.apiKey(secretHash)));
    return toKey(h);
  }

  async listKeys(tenant?: string): Promise<ApiKeyRecord[]> {
    const ids = await this.call('listKeys', () => this.client.hGetAll(this.keys.apiKeys()));
    const hashes = Object.values(ids).filter((h) => /^[0-9a-f]{64}$/.test(h));
    if (hashes.length === 0) return [];
    const m = this.client.multi();
    for (const h of hashes) m.hGetAll(this.keys.apiKey(h));
    const rows = (await this.call('listKeys', () => m.exec())) as unknown as Record<string, string>[];
    return rows
      .map(toKey)
      .filter((r): r is ApiKeyRecord => r !== null && (tenant === undefined || r.tenant === tenant))
      .sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1));
  }

  async revokeKey(id: string): Promise<boolean> {
    const hash = await this.call('revokeKey', () => this.client.hGet(this.keys.apiKeys(), id));
    if (!hash) return false;
    const k = this.keys;
    await this.call('revokeKey', () => this.client.multi().del(k.apiKey(hash)).hDel(k.apiKeys(), id).exec());
    return true;
  }

  async tenantLimits(tenant: string): Promise<TenantLimits> {
    return toLimits(await this.call('tenantLimits', () => this.client.hGetAll(this.keys.tenant(tenant))));
  }

  async setTenantLimits(tenant: string, limits: { [K in keyof TenantLimits]?: number | null }): Promise<TenantLimits> {
    const key = this.keys.tenant(tenant);
    const set: Record<string, string> = {};
    const del: string[] = [];
    for (const [field, name] of LIMIT_FIELDS) {
      const v = limits[field];
      if (v === null) del.push(name);
      else if (v !== undefined) set[name] = String(v);
    }
    const m = this.client.multi();
    if (Object.keys(set).length > 0) m.hSet(key, set);
    if (del.length > 0) m.hDel(key, del);
    m.hGetAll(key);
    const replies = (await this.call('setTenantLimits', () => m.exec())) as unknown[];
    return toLimits(replies[replies.length - 1] as Record<string, string>);
  }

  async quotaUsage(tenant: string, defaults: { quotaUnits: number; quotaWindowSeconds: number }): Promise<QuotaUsage> {
    const k = this.keys;
    const [limits, q, time] = (await this.call('quotaUsage', () =>
      this.client.multi().hGetAll(k.tenant(tenant)).hGetAll(k.quota(tenant)).time().exec(),
    )) as unknown as [Record<string, string>, Record<string, string>, [string, string] | Date];
    const now = Array.isArray(time) ? Number(time[0]) * 1000 + Math.floor(Number(time[1]) / 1000) : time instanceof Date ? time.getTime() : Date.now();
    return quotaUsageOf(tenant, toLimits(limits), defaults, q, now);
  }

  async hit(tenant: string, kind: 'reads' | 'submits', perSecond: number): Promise<(RateState & { allowed: boolean }) | null> {
    if (perSecond <= 0) return null;
    const [allowed, limit, remaining, reset] = (await this.script('hit', [this.keys.rate(tenant, kind)], [perSecond])) as number[];
    return { allowed: allowed === 1, limit: Number(limit), remaining: Number(remaining), resetMs: Number(reset) };
  }

  // --- live workers and statistics ---

  async heartbeat(info: WorkerInfo, ttlMs: number): Promise<void> {
    const k = this.keys;
    const { seenAt: _seenAt, ...rest } = info;
    await this.script('heartbeat', [k.workers(), k.workerBeats()], [info.id, JSON.stringify(rest), ttlMs]);
  }

  async workers(): Promise<WorkerInfo[]> {
    const k = this.keys;
    const reply = (await this.script('workers', [k.workers(), k.workerBeats()], [])) as string[];
    const out: WorkerInfo[] = [];
    for (let i = 0; i + 1 < reply.length; i += 2) {
      try {
        out.push(JSON.parse(reply[i + 1] ?? '') as WorkerInfo);
      } catch {
        // A malformed entry is skipped; its worker's next heartbeat rewrites it.
      }
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  async removeWorker(id: string): Promise<void> {
    const k = this.keys;
    await this.call('removeWorker', () => this.client.multi().hDel(k.workers(), id).zRem(k.workerBeats(), id).exec());
  }

  async countTasks(tenant: string, budget: number = LIST_SCAN_BUDGET): Promise<TaskCounts> {
    const index = this.keys.index(tenant);
    const [total, ids] = (await this.call('countTasks', () =>
      this.client
        .multi()
        .zCard(index)
        .zRange(index, 0, budget - 1, { REV: true })
        .exec(),
    )) as unknown as [number, string[]];
    const counts: TaskCounts = {
      byStatus: { scheduled: 0, waiting: 0, queued: 0, running: 0, done: 0, failed: 0, cancelled: 0 },
      byType: {},
      scanned: 0,
      truncated: Number(total) > budget,
    };
    if (ids.length === 0) return counts;
    const m = this.client.multi();
    for (const id of ids) m.hmGet(this.keys.task(id), ['status', 'type', 'tenant']);
    const rows = (await this.call('countTasks', () => m.exec())) as unknown as (string | null)[][];
    for (const [status, type, owner] of rows) {
      // Expired before the sweeper got to it, or (never in practice) another tenant's.
      if (!status || !type || (owner || DEFAULT_TENANT) !== tenant || !(status in counts.byStatus)) continue;
      counts.scanned++;
      counts.byStatus[status as TaskStatus]++;
      counts.byType[type] = (counts.byType[type] ?? 0) + 1;
    }
    return counts;
  }

  // --- delayed tasks, workflows, reruns and dead letters ---

  async createWorkflow(wf: NewWorkflow, publishDueAt: number, opts: CreateWorkflowOptions = {}): Promise<CreateWorkflowResult> {
    const id = wf.id.toLowerCase();
    const tenant = wf.tenant;
    const { admission: adm, idempotency: idem } = opts;
    const taskOf = new Map(wf.steps.map((st) => [st.step, st.task.id.toLowerCase()]));
    const steps = wf.steps.map((st) => {
      const tid = st.task.id.toLowerCase();
      this.keys.task(tid); // a bad id fails here
      const needs = st.needs.map((n) => taskOf.get(n) ?? '');
      const dependents = wf.steps.filter((o) => o.needs.includes(st.step)).map((o) => o.task.id.toLowerCase());
      const fields: Record<string, string | number> = {
        id: tid,
        tenant,
        type: st.task.type,
        status: needs.length > 0 ? 'waiting' : 'queued',
        input: json(st.task.input),
        user_id: st.task.userId ?? '',
        priority: st.task.priority,
        attempt: 0,
        max_attempts: st.task.maxAttempts,
        progress: 0,
        result_published: 0,
        request_published: 0,
        created_at: st.task.createdAt,
        updated_at: st.task.createdAt,
        workflow: id,
        step: st.step,
        needs: json(needs),
        pending: needs.length,
        dependents: json(dependents),
      };
      if (st.task.traceContext && Object.keys(st.task.traceContext).length > 0) fields.trace = json(st.task.traceContext);
      return { id: tid, fields, ready: needs.length === 0 };
    });
    const wfFields = {
      id,
      tenant,
      name: wf.name ?? '',
      user_id: wf.userId ?? '',
      parent_task: wf.parentTaskId ?? '',
      status: 'running',
      steps: json(wf.steps.map((st) => [st.step, st.task.id.toLowerCase()])),
      created_at: wf.createdAt,
    };
    const k = this.keys;
    const keys = [
      k.workflow(id),
      k.outbox(),
      k.workflowIndex(tenant),
      k.index(tenant),
      wf.userId ? k.userIndex(tenant, wf.userId) : k.unused(),
      k.tenant(tenant),
      k.quota(tenant),
      k.rate(tenant, 'submits'),
      idem ? k.workflowIdempotency(tenant, idem.key) : k.unused(),
    ];
    const args = [
      this.historyLimit,
      publishDueAt,
      id,
      adm?.submitsPerSecond ?? 0,
      adm?.quotaUnits ?? 0,
      adm?.quotaWindowSeconds ?? 86_400,
      adm?.cost ?? 0,
      JSON.stringify(wfFields),
      JSON.stringify(steps),
      idem ? `${id}|${idem.fingerprint}` : '',
      idem?.ttlSeconds ?? 0,
    ];
    const [outcome, a, b, c, d, limit, remaining, reset, window] = (await this.script('createWorkflow', keys, args)) as [string, ...(string | number)[]];
    const rate: RateState | undefined = Number(limit) >= 0 ? { limit: Number(limit), remaining: Number(remaining), resetMs: Number(reset) } : undefined;
    if (outcome === 'exists') return { outcome };
    if (outcome === 'rate_limited') return { outcome, rate: rate ?? { limit: 0, remaining: 0, resetMs: 1000 } };
    if (outcome === 'replay') {
      const [workflowId = '', fingerprint = ''] = String(a ?? '').split('|');
      return rate ? { outcome, workflowId, fingerprint, rate } : { outcome, workflowId, fingerprint };
    }
    if (outcome === 'quota_exceeded') {
      const windowStart = Number(d);
      const windowSeconds = Number(window);
      return {
        outcome,
        retryAfterMs: Number(a),
        usage: { tenant, units: Number(b), windowSeconds, spent: Number(c), windowStart, resetsAt: windowStart + windowSeconds * 1000 },
      };
    }
    return rate ? { outcome: 'created', rate } : { outcome: 'created' };
  }

  async getWorkflow(id: string): Promise<WorkflowRecord | null> {
    return toWorkflow(await this.call('getWorkflow', () => this.client.hGetAll(this.keys.workflow(id))));
  }

  async listWorkflows(tenant: string, limit: number, after?: ListCursor): Promise<{ workflows: WorkflowRecord[]; next: ListCursor | null }> {
    const index = this.keys.workflowIndex(tenant);
    const top = after ? String(after.createdAt) : '+inf';
    // One page and one more, past those the cursor already passed at its own time.
    const entries = await this.call('listWorkflows', () =>
      this.client.zRangeWithScores(index, top, '-inf', { BY: 'SCORE', REV: true, LIMIT: { offset: 0, count: limit * 2 + 50 } }),
    );
    const fresh = entries.filter((e) => !after || e.score < after.createdAt || e.value < after.id);
    const recs = await Promise.all(fresh.map((e) => this.getWorkflow(e.value)));
    const gone = fresh.filter((_, i) => recs[i] === null).map((e) => e.value);
    if (gone.length > 0) await this.call('listWorkflows', () => this.client.zRem(index, gone));
    const live = recs.filter((w): w is WorkflowRecord => w !== null && w.tenant === tenant);
    const page = live.slice(0, limit);
    const last = page.at(-1);
    const more = live.length > limit || entries.length === limit * 2 + 50;
    return { workflows: page, next: more && last ? { createdAt: last.createdAt, id: last.id } : null };
  }

  async cancelWorkflow(id: string, reason: string | null, tenant?: string, idempotencyKey?: string): Promise<WorkflowCancelResult> {
    const k = this.keys;
    const keys = [k.workflow(id), idempotencyKey === undefined ? k.unused() : k.workflowIdempotency(tenant ?? DEFAULT_TENANT, idempotencyKey)];
    const args = [this.historyLimit, this.ttl, id.toLowerCase(), reason ?? '', tenant ?? '', idempotencyKey === undefined ? '' : '1'];
    const code = await this.script('cancelWorkflow', keys, args);
    if (code === 'missing') return { outcome: 'missing' };
    const wf = await this.getWorkflow(id);
    if (!wf) return { outcome: 'missing' };
    return code === 'cancelled' ? { outcome: 'cancelled', workflow: wf } : { outcome: 'terminal', workflow: wf };
  }

  async workflowEvents(id: string, after: string | null, limit: number): Promise<WorkflowEvent[]> {
    const key = this.keys.workflowEvents(id);
    const start = after === null ? '-' : `(${after}`;
    const entries = await this.call('workflowEvents', () => this.client.xRange(key, start, '+', { COUNT: limit }));
    return (entries ?? []).flatMap((e) => {
      if (!e) return [];
      const type = e.message.type as TaskEventType;
      if (!EVENT_TYPES.includes(type)) return [];
      return [{ id: e.id, type, data: parseJson(e.message.data) as Record<string, unknown>, taskId: e.message.task ?? '', step: e.message.step ?? '' }];
    });
  }

  async watchWorkflow(id: string): Promise<TaskWatch> {
    const channelOf = (wfId: string) => this.keys.workflowEvents(wfId);
    this.wfHub ??= new WatchHub({
      subscribe: async (wfId) => {
        const sub = await this.subscriberClient();
        await this.call('subscribe', () => sub.subscribe(channelOf(wfId), () => this.wfHub?.notify(wfId)));
      },
      unsubscribe: (wfId) => {
        void this.subscriber?.unsubscribe(channelOf(wfId)).catch(() => undefined);
      },
    });
    return this.wfHub.watch(id.toLowerCase());
  }

  async rerun(id: string, publishDueAt: number, tenant?: string, charge?: RerunCharge): Promise<RerunResult> {
    const f = this.frame(id);
    const args = [...f.args, publishDueAt, tenant ?? '', charge?.quotaUnits ?? 0, charge?.quotaWindowSeconds ?? 86_400, charge?.cost ?? 0];
    const [code, ...rest] = (await this.script('rerun', f.keys, args)) as unknown[];
    if (code === 'missing') return { outcome: 'missing' };
    if (code === 'quota_exceeded') {
      const [retryAfterMs, units, spent, windowStart, windowSeconds] = rest.slice(0, 5).map(Number) as [number, number, number, number, number];
      const usage = { tenant: String(rest[5]), units, windowSeconds, spent, windowStart, resetsAt: windowStart + windowSeconds * 1000 };
      return { outcome: 'quota_exceeded', retryAfterMs, usage };
    }
    const task = toRecord(pairs(rest));
    return code === 'rerun' ? { outcome: 'rerun', task } : { outcome: 'conflict', task };
  }

  deadLetters(q: DeadLetterQuery): Promise<ListPage> {
    return this.scanNewest('deadLetters', this.keys.dead(q.tenant), q.limit, q.after, (rec) => {
      // Expired, or rerun since: no longer a dead letter.
      if (!rec || rec.status !== 'failed') return 'gone';
      return (q.type && rec.type !== q.type) || (q.code && rec.error?.code !== q.code) ? 'skip' : 'keep';
    });
  }

  async ping(): Promise<void> {
    await this.call('ping', () => this.client.ping());
  }

  async close(): Promise<void> {
    // What is still batched goes out first (if Redis is there to take it).
    await Promise.allSettled([this.marks.close(), this.disarms.close()]);
    for (const c of [this.subscriber, this.client]) {
      if (!c) continue;
      if (c.isOpen) {
        try {
          await c.close();
        } catch {
          c.destroy();
        }
      } else if (c === this.subscriber || this.connecting) {
        // Still trying to connect: stop the reconnect loop.
        c.destroy();
      }
    }
  }
}

/** A node-redis client (or cluster client) with our timeouts and reconnect policy. */
export function createRedisClient(opts: RedisConnectionOptions): Client {
  const url = opts.url ? new URL(opts.url) : undefined;
  if (url && url.protocol !== 'redis:' && url.protocol !== 'rediss:')
    throw new TypeError(`REDIS_URL must start with redis:// or rediss:// (got ${url.protocol})`);
  const tls = url ? url.protocol === 'rediss:' : (opts.tls ?? false);
  const host = url ? url.hostname : (opts.host ?? 'localhost');
  const port = url?.port ? Number(url.port) : (opts.port ?? 6379);
  const username = opts.username ?? (url?.username ? decodeURIComponent(url.username) : undefined);
  const password = opts.password ?? (url?.password ? decodeURIComponent(url.password) : undefined);
  const db = url && url.pathname.length > 1 ? Number(url.pathname.slice(1)) : (opts.db ?? 0);
  const socket = {
    connectTimeout: 3000,
    // Keep trying for ever, at most every 2 s: workers and the API recover on their own.
    reconnectStrategy: (retries: number) => Math.min(100 * 2 ** Math.min(retries, 5), 2000),
    ...(tls ? { tls: true as const, servername: host } : {}),
  };
  const common: RedisClientOptions = {
    ...(username ? { username } : {}),
    ...(password ? { password } : {}),
    // Fail commands at once while disconnected instead of queueing them (a hang).
    disableOfflineQueue: true,
  };
  if (opts.cluster) {
    return createCluster({
      rootNodes: [{ socket: { host, port, ...socket } }],
      defaults: { ...common, socket },
    });
  }
  return createClient({ ...common, socket: { host, port, ...socket }, database: db });
}
