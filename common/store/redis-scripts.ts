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
-- A key of the task's tenant, built from the prefix of KEYS[1] ('<prefix>task:<36-char id>').
-- As in BullMQ's scripts, these keys come from data rather than KEYS: every key shares the
-- prefix's hash tag, so on a cluster they sit in the script's slot. keys.ts builds the same names.
local function tenant_key(kind, tenant)
  return string.sub(KEYS[1], 1, #KEYS[1] - 41) .. kind .. ':' .. tenant
end
local function tenant_of() return redis.call('HGET', KEYS[1], 'tenant') or 'default' end
-- A task that never started gives back the quota units it spent, if its window is still on.
local function refund(tenant)
  local f = redis.call('HMGET', KEYS[1], 'attempt', 'cost', 'quota_window')
  local cost = tonumber(f[2]) or 0
  if (tonumber(f[1]) or 0) > 0 or cost <= 0 or not f[3] or f[3] == '' then return end
  local q = tenant_key('quota', tenant)
  if redis.call('HGET', q, 'start') == f[3] then redis.call('HINCRBY', q, 'spent', -cost) end
  redis.call('HSET', KEYS[1], 'cost', 0)
end
-- A task reached done, failed or cancelled: it leaves the outbox and its tenant's running
-- set, and it and its history expire after the ttl; the sweeper drops it from the listing
-- indexes then (the member is '<id><tenant>\\n<user id>').
local function finish(now)
  local ttl = tonumber(ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
  redis.call('EXPIRE', KEYS[5], ttl)
  local f = redis.call('HMGET', KEYS[1], 'user_id', 'tenant')
  local tenant = f[2] or 'default'
  redis.call('ZADD', KEYS[4], now + ttl * 1000, ARGV[3] .. tenant .. '\\n' .. (f[1] or ''))
  redis.call('ZREM', tenant_key('running', tenant), ARGV[3])
end
`;

export const SCRIPTS = {
  /**
   * Admission and create in one step: the tenant's submit rate, the Idempotency-Key, the
   * quota (or the downgrade's), then the record.
   * KEYS[1] task, KEYS[2] outbox, KEYS[3] idempotency key (or the unused key), KEYS[4] events,
   * KEYS[5] tenant index, KEYS[6] user index (or the unused key), KEYS[7] tenant limits,
   * KEYS[8] tenant quota, KEYS[9] tenant submit rate. No key is ever '': on a cluster an
   * empty key would hash to another slot.
   * ARGV: historyLimit, publishDueAt, idempotency value (taskId|fingerprint), ttlSeconds,
   * submits/s, quota units, quota window s (defaults), cost, downgrade cost ('' for none),
   * downgrade input JSON, then field, value, ...
   * Answers {outcome, a, b, c, d, rate limit, remaining, reset ms} (-1 for no rate limit), and
   * for quota_exceeded the window in seconds last.
   */
  create: `${PRELUDE}
local now = now_ms()
local lim = redis.call('HMGET', KEYS[7], 'submits_per_s', 'quota_units', 'quota_window_seconds')
local rate = tonumber(lim[1]) or tonumber(ARGV[5])
local rl = {-1, -1, -1}
if rate > 0 then
  local used = tonumber(redis.call('GET', KEYS[9]) or '0')
  local ttl = redis.call('PTTL', KEYS[9])
  if used >= rate then return {'rate_limited', '', '', '', '', rate, 0, math.max(ttl, 1)} end
  used = redis.call('INCR', KEYS[9])
  if ttl < 0 then redis.call('PEXPIRE', KEYS[9], 1000); ttl = 1000 end
  rl = {rate, rate - used, ttl}
end
if ARGV[3] ~= '' then
  local bound = redis.call('GET', KEYS[3])
  if bound then return {'replay', bound, '', '', '', rl[1], rl[2], rl[3]} end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', '', '', '', '', rl[1], rl[2], rl[3]} end
local units = tonumber(lim[2]) or tonumber(ARGV[6])
local window = (tonumber(lim[3]) or tonumber(ARGV[7])) * 1000
local cost = tonumber(ARGV[8])
local downgraded = 0
local qstart = ''
if units > 0 then
  local start = now - (now % window)
  local q = redis.call('HMGET', KEYS[8], 'start', 'spent')
  local spent = 0
  if tonumber(q[1]) == start then spent = tonumber(q[2]) or 0 end
  if spent + cost > units then
    local dcost = tonumber(ARGV[9])
    if dcost and spent + dcost <= units then
      cost = dcost
      downgraded = 1
    else
      return {'quota_exceeded', start + window - now, units, spent, start, rl[1], rl[2], rl[3], window / 1000}
    end
  end
  if cost > 0 then
    redis.call('HSET', KEYS[8], 'start', start, 'spent', spent + cost)
    redis.call('PEXPIREAT', KEYS[8], start + window + 60000)
    qstart = start
  end
else
  cost = 0
end
local args = {}
for i = 11, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(args))
redis.call('HSET', KEYS[1], 'cost', cost, 'quota_window', qstart, 'downgraded', downgraded)
if downgraded == 1 then redis.call('HSET', KEYS[1], 'input', ARGV[10]) end
local f = redis.call('HMGET', KEYS[1], 'id', 'created_at')
redis.call('ZADD', KEYS[2], ARGV[2], f[1])
redis.call('ZADD', KEYS[5], f[2], f[1])
if redis.call('HGET', KEYS[1], 'user_id') ~= '' then redis.call('ZADD', KEYS[6], f[2], f[1]) end
if ARGV[3] ~= '' then redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[4]) end
redis.call('XADD', KEYS[4], 'MAXLEN', ARGV[1], '*', 'type', 'status', 'data', '{"status":"queued","attempt":0}')
return {'created', downgraded, '', '', '', rl[1], rl[2], rl[3]}`,

  /**
   * ARGV[4..]: worker, leaseMs, takeoverDelayMs, default cap on a tenant's running tasks (0 =
   * none), base throttle delay ms. A claim after a lost lease is an attempt like any other:
   * with none left, the task fails with worker_lost ('exhausted').
   */
  claim: `${PRELUDE}
