/**
 * Redis schedule store (node-redis), with the task store's connection options, reconnect
 * policy and key prefix (so its keys share the deployment's hash tag). One hash per schedule,
 * a sorted set per tenant for listing, and one sorted set of active schedules by the time each
 * is next due. Every write that two replicas may race on is one Lua script.
 */
import { createHash } from 'node:crypto';
import type { RedisClientType, RedisClusterType } from 'redis';
import { UnavailableError, errorMessage, withTimeout } from '../errors.ts';
import { DEFAULT_KEY_PREFIX, makeKeys, type Keys } from '../keys.ts';
import { silentLogger, type Logger } from '../logger.ts';
import { createRedisClient, type RedisConnectionOptions } from '../store/redis.ts';
import type {
  CatchUpPolicy,
  CommitResult,
  ScheduleCommit,
  ScheduleCursor,
  ScheduleError,
  SchedulePage,
  ScheduleRecord,
  ScheduleStore,
  ScheduledTask,
} from './port.ts';

export interface RedisScheduleStoreOptions extends RedisConnectionOptions {
  /** Prefix of every key, as the task store's. Default `{atq}:`. */
  keyPrefix?: string;
  /** Timeout of one store call. Default 5000 ms. */
  opTimeoutMs?: number;
  logger?: Logger;
}

/** KEYS: schedule, tenant index, due. ARGV: id, created_at, due_at ('' = not due), field/value pairs. */
const CREATE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local f = {}
for i = 4, #ARGV do f[#f + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(f))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1]) end
return 1`;

/** KEYS: schedule, due. ARGV: id, now, lease end. A stale due entry (deleted or paused schedule) is dropped. */
const LEASE = `
local at = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not at or tonumber(at) > tonumber(ARGV[2]) then return false end
if redis.call('HGET', KEYS[1], 'paused') ~= '0' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return false
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return redis.call('HGETALL', KEYS[1])`;

/**
 * KEYS: schedule, due. ARGV: id, expected next_run_at, next_run_at, due_at, updated_at,
 * fired slot ('' = none), fired task id, skipped, error mode (keep|clear|set), error JSON.
 * Compare-and-set on next_run_at ('' is null on both sides). Answers 1 (ok), 2 (recorded, but paused) or 0 (conflict).
 */
const COMMIT = `
local cur = redis.call('HGET', KEYS[1], 'next_run_at')
if not cur or cur ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'next_run_at', ARGV[3], 'updated_at', ARGV[5])
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'last_fired_at', ARGV[6], 'last_task_id', ARGV[7])
  redis.call('HINCRBY', KEYS[1], 'fired', 1)
end
if tonumber(ARGV[8]) > 0 then redis.call('HINCRBY', KEYS[1], 'skipped', ARGV[8]) end
if ARGV[9] == 'clear' then redis.call('HSET', KEYS[1], 'last_error', '')
elseif ARGV[9] == 'set' then redis.call('HSET', KEYS[1], 'last_error', ARGV[10]) end
if redis.call('HGET', KEYS[1], 'paused') == '1' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 2
end
if ARGV[4] == '' then redis.call('ZREM', KEYS[2], ARGV[1]) else redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1]) end
return 1`;

/** KEYS: schedule, due. ARGV: id, tenant, paused (1|0), next_run_at on resume ('' = none), now. */
const SET_PAUSED = `
if redis.call('HGET', KEYS[1], 'tenant') ~= ARGV[2] then return false end
if redis.call('HGET', KEYS[1], 'paused') ~= ARGV[3] then
  redis.call('HSET', KEYS[1], 'paused', ARGV[3], 'updated_at', ARGV[5])
  if ARGV[3] == '1' then
    redis.call('ZREM', KEYS[2], ARGV[1])
  else
    redis.call('HSET', KEYS[1], 'next_run_at', ARGV[4])
    if ARGV[4] ~= '' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1]) end
  end
