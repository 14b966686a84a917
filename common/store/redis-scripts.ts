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
-- The prefix of every key ('{atq}:'), from KEYS[1] ('<prefix>task:<36-char id>'); scripts whose
-- KEYS[1] is another kind set it again. As in BullMQ's scripts, keys built from it come from
-- data rather than KEYS: every key shares the prefix's hash tag, so on a cluster they sit in
-- the script's slot. keys.ts builds the same names.
local PFX = string.sub(KEYS[1], 1, #KEYS[1] - 41)
local function tkey(kind, id) return PFX .. kind .. ':' .. id end
-- The workflow and step of the task in KEYS[1] ('' when none), read once per script.
local WF
local function task_wf()
  if WF == nil then
    local f = redis.call('HMGET', KEYS[1], 'workflow', 'step')
    WF = {f[1] or '', f[2] or ''}
  end
  return WF[1], WF[2]
end
-- Every event of a step is also added to its workflow's stream, so GET /workflows/:id/events
-- resumes from one id across all steps.
local function wf_event(wid, tid, step, kind, data)
  local k = tkey('wfevents', wid)
  redis.call('XADD', k, 'MAXLEN', '~', tonumber(ARGV[1]) * 10, '*', 'type', kind, 'data', data, 'task', tid, 'step', step)
  redis.call('PUBLISH', k, '')
end
-- data is a JSON object text, built by the caller or here with cjson.
local function add_event(kind, data)
  redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[1], '*', 'type', kind, 'data', data)
  local wid, step = task_wf()
  if wid ~= '' then wf_event(wid, ARGV[3], step, kind, data) end
end
-- An event of another task than KEYS[1]'s (a step this transition readied or cancelled).
local function add_event_for(id, kind, data)
  local k = tkey('events', id)
  redis.call('XADD', k, 'MAXLEN', ARGV[1], '*', 'type', kind, 'data', data)
  redis.call('PUBLISH', k, '')
  local f = redis.call('HMGET', tkey('task', id), 'workflow', 'step')
  if f[1] and f[1] ~= '' then wf_event(f[1], id, f[2] or '', kind, data) end
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
local function tenant_key(kind, tenant) return tkey(kind, tenant) end
local function tenant_of() return redis.call('HGET', KEYS[1], 'tenant') or 'default' end
-- A task that never started gives back the quota units it spent, if its window is still on.
local function refund_key(key, tenant)
  local f = redis.call('HMGET', key, 'attempt', 'cost', 'quota_window')
  local cost = tonumber(f[2]) or 0
  if (tonumber(f[1]) or 0) > 0 or cost <= 0 or not f[3] or f[3] == '' then return end
  local q = tenant_key('quota', tenant)
  if redis.call('HGET', q, 'start') == f[3] then redis.call('HINCRBY', q, 'spent', -cost) end
  redis.call('HSET', key, 'cost', 0)
end
local function refund(tenant) refund_key(KEYS[1], tenant) end
local function pending(s) return s == 'queued' or s == 'scheduled' or s == 'waiting' end
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
-- finish() for another task than KEYS[1]'s.
local function finish_for(id, now)
  local ttl = tonumber(ARGV[2])
  local tk = tkey('task', id)
  redis.call('ZREM', PFX .. 'outbox', id)
  redis.call('EXPIRE', tk, ttl)
  redis.call('EXPIRE', tkey('events', id), ttl)
  redis.call('EXPIRE', tkey('output', id), ttl)
  local f = redis.call('HMGET', tk, 'user_id', 'tenant')
  local tenant = f[2] or 'default'
  redis.call('ZADD', PFX .. 'expiring', now + ttl * 1000, id .. tenant .. '\\n' .. (f[1] or ''))
  redis.call('ZREM', tenant_key('running', tenant), id)
end
-- Cancels a task that has not finished (a step of a workflow that failed or was cancelled).
local function cancel_for(id, now, reason)
  local tk = tkey('task', id)
  local f = redis.call('HMGET', tk, 'status', 'tenant')
  local s = f[1]
  if not s or terminal(s) then return end
  if s ~= 'running' then refund_key(tk, f[2] or 'default') end
  redis.call('HSET', tk, 'status', 'cancelled', 'lease_until', '', 'retry_at', '', 'finished_at', now, 'updated_at', now)
  add_event_for(id, 'cancelled', cjson.encode({reason = reason, was = s}))
  finish_for(id, now)
  if s == 'running' then redis.call('PUBLISH', PFX .. 'cancel', id) end