local now = now_ms()
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_until', 'retry_at', 'attempt', 'max_attempts', 'tenant', 'throttles')
if not f[1] then return {'missing'} end
if terminal(f[1]) then return with_record('terminal') end
if f[1] == 'running' and tonumber(f[2]) and tonumber(f[2]) > now then return with_record('busy') end
if f[1] == 'queued' and tonumber(f[3]) and tonumber(f[3]) > now then return with_record('busy') end
local lost = f[1] == 'running'
local attempts = tonumber(f[4]) or 0
if lost and attempts >= (tonumber(f[5]) or 1) then
  local err = cjson.encode({code = 'worker_lost', retriable = false,
    message = 'the worker running attempt ' .. attempts .. ' of ' .. attempts .. ' stopped (its lease expired); no attempts left'})
  redis.call('HSET', KEYS[1], 'status', 'failed', 'error', err, 'lease_until', '', 'finished_at', now, 'updated_at', now)
  add_event('failed', '{"error":' .. err .. '}')
  finish(now)
  notify()
  return with_record('exhausted')
end
local tenant = f[6] or 'default'
local cap = tonumber(redis.call('HGET', tenant_key('tenant', tenant), 'max_running')) or tonumber(ARGV[7])
local running = tenant_key('running', tenant)
if cap > 0 then
  redis.call('ZREMRANGEBYSCORE', running, '-inf', now)
  if not redis.call('ZSCORE', running, ARGV[3]) and redis.call('ZCARD', running) >= cap then
    -- Deferred through the outbox, longer each time, so a big backlog is not re-offered every second.
    local n = tonumber(f[7]) or 0
    local at = now + tonumber(ARGV[8]) * 2 ^ math.min(n, 4)
    redis.call('HSET', KEYS[1], 'status', 'queued', 'worker', '', 'lease_until', '', 'retry_at', at, 'throttles', n + 1, 'updated_at', now)
    redis.call('ZADD', KEYS[2], at, ARGV[3])
    if lost then
      add_event('status', cjson.encode({status = 'queued', attempt = attempts, reason = 'worker_lost'}))
      notify()
    end
    return with_record('throttled')
  end