end
return redis.call('HGETALL', KEYS[1])`;

/** KEYS: schedule, tenant index, due. ARGV: id, tenant. */
const DELETE = `
if redis.call('HGET', KEYS[1], 'tenant') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1`;

const SCRIPTS = { create: CREATE, lease: LEASE, commit: COMMIT, setPaused: SET_PAUSED, delete: DELETE } as const;
type ScriptName = keyof typeof SCRIPTS;
const SHA = Object.fromEntries(Object.entries(SCRIPTS).map(([n, src]) => [n, createHash('sha1').update(src).digest('hex')])) as Record<ScriptName, string>;

const opt = (n: number | null): string => (n === null ? '' : String(n));
const num = (s: string | undefined): number | null => (s === undefined || s === '' ? null : Number(s));

function pairs(flat: unknown[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1]);
  return out;
}

function fieldsOf(s: ScheduleRecord): Record<string, string> {
  return {
    id: s.id,
    tenant: s.tenant,
    name: s.name ?? '',
    cron: s.cron,
    timezone: s.timezone,
    task: JSON.stringify(s.task),
    catch_up: s.catchUp,
    paused: s.paused ? '1' : '0',
    created_at: String(s.createdAt),
    updated_at: String(s.updatedAt),
    next_run_at: opt(s.nextRunAt),
    last_fired_at: opt(s.lastFiredAt),
    last_task_id: s.lastTaskId ?? '',
    fired: String(s.fired),
    skipped: String(s.skipped),
    last_error: s.lastError ? JSON.stringify(s.lastError) : '',
  };
}

function toSchedule(h: Record<string, string>): ScheduleRecord {
  const task = JSON.parse(h.task ?? '{}') as Partial<ScheduledTask>;
  return {
    id: h.id ?? '',
    tenant: h.tenant ?? '',
    name: h.name || null,
    cron: h.cron ?? '',
    timezone: h.timezone ?? 'UTC',
    task: {
      type: task.type ?? '',
      input: task.input ?? null,
      userId: task.userId ?? null,
      priority: task.priority ?? 'normal',
      maxAttempts: task.maxAttempts ?? null,
    },
    catchUp: (h.catch_up || 'latest') as CatchUpPolicy,
    paused: h.paused === '1',
    createdAt: num(h.created_at) ?? 0,
    updatedAt: num(h.updated_at) ?? 0,
    nextRunAt: num(h.next_run_at),
    lastFiredAt: num(h.last_fired_at),
    lastTaskId: h.last_task_id || null,
    fired: num(h.fired) ?? 0,
    skipped: num(h.skipped) ?? 0,
    lastError: h.last_error ? (JSON.parse(h.last_error) as ScheduleError) : null,
  };
}

type Client = RedisClientType | RedisClusterType;

export class RedisScheduleStore implements ScheduleStore {
  private readonly client: Client;
  private readonly keys: Keys;
  private readonly cluster: boolean;
  private readonly opTimeoutMs: number;
  private readonly logger: Logger;
  private connecting: Promise<unknown> | undefined;
  private lastErrorLog = 0;

  constructor(opts: RedisScheduleStoreOptions) {
    const prefix = opts.keyPrefix ?? DEFAULT_KEY_PREFIX;
    this.cluster = opts.cluster ?? false;
    if (this.cluster && !/\{[^}]+\}/.test(prefix)) {
      throw new TypeError(`on a Redis Cluster the key prefix needs a hash tag, like {atq}: (got ${JSON.stringify(prefix)})`);
    }
    this.keys = makeKeys(prefix);
    this.opTimeoutMs = opts.opTimeoutMs ?? 5000;
    this.logger = opts.logger ?? silentLogger;
    this.client = createRedisClient(opts);
    this.client.on('error', (err: unknown) => {
      if (Date.now() - this.lastErrorLog > 10_000) {
        this.lastErrorLog = Date.now();
        this.logger.warn('redis connection error (schedules)', { err: errorMessage(err) });
      }
    });
  }

  /** Starts connecting; resolves once connected or after `waitMs`, never rejects (as the task store's). */
  async connect(waitMs = this.opTimeoutMs): Promise<boolean> {
    this.connecting ??= this.client.connect().catch((err: unknown) => {
      this.logger.warn('redis connect failed (schedules)', { err: errorMessage(err) });
    });
    await Promise.race([this.connecting, new Promise((r) => setTimeout(r, waitMs).unref())]);
    return this.client.isReady;
  }

  private async call<T>(op: string, fn: () => Promise<T>): Promise<T> {
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

  private send(firstKey: string | undefined, args: string[]): Promise<unknown> {
    if (this.cluster) return (this.client as RedisClusterType).sendCommand(firstKey, false, args);
    return (this.client as RedisClientType).sendCommand(args);
  }

  private script(name: ScriptName, keys: string[], args: (string | number)[]): Promise<unknown> {
    return this.call(`schedule ${name}`, async () => {
      const tail = [String(keys.length), ...keys, ...args.map(String)];
      try {
        return await this.send(keys[0], ['EVALSHA', SHA[name], ...tail]);
      } catch (err) {
        if (!errorMessage(err).includes('NOSCRIPT')) throw err;
        return await this.send(keys[0], ['EVAL', SCRIPTS[name], ...tail]);
      }
    });
  }

  async create(s: ScheduleRecord): Promise<void> {
    const k = this.keys;
    const dueAt = s.paused ? null : s.nextRunAt;
    const created = await this.script(
      'create',
      [k.schedule(s.id), k.scheduleIndex(s.tenant), k.schedulesDue()],
      [s.id, s.createdAt, opt(dueAt), ...Object.entries(fieldsOf(s)).flat()],
    );
    if (Number(created) !== 1) throw new Error(`schedule id collision: ${s.id}`);
  }

  async get(id: string): Promise<ScheduleRecord | null> {
    const key = this.keys.schedule(id);
    const h = await this.call('schedule get', () => this.client.hGetAll(key));
    return Object.keys(h).length === 0 ? null : toSchedule(h);
  }

  async list(tenant: string, limit: number, after?: ScheduleCursor): Promise<SchedulePage> {
    const index = this.keys.scheduleIndex(tenant);
    const top = after ? String(after.createdAt) : '+inf';
    const out: ScheduleRecord[] = [];
    const page = 200;
    for (let offset = 0; ;) {
      const entries = await this.call('schedule list', () =>
        this.client.zRangeWithScores(index, top, '-inf', { BY: 'SCORE', REV: true, LIMIT: { offset, count: page } }),
      );
      offset += entries.length;
      // Members of one score come highest id first (REV): skip what the cursor already passed.
      const fresh = entries.filter((e) => !after || e.score < after.createdAt || e.value < after.id);
      if (fresh.length > 0) {
        const m = this.client.multi();
        for (const e of fresh) m.hGetAll(this.keys.schedule(e.value));
        const rows = (await this.call('schedule list', () => m.exec())) as unknown as Record<string, string>[];
        for (const h of rows) {
          if (Object.keys(h).length === 0) continue;
          const s = toSchedule(h);
          if (s.tenant !== tenant) continue;
          if (out.length === limit) return { schedules: out, next: cursorOf(out) };
          out.push(s);
        }
      }
      if (entries.length < page) return { schedules: out, next: null };
    }
  }

  async setPaused(id: string, tenant: string, paused: boolean, nextRunAt: number | null, now: number): Promise<ScheduleRecord | null> {
    const k = this.keys;
    const reply = await this.script('setPaused', [k.schedule(id), k.schedulesDue()], [id, tenant, paused ? '1' : '0', opt(nextRunAt), now]);
    return Array.isArray(reply) ? toSchedule(pairs(reply as unknown[])) : null;
  }

  async delete(id: string, tenant: string): Promise<boolean> {
    const k = this.keys;
    return Number(await this.script('delete', [k.schedule(id), k.scheduleIndex(tenant), k.schedulesDue()], [id, tenant])) === 1;
  }

  async due(now: number, limit: number): Promise<string[]> {
    const key = this.keys.schedulesDue();
    return this.call('schedule due', () => this.client.zRangeByScore(key, '-inf', now, { LIMIT: { offset: 0, count: limit } }));
  }

  async lease(id: string, now: number, leaseMs: number): Promise<ScheduleRecord | null> {
    const k = this.keys;
    const reply = await this.script('lease', [k.schedule(id), k.schedulesDue()], [id, now, now + leaseMs]);
    return Array.isArray(reply) ? toSchedule(pairs(reply as unknown[])) : null;
  }

  async commit(id: string, expectedNextRunAt: number | null, c: ScheduleCommit): Promise<CommitResult> {
    const k = this.keys;
    const errorMode = c.error === undefined ? 'keep' : c.error === null ? 'clear' : 'set';
    const reply = await this.script(
      'commit',
      [k.schedule(id), k.schedulesDue()],
      [
        id,
        opt(expectedNextRunAt),
        opt(c.nextRunAt),
        opt(c.dueAt),
        c.updatedAt,
        c.fired ? c.fired.slotAt : '',
        c.fired ? c.fired.taskId : '',
        c.skipped ?? 0,
        errorMode,
        c.error ? JSON.stringify(c.error) : '',
      ],
    );
    return Number(reply) === 1 ? 'ok' : Number(reply) === 2 ? 'paused' : 'conflict';
  }

  async ping(): Promise<void> {
    await this.call('ping', () => this.client.ping());
  }

  async close(): Promise<void> {
    const c = this.client;
    if (c.isOpen) {
      try {
        await c.close();
      } catch {
        c.destroy();
      }
    } else if (this.connecting) {
      c.destroy();
    }
  }
}

function cursorOf(out: ScheduleRecord[]): ScheduleCursor | null {
  const last = out[out.length - 1];
  return last ? { createdAt: last.createdAt, id: last.id } : null;
}
