/**
 * The Lua scripts behind the Redis task store. Each is one atomic transition that answers a
 * code (and, for claim, the record). Time comes from the Redis server (TIME), so leases do
 * not depend on the clocks of the workers.
 *
 * Keys: KEYS[1] is the task hash, KEYS[2] the outbox sorted set.
 */
const PRELUDE = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function terminal(s) return s == 'done' or s == 'failed' or s == 'cancelled' end
-- Owner check shared by every transition a worker makes on a running task.
local function owned(worker)
  local f = redis.call('HMGET', KEYS[1], 'status', 'worker')
  if not f[1] then return 'missing' end
  if terminal(f[1]) then return 'terminal' end
  if f[1] ~= 'running' or f[2] ~= worker then return 'not_owner' end
  return nil
end
local function with_record(code)
  local r = redis.call('HGETALL', KEYS[1])
  table.insert(r, 1, code)
  return r
end
`;

export const SCRIPTS = {
  /**
   * KEYS[3]: idempotency key, or '' for none.
   * ARGV: publishDueAt, idempotency value (taskId|fingerprint), ttlSeconds, field, value, ...
   */
  create: `${PRELUDE}
if KEYS[3] ~= '' then
  local bound = redis.call('GET', KEYS[3])
  if bound then return {'replay', bound} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
local args = {}
for i = 4, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(args))
redis.call('ZADD', KEYS[2], ARGV[1], redis.call('HGET', KEYS[1], 'id'))
if KEYS[3] ~= '' then redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[3]) end
return {'created'}`,

  /** ARGV: worker, leaseMs, takeoverDelayMs, id */
  claim: `${PRELUDE}
local now = now_ms()
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_until', 'retry_at')
if not f[1] then return {'missing'} end
if terminal(f[1]) then return with_record('terminal') end
if f[1] == 'running' and tonumber(f[2]) and tonumber(f[2]) > now then return with_record('busy') end
if f[1] == 'queued' and tonumber(f[3]) and tonumber(f[3]) > now then return with_record('busy') end
local lease = now + tonumber(ARGV[2])
redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'lease_until', lease,
  'retry_at', '', 'started_at', now, 'updated_at', now)
redis.call('ZADD', KEYS[2], lease + tonumber(ARGV[3]), ARGV[4])
return with_record('claimed')`,

  /** ARGV: worker, leaseMs, takeoverDelayMs, id */
  renew: `${PRELUDE}
local bad = owned(ARGV[1]); if bad then return bad end
local lease = now_ms() + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'lease_until', lease)
redis.call('ZADD', KEYS[2], lease + tonumber(ARGV[3]), ARGV[4])
return 'ok'`,

  /** ARGV: worker, percent, message */
  progress: `${PRELUDE}
local bad = owned(ARGV[1]); if bad then return bad end
redis.call('HSET', KEYS[1], 'progress', ARGV[2], 'message', ARGV[3], 'updated_at', now_ms())
return 'ok'`,

  /** ARGV: worker, resultJson, ttlSeconds, id */
  complete: `${PRELUDE}
local bad = owned(ARGV[1]); if bad then return bad end
local now = now_ms()
redis.call('HSET', KEYS[1], 'status', 'done', 'result', ARGV[2], 'progress', 100, 'lease_until', '',
  'finished_at', now, 'updated_at', now)
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 'ok'`,

  /** ARGV: worker, errorJson, retryAt, id */
  retry: `${PRELUDE}
local bad = owned(ARGV[1]); if bad then return bad end
redis.call('HSET', KEYS[1], 'status', 'queued', 'error', ARGV[2], 'worker', '', 'lease_until', '',
  'retry_at', ARGV[3], 'updated_at', now_ms())
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 'ok'`,

  /** ARGV: worker, errorJson, ttlSeconds, id */
  fail: `${PRELUDE}
local bad = owned(ARGV[1]); if bad then return bad end
local now = now_ms()
redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[2], 'lease_until', '',
  'finished_at', now, 'updated_at', now)
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 'ok'`,

  /** ARGV: errorJson, ttlSeconds, id */
  failQueued: `${PRELUDE}
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'missing' end
if terminal(s) then return 'terminal' end
if s ~= 'queued' then return 'conflict' end
local now = now_ms()
redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[1], 'result_published', 1,
  'finished_at', now, 'updated_at', now)
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 'ok'`,

  markPublished: `
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'result_published', 1) end
return 'ok'`,

  /** ARGV: id, attempt that was published */
  outboxPublished: `${PRELUDE}
local f = redis.call('HMGET', KEYS[1], 'status', 'attempt')
if not f[1] or terminal(f[1]) or (f[1] == 'queued' and tonumber(f[2]) == tonumber(ARGV[2])) then
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 'ok'`,

  /** KEYS[1]: outbox. ARGV: limit, holdMs */
  outboxDue: `${PRELUDE}
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id) end
return ids`,
} as const;

export type ScriptName = keyof typeof SCRIPTS;
