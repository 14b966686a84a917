/**
 * The Lua scripts behind the Redis task store. Each is one atomic transition that answers a
 * code (and, for claim and cancel, the record). Time comes from the Redis server (TIME), so
 * leases do not depend on the clocks of the workers. Every transition appends its event to
 * the task's history stream in the same step, so the history never disagrees with the record.
 *
 * Every script that adds to a history also publishes on a channel named like the history
 * stream, so watches (SSE, waits) learn of it at once without polling.
 *
 * Transitions share their KEYS and first ARGVs:
 *   KEYS[1] task hash, KEYS[2] outbox zset, KEYS[3] events stream, KEYS[4] expiring zset,
 *   KEYS[5] output string (partial output);
 *   ARGV[1] history limit (exact stream MAXLEN), ARGV[2] ttl seconds of a finished task, ARGV[3] id;
 *   their own arguments from ARGV[4].
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
-- data is a JSON object text, built by the caller or here with cjson.
local function add_event(kind, data)
  redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[1], '*', 'type', kind, 'data', data)
end
-- Wakes whoever watches this task (SSE streams, waits): the channel is named like the stream.
local function notify() redis.call('PUBLISH', KEYS[3], '') end
-- A handler's events, from ARGV[i]: their count, the output limit in bytes, then three
-- values per event: progress (percent, message), log (data JSON, ''), partial (data JSON, chunk).
local function apply_events(i)
  local n = tonumber(ARGV[i])
  local limit = tonumber(ARGV[i + 1])
  local j = i + 2
  -- One HSET for the last progress, one APPEND for the chunks that fit: a burst of events
  -- costs an XADD each and little more.
  local percent, message, outlen
  local out = {}
  for _ = 1, n do
    local kind, a, b = ARGV[j], ARGV[j + 1], ARGV[j + 2]
    j = j + 3
    if kind == 'progress' then
      percent, message = a, b
      local msg = cjson.null
      if b ~= '' then msg = b end
      add_event('progress', cjson.encode({percent = tonumber(a), message = msg}))
    else
      if kind == 'partial' then
        outlen = outlen or redis.call('STRLEN', KEYS[5])
        if outlen + #b <= limit then
          out[#out + 1] = b
          outlen = outlen + #b
        end
      end
      add_event(kind, a)
    end
  end
  if #out > 0 then redis.call('APPEND', KEYS[5], table.concat(out)) end
  if percent then redis.call('HSET', KEYS[1], 'progress', percent, 'message', message, 'updated_at', now_ms()) end
  return n
end
-- A task reached done, failed or cancelled: it leaves the outbox, and it and its history
-- expire after the ttl; the sweeper drops it from the listing indexes then.
local function finish(now)
  local ttl = tonumber(ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
  redis.call('EXPIRE', KEYS[5], ttl)
  local user = redis.call('HGET', KEYS[1], 'user_id') or ''
  redis.call('ZADD', KEYS[4], now + ttl * 1000, ARGV[3] .. user)
end
`;

export const SCRIPTS = {
  /**
   * KEYS[1] task, KEYS[2] outbox, KEYS[3] idempotency key (or the unused key), KEYS[4] events,
   * KEYS[5] index, KEYS[6] user index (or the unused key). No key is ever '': on a cluster
   * an empty key would hash to another slot.
   * ARGV: historyLimit, publishDueAt, idempotency value (taskId|fingerprint), ttlSeconds, field, value, ...
   */
  create: `${PRELUDE}
if ARGV[3] ~= '' then
  local bound = redis.call('GET', KEYS[3])
  if bound then return {'replay', bound} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
local args = {}
for i = 5, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(args))
local f = redis.call('HMGET', KEYS[1], 'id', 'created_at')
redis.call('ZADD', KEYS[2], ARGV[2], f[1])
redis.call('ZADD', KEYS[5], f[2], f[1])
if redis.call('HGET', KEYS[1], 'user_id') ~= '' then redis.call('ZADD', KEYS[6], f[2], f[1]) end
if ARGV[3] ~= '' then redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[4]) end
redis.call('XADD', KEYS[4], 'MAXLEN', ARGV[1], '*', 'type', 'status', 'data', '{"status":"queued","attempt":0}')
return {'created'}`,

  /** ARGV[4..]: worker, leaseMs, takeoverDelayMs */
  claim: `${PRELUDE}
local now = now_ms()
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_until', 'retry_at')
if not f[1] then return {'missing'} end
if terminal(f[1]) then return with_record('terminal') end
if f[1] == 'running' and tonumber(f[2]) and tonumber(f[2]) > now then return with_record('busy') end
if f[1] == 'queued' and tonumber(f[3]) and tonumber(f[3]) > now then return with_record('busy') end
local lease = now + tonumber(ARGV[5])
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[4], 'lease_until', lease,
  'retry_at', '', 'started_at', now, 'updated_at', now)
redis.call('ZADD', KEYS[2], lease + tonumber(ARGV[6]), ARGV[3])
add_event('status', cjson.encode({status = 'running', attempt = attempt, worker = ARGV[4]}))
notify()
return with_record('claimed')`,

  /** ARGV[4..]: worker, leaseMs, takeoverDelayMs */
  renew: `${PRELUDE}
local bad = owned(ARGV[4]); if bad then return bad end
local lease = now_ms() + tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'lease_until', lease)
redis.call('ZADD', KEYS[2], lease + tonumber(ARGV[6]), ARGV[3])
return 'ok'`,

  /** ARGV[4..]: worker, then the events (apply_events) */
  report: `${PRELUDE}
local bad = owned(ARGV[4]); if bad then return bad end
if apply_events(5) > 0 then notify() end
return 'ok'`,

  /** ARGV[4..]: worker, resultJson, then the handler's pending events. Answers the record. */
  complete: `${PRELUDE}
local bad = owned(ARGV[4]); if bad then return bad end
apply_events(6)
local now = now_ms()
redis.call('HSET', KEYS[1], 'status', 'done', 'result', ARGV[5], 'progress', 100, 'lease_until', '',
  'finished_at', now, 'updated_at', now)
add_event('done', '{"result":' .. ARGV[5] .. '}')
finish(now)
notify()
return with_record('ok')`,

  /** ARGV[4..]: worker, errorJson, retryAt, then the handler's pending events. Answers the record. */
  retry: `${PRELUDE}
local bad = owned(ARGV[4]); if bad then return bad end
apply_events(7)
redis.call('HSET', KEYS[1], 'status', 'queued', 'error', ARGV[5], 'worker', '', 'lease_until', '',
  'retry_at', ARGV[6], 'updated_at', now_ms())
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[3])
local attempt = redis.call('HGET', KEYS[1], 'attempt')
add_event('status', '{"status":"queued","attempt":' .. attempt .. ',"retry_at":' .. ARGV[6] .. ',"error":' .. ARGV[5] .. '}')
notify()
return with_record('ok')`,

  /** ARGV[4..]: worker, errorJson, then the handler's pending events. Answers the record. */
  fail: `${PRELUDE}
local bad = owned(ARGV[4]); if bad then return bad end
apply_events(6)
local now = now_ms()
redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[5], 'lease_until', '',
  'finished_at', now, 'updated_at', now)
add_event('failed', '{"error":' .. ARGV[5] .. '}')
finish(now)
notify()
return with_record('ok')`,

  /** KEYS[6]: idempotency key to release if it names this task (or the unused key). ARGV[4..]: errorJson, '1' when KEYS[6] is real */
  failQueued: `${PRELUDE}
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'missing' end
if terminal(s) then return 'terminal' end
if s ~= 'queued' then return 'conflict' end
local now = now_ms()
redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[4], 'result_published', 1,
  'finished_at', now, 'updated_at', now)
add_event('failed', '{"error":' .. ARGV[4] .. '}')
finish(now)
notify()
if ARGV[5] == '1' then
  local bound = redis.call('GET', KEYS[6])
  if bound and string.sub(bound, 1, 36) == ARGV[3] then redis.call('DEL', KEYS[6]) end
end
return 'ok'`,

  /**
   * queued or running → cancelled. A running task's worker learns it from the channel
   * (at once) or from its next lease renewal (at the latest).
   * ARGV[4..]: reason (or ''), cancel channel
   */
  cancel: `${PRELUDE}
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return {'missing'} end
if terminal(s) then return with_record('terminal') end
local now = now_ms()
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'lease_until', '', 'retry_at', '',
  'finished_at', now, 'updated_at', now)
local reason = cjson.null
if ARGV[4] ~= '' then reason = ARGV[4] end
add_event('cancelled', cjson.encode({reason = reason, was = s}))
finish(now)
if s == 'running' then redis.call('PUBLISH', ARGV[5], ARGV[3]) end
notify()
return with_record(s)`,

  /** KEYS: task hashes whose result message is out (a batch). */
  markPublished: `
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'result_published', 1) end
end
return 'ok'`,

  /**
   * Disarms the outbox entries of published request messages (a batch).
   * KEYS[1] outbox, KEYS[1 + i] task hash; ARGV[2i - 1] id, ARGV[2i] attempt that was published.
   */
  disarmOutbox: `
for i = 2, #KEYS do
  local id, attempt = ARGV[2 * i - 3], tonumber(ARGV[2 * i - 2])
  local f = redis.call('HMGET', KEYS[i], 'status', 'attempt')
  local s = f[1]
  if not s or s == 'done' or s == 'failed' or s == 'cancelled' or (s == 'queued' and tonumber(f[2]) == attempt) then
    redis.call('ZREM', KEYS[1], id)
  end
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