end
-- A workflow ends: done, or failed/cancelled with every step not finished (but \`except\`) cancelled.
-- err: the error JSON text or ''. Answers false when it had ended already.
local function wf_end(wid, status, err, except, reason, now)
  local wk = tkey('wf', wid)
  if redis.call('HGET', wk, 'status') ~= 'running' then return false end
  redis.call('HSET', wk, 'status', status, 'error', err, 'finished_at', now)
  if status ~= 'done' then
    for _, st in ipairs(cjson.decode(redis.call('HGET', wk, 'steps') or '[]')) do
      if st[2] ~= except then cancel_for(st[2], now, reason) end
    end
  end
  local data = {status = status}
  if err ~= '' then data.error = cjson.decode(err) end
  wf_event(wid, '', '', 'workflow', cjson.encode(data))
  local ttl = tonumber(ARGV[2])
  redis.call('EXPIRE', wk, ttl)
  redis.call('EXPIRE', tkey('wfevents', wid), ttl)
  return true
end
-- The task in KEYS[1] failed or was cancelled: so does its workflow.
local function wf_abort(status, err, now)
  local wid = task_wf()
  if wid ~= '' then wf_end(wid, status, err, ARGV[3], 'workflow ' .. status, now) end
end
-- The task in KEYS[1] is done: each step whose last need it was is queued, its outbox armed
-- \`delay\` ms ahead (the caller publishes it first; the relay, should the caller die). The
-- check and the queueing are one step, so a step readied by two needs ending at once on two
-- workers is queued once. Answers the ids queued.
local function step_done(now, delay)
  local ready = {}
  local wid = task_wf()
  if wid == '' then return ready end
  local deps = redis.call('HGET', KEYS[1], 'dependents')
  if deps and deps ~= '' then
    for _, d in ipairs(cjson.decode(deps)) do
      local dk = tkey('task', d)
      if redis.call('HGET', dk, 'status') == 'waiting' and redis.call('HINCRBY', dk, 'pending', -1) <= 0 then
        redis.call('HSET', dk, 'status', 'queued', 'updated_at', now)
        redis.call('ZADD', KEYS[2], now + delay, d)
        add_event_for(d, 'status', '{"status":"queued","attempt":0}')
        ready[#ready + 1] = d
      end
    end
  end
  local wk = tkey('wf', wid)
  if redis.call('HGET', wk, 'status') == 'running' and redis.call('HINCRBY', wk, 'left', -1) <= 0 then
    wf_end(wid, 'done', '', '', '', now)
  end
  return ready
end
-- Spends cost units (or the downgrade's dcost when the full cost does not fit) from the
-- tenant's quota window: own_units/own_window are the tenant's own limits (nil for the
-- deployment's defaults). Answers the cost spent, the window start ('' when none), 1 when
-- downgraded, or (0, '', 0) and the quota_exceeded reply {code, retry ms, units, spent, start, window s}.
local function spend(now, own_units, own_window, quota_key, def_units, def_window, cost, dcost)
  local units = tonumber(own_units) or tonumber(def_units)
  if units <= 0 then return 0, '', 0 end
  local window = (tonumber(own_window) or tonumber(def_window)) * 1000
  local start = now - (now % window)
  local q = redis.call('HMGET', quota_key, 'start', 'spent')
  local spent = 0
  if tonumber(q[1]) == start then spent = tonumber(q[2]) or 0 end
  local downgraded = 0
  if spent + cost > units then
    if dcost and spent + dcost <= units then
      cost = dcost
      downgraded = 1
    else
      return 0, '', 0, {'quota_exceeded', start + window - now, units, spent, start, window / 1000}
    end
  end
  if cost <= 0 then return 0, '', downgraded end
  redis.call('HSET', quota_key, 'start', start, 'spent', spent + cost)
  redis.call('PEXPIREAT', quota_key, start + window + 60000)
  return cost, start, downgraded
end
-- Admission of a submit (create, createWorkflow): the tenant's submit rate, then its quota
-- (or the downgrade's cost, dcost, when given). KEYS of the tenant: limits, quota, rate.
-- Answers nil and the early reply, or the rate state {limit, remaining, reset} (-1s for no
-- limit), the cost spent, the quota window start ('' when none) and 1 when downgraded.
local function admit(now, lim_key, quota_key, rate_key, def_rate, def_units, def_window, cost, dcost, has_idem, idem_key, record_key)
  local lim = redis.call('HMGET', lim_key, 'submits_per_s', 'quota_units', 'quota_window_seconds')
  local rate = tonumber(lim[1]) or tonumber(def_rate)
  local rl = {-1, -1, -1}
  if rate > 0 then
    local used = tonumber(redis.call('GET', rate_key) or '0')
    local ttl = redis.call('PTTL', rate_key)
    if used >= rate then return nil, {'rate_limited', '', '', '', '', rate, 0, math.max(ttl, 1)} end
    used = redis.call('INCR', rate_key)
    if ttl < 0 then redis.call('PEXPIRE', rate_key, 1000); ttl = 1000 end
    rl = {rate, rate - used, ttl}
  end
  if has_idem then
    local bound = redis.call('GET', idem_key)
    if bound then return nil, {'replay', bound, '', '', '', rl[1], rl[2], rl[3]} end
  end
  if redis.call('EXISTS', record_key) == 1 then return nil, {'exists', '', '', '', '', rl[1], rl[2], rl[3]} end
  local cost, qstart, downgraded, exceeded = spend(now, lim[2], lim[3], quota_key, def_units, def_window, cost, dcost)
  if exceeded then return nil, {exceeded[1], exceeded[2], exceeded[3], exceeded[4], exceeded[5], rl[1], rl[2], rl[3], exceeded[6]} end
  return rl, cost, qstart, downgraded
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
local rl, cost, qstart, downgraded = admit(now, KEYS[7], KEYS[8], KEYS[9], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[3] ~= '', KEYS[3], KEYS[1])
if not rl then return cost end
local args = {}
for i = 11, #ARGV do args[#args + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(args))
redis.call('HSET', KEYS[1], 'cost', cost, 'quota_window', qstart, 'downgraded', downgraded)
if downgraded == 1 then redis.call('HSET', KEYS[1], 'input', ARGV[10]) end
local f = redis.call('HMGET', KEYS[1], 'id', 'created_at', 'status', 'run_at')
redis.call('ZADD', KEYS[2], ARGV[2], f[1])
redis.call('ZADD', KEYS[5], f[2], f[1])
if redis.call('HGET', KEYS[1], 'user_id') ~= '' then redis.call('ZADD', KEYS[6], f[2], f[1]) end
if ARGV[3] ~= '' then redis.call('SET', KEYS[3], ARGV[3], 'EX', ARGV[4]) end
local ev = '{"status":"queued","attempt":0}'
if f[3] == 'scheduled' then ev = cjson.encode({status = 'scheduled', attempt = 0, run_at = tonumber(f[4])}) end
redis.call('XADD', KEYS[4], 'MAXLEN', ARGV[1], '*', 'type', 'status', 'data', ev)
return {'created', downgraded, '', '', '', rl[1], rl[2], rl[3]}`,

  /**
   * A workflow and all its steps, after the admission of create (rate, then the quota for the
   * sum of the steps' costs; no downgrade). KEYS[1] workflow hash, KEYS[2] outbox, KEYS[3] the
   * tenant's workflow index, KEYS[4] tenant task index, KEYS[5] user index (or the unused key),
   * KEYS[6] tenant limits, KEYS[7] quota, KEYS[8] submit rate, KEYS[9] the workflow
   * idempotency key (or the unused key).
   * ARGV: historyLimit, publishDueAt, workflow id, submits/s, quota units, quota window s, cost,
   * the workflow's fields (JSON object), its steps (JSON array of {id, fields, ready}),
   * idempotency value (workflowId|fingerprint, or ''), its ttl seconds.
   * Answers as create ('replay' with the bound value).
   */
  createWorkflow: `${PRELUDE}
PFX = string.sub(KEYS[1], 1, #KEYS[1] - 39)
local now = now_ms()
-- A handler's ctx.spawn run again after a crash finds its workflow there: nothing is spent twice.
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', '', '', '', '', -1, -1, -1} end
local rl, cost, qstart = admit(now, KEYS[6], KEYS[7], KEYS[8], ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), nil, ARGV[10] ~= '', KEYS[9], KEYS[1])
if not rl then return cost end
local wf = cjson.decode(ARGV[8])
local steps = cjson.decode(ARGV[9])
for k, v in pairs(wf) do redis.call('HSET', KEYS[1], k, v) end
redis.call('HSET', KEYS[1], 'left', #steps)
redis.call('ZADD', KEYS[3], wf.created_at, ARGV[3])
for i, st in ipairs(steps) do
  local tk = tkey('task', st.id)
  for k, v in pairs(st.fields) do redis.call('HSET', tk, k, v) end
  -- The workflow's units are counted on its first step: a cancel before it starts gives them back.
  if i == 1 then redis.call('HSET', tk, 'cost', cost, 'quota_window', qstart) end
  redis.call('ZADD', KEYS[4], wf.created_at, st.id)
  if wf.user_id ~= '' then redis.call('ZADD', KEYS[5], wf.created_at, st.id) end
  if st.ready then redis.call('ZADD', KEYS[2], ARGV[2], st.id) end
  local k = tkey('events', st.id)
  local ev = st.ready and '{"status":"queued","attempt":0}' or '{"status":"waiting","attempt":0}'
  redis.call('XADD', k, 'MAXLEN', ARGV[1], '*', 'type', 'status', 'data', ev)
  wf_event(ARGV[3], st.id, st.fields.step, 'status', ev)
end
if ARGV[10] ~= '' then redis.call('SET', KEYS[9], ARGV[10], 'EX', ARGV[11]) end
return {'created', 0, '', '', '', rl[1], rl[2], rl[3]}`,

  /**
   * Cancels a workflow's steps not finished. KEYS[1] workflow hash, KEYS[2] its idempotency key
   * to release if it names this workflow (or the unused key). ARGV: historyLimit, ttl, workflow
   * id, reason (or ''), tenant the caller acts for ('' for any), '1' when KEYS[2] is real.
   */
  cancelWorkflow: `${PRELUDE}
PFX = string.sub(KEYS[1], 1, #KEYS[1] - 39)
local f = redis.call('HMGET', KEYS[1], 'status', 'tenant')
if not f[1] then return 'missing' end
if ARGV[5] ~= '' and f[2] ~= ARGV[5] then return 'missing' end
if f[1] ~= 'running' then return 'terminal' end
local reason = 'workflow cancelled'
if ARGV[4] ~= '' then reason = ARGV[4] end
wf_end(ARGV[3], 'cancelled', '', '', reason, now_ms())
if ARGV[6] == '1' then
  local bound = redis.call('GET', KEYS[2])
  if bound and string.sub(bound, 1, 36) == ARGV[3] then redis.call('DEL', KEYS[2]) end
end
return 'cancelled'`,

  /**
   * failed or cancelled → queued with a fresh set of attempts, out of the dead letters and of
   * the expiring set (it lives on). A rerun is new work: it spends the task's cost from its
   * tenant's quota again (a quota_exceeded reply when it does not fit), and a cancel before it
   * starts gives back that spend, not the first run's.
   * ARGV[4..]: publishDueAt, tenant the caller acts for ('' for any), quota units and window s
   * (the deployment's defaults), cost.
   */
  rerun: `${PRELUDE}
local f = redis.call('HMGET', KEYS[1], 'status', 'tenant', 'workflow', 'reruns', 'user_id')
if not f[1] then return {'missing'} end
local tenant = f[2] or 'default'
if ARGV[5] ~= '' and tenant ~= ARGV[5] then return {'missing'} end
if (f[1] ~= 'failed' and f[1] ~= 'cancelled') or (f[3] and f[3] ~= '') then return with_record('conflict') end
local now = now_ms()
local own = redis.call('HMGET', tenant_key('tenant', tenant), 'quota_units', 'quota_window_seconds')
local cost, qstart, _, exceeded = spend(now, own[1], own[2], tenant_key('quota', tenant), ARGV[6], ARGV[7], tonumber(ARGV[8]), nil)
if exceeded then table.insert(exceeded, tenant); return exceeded end
local n = (tonumber(f[4]) or 0) + 1
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempt', 0, 'error', '', 'result', '', 'progress', 0, 'message', '',
  'worker', '', 'lease_until', '', 'retry_at', '', 'throttles', 0, 'result_published', 0, 'request_published', 0,
  'reruns', n, 'started_at', '', 'finished_at', '', 'updated_at', now, 'cost', cost, 'quota_window', qstart)
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[3])
redis.call('PERSIST', KEYS[5])
redis.call('ZREM', KEYS[4], ARGV[3] .. tenant .. '\\n' .. (f[5] or ''))
redis.call('ZREM', tenant_key('dead', tenant), ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
add_event('status', cjson.encode({status = 'queued', attempt = 0, rerun = n}))
notify()
return with_record('rerun')`,

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
if (f[1] == 'queued' or f[1] == 'scheduled') and tonumber(f[3]) and tonumber(f[3]) > now then return with_record('busy') end
-- A waiting step's needs are not done: it has no message of its own yet (a stray one is dropped).
if f[1] == 'waiting' then return with_record('busy') end
local lost = f[1] == 'running'
local attempts = tonumber(f[4]) or 0
if lost and attempts >= (tonumber(f[5]) or 1) then
  local err = cjson.encode({code = 'worker_lost', retriable = false,
    message = 'the worker running attempt ' .. attempts .. ' of ' .. attempts .. ' stopped (its lease expired); no attempts left'})
  redis.call('HSET', KEYS[1], 'status', 'failed', 'error', err, 'lease_until', '', 'finished_at', now, 'updated_at', now)
  add_event('failed', '{"error":' .. err .. '}')
  finish(now)
  redis.call('ZADD', tenant_key('dead', f[6] or 'default'), now, ARGV[3])
  wf_abort('failed', err, now)
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

  /**
   * ARGV[4..]: worker, resultJson, delay before the relay publishes a step this readies, then
   * the handler's pending events. Answers the record, and the steps it readied (`__ready`).
   */
  complete: `${PRELUDE}
local bad = owned(ARGV[4]); if bad then return bad end
apply_events(7)
local now = now_ms()
redis.call('HSET', KEYS[1], 'status', 'done', 'result', ARGV[5], 'progress', 100, 'lease_until', '',
  'finished_at', now, 'updated_at', now)
add_event('done', '{"result":' .. ARGV[5] .. '}')
finish(now)
local ready = step_done(now, tonumber(ARGV[6]))
notify()
local r = with_record('ok')
if #ready > 0 then
  r[#r + 1] = '__ready'
  r[#r + 1] = table.concat(ready, ',')
end
return r`,

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
redis.call('ZADD', tenant_key('dead', tenant_of()), now, ARGV[3])
wf_abort('failed', ARGV[5], now)
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
wf_abort('failed', ARGV[4], now)
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
if pending(s) then refund(tenant) end
local now = now_ms()
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'lease_until', '', 'retry_at', '',
  'finished_at', now, 'updated_at', now)