end
local lease = now + tonumber(ARGV[5])
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[4], 'lease_until', lease,
  'retry_at', '', 'throttles', 0, 'started_at', now, 'updated_at', now)
redis.call('ZADD', KEYS[2], lease + tonumber(ARGV[6]), ARGV[3])
if cap > 0 then redis.call('ZADD', running, lease, ARGV[3]) end
local ev = {status = 'running', attempt = attempt, worker = ARGV[4]}
if lost then ev.after_lost_lease = true end
add_event('status', cjson.encode(ev))
notify()
return with_record(lost and 'claimed_lost' or 'claimed')`,

  /** ARGV[4..]: worker, leaseMs, takeoverDelayMs */
  renew: `${PRELUDE}
local bad = owned(ARGV[4]); if bad then return bad end
local lease = now_ms() + tonumber(ARGV[5])
redis.call('HSET', KEYS[1], 'lease_until', lease)
redis.call('ZADD', KEYS[2], lease + tonumber(ARGV[6]), ARGV[3])
redis.call('ZADD', tenant_key('running', tenant_of()), 'XX', lease, ARGV[3])
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
redis.call('ZREM', tenant_key('running', tenant_of()), ARGV[3])
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

  /**
   * KEYS[6]: idempotency key to release if it names this task (or the unused key). ARGV[4..]: errorJson, '1' when KEYS[6] is real.
   * The task never ran: its quota units go back.
   */
  failQueued: `${PRELUDE}
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'missing' end
if terminal(s) then return 'terminal' end
if s ~= 'queued' then return 'conflict' end
refund(tenant_of())
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
   * ARGV[4..]: reason (or ''), cancel channel, tenant the caller acts for ('' for any): a
   * task of another tenant is 'missing'.
   */
  cancel: `${PRELUDE}
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return {'missing'} end
local tenant = tenant_of()
if ARGV[6] ~= '' and tenant ~= ARGV[6] then return {'missing'} end
if terminal(s) then return with_record('terminal') end
if s == 'queued' then refund(tenant) end
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
   * Disarms the outbox entries of published request messages (a batch), and notes on each
   * task that its request is out (a replay of its submission waits for that).
   * KEYS[1] outbox, KEYS[1 + i] task hash; ARGV[2i - 1] id, ARGV[2i] attempt that was published.
   */
  disarmOutbox: `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #KEYS do
  local id, attempt = ARGV[2 * i - 3], tonumber(ARGV[2 * i - 2])
  local f = redis.call('HMGET', KEYS[i], 'status', 'attempt', 'retry_at')
  local s = f[1]
  if s then redis.call('HSET', KEYS[i], 'request_published', 1) end
  -- A queued task with a retry_at still ahead was deferred since (its tenant at its cap): its entry stays.
  local deferred = tonumber(f[3]) and tonumber(f[3]) > now
  if not s or s == 'done' or s == 'failed' or s == 'cancelled' or (s == 'queued' and tonumber(f[2]) == attempt and not deferred) then
    redis.call('ZREM', KEYS[1], id)
  end
end
return 'ok'`,

  /**
   * One request against a per-second limit. KEYS[1] the counter. ARGV[1] the limit (> 0).
   * Answers {allowed 1/0, limit, remaining, reset ms}.
   */
  hit: `
local rate = tonumber(ARGV[1])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = redis.call('PTTL', KEYS[1])
if used >= rate then return {0, rate, 0, math.max(ttl, 1)} end
used = redis.call('INCR', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], 1000); ttl = 1000 end
return {1, rate, rate - used, ttl}`,

  /** KEYS[1]: outbox. ARGV: limit, holdMs */
  outboxDue: `${PRELUDE}
local now = now_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id) end
return ids`,
} as const;

export type ScriptName = keyof typeof SCRIPTS;