local reason = cjson.null
if ARGV[4] ~= '' then reason = ARGV[4] end
add_event('cancelled', cjson.encode({reason = reason, was = s}))
finish(now)
if s == 'running' then redis.call('PUBLISH', ARGV[5], ARGV[3]) end
wf_abort('cancelled', '', now)
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
  local published = (s == 'queued' or s == 'scheduled') and tonumber(f[2]) == attempt and not deferred
  if not s or s == 'done' or s == 'failed' or s == 'cancelled' or published then
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

  /**
   * A worker's heartbeat, on Redis's clock (so hosts with skewed clocks agree on who is live).
   * KEYS[1] workers hash, KEYS[2] beats (id → expiry). ARGV: id, info JSON without seenAt, ttl ms.
   */
  heartbeat: `${PRELUDE}
local now = now_ms()
-- ARGV[2] is a JSON object: seenAt goes in before its closing brace (no decode, no number rounding).
redis.call('HSET', KEYS[1], ARGV[1], string.sub(ARGV[2], 1, -2) .. ',"seenAt":' .. now .. '}')
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return now`,

  /**
   * The live workers, and the dead ones dropped, in one step: a worker beating while this runs
   * keeps its entry (a read-then-delete from the client could drop the fresh one).
   * KEYS[1] workers hash, KEYS[2] beats. Answers id, info pairs of the live ones.
   */
  workers: `${PRELUDE}
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
local live = redis.call('ZRANGEBYSCORE', KEYS[2], now, '+inf')
local alive = {}
for _, id in ipairs(live) do alive[id] = true end
for _, id in ipairs(redis.call('HKEYS', KEYS[1])) do
  if not alive[id] then redis.call('HDEL', KEYS[1], id) end
end
local out = {}
if #live == 0 then return out end
local infos = redis.call('HMGET', KEYS[1], unpack(live))
for i, id in ipairs(live) do
  if infos[i] then table.insert(out, id); table.insert(out, infos[i]) end
end
return out`,
} as const;

export type ScriptName = keyof typeof SCRIPTS;
