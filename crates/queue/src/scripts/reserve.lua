-- reserve.lua: leases up to n ready jobs to one consumer.
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] n, [3] lease token (random, per call; every job this
--       call leases gets it),
--       [4] how many scheduled and expired jobs to sweep first,
--       [5] byte budget: stop adding jobs once their payloads would pass it
--           (0: no budget; the first job always goes)
-- Returns: { jobs, wait_hint_ms } where each job is
--       { id, payload, attempts, max_attempts, lease_ms, enqueued_at, run_at,
--         priority, backoff_ms, backoff_max_ms, token, deadline,
--         timeout_ms (0: none of its own), timeout_retry (-1: unset, 0, 1),
--         children (how many, when it is a flow's parent; else 0) }
--       and wait_hint_ms, when no job was leased, is the time until the next
--       scheduled job or lease deadline (-1: none), so a consumer blocks no longer.
-- Invariant: attempts grow here, before any work, so a job that crashes its
--       worker is still counted; a leased job is in `active` and `outstanding`.
--       A job with a damaged hash goes dead with the reason (its key moved
--       aside when it is not a hash); the others in the batch are unaffected.

local n = int_arg(ARGV[2], 'n', 1, MAX_BATCH)
local token = str_arg(ARGV[3], 'token', 1, MAX_ID)
local sweep_limit = int_arg(ARGV[4], 'sweep limit', 1, 100000)
local budget = int_arg(ARGV[5], 'byte budget', 0, 1e15)
argc(5)
guard_keys()
local now = now_ms()
local now_text = text(now)
keep_working_when_full()

promote_due(now, sweep_limit)
recover_expired(now, sweep_limit)
-- A paused queue leases nothing (its backlog is parked). After a resume, the
-- best `n` parked jobs are back before any is picked, so jobs enqueued since
-- never overtake better ones still parked.
follow_pause(math.max(n, sweep_limit))
if is_paused() then return { {}, -1 } end

-- Candidates in backlog order; each is taken (ZREM) only once it is known
-- to be a runnable job, and the byte budget stops the batch early (one job
-- always goes, however large).
local cand = redis.call('ZRANGE', K_READY, 0, n - 1)
local jobs = {}
local bytes = 0
-- The stored numbers a lease needs, by their index in the HMGET below:
-- name, min, max, default when the field is missing.
local CHECK_NAME = { nil, 'attempts', 'max_attempts', 'lease_ms', 'enqueued_at', 'run_at',
  'priority', 'backoff_ms', 'backoff_max_ms' }
local CHECK_MIN = { nil, 0, 1, MIN_LEASE_MS, 0, 0, -PRIORITY_MAX, 0, 0 }
local CHECK_MAX = { nil, 1e15, 1e15, MAX_LEASE_MS, 1e15, 1e15, PRIORITY_MAX, MAX_BACKOFF_MS,
  MAX_BACKOFF_MS }
local CHECK_DEFAULT = { nil, 0, 1, 30000, now, now, 0, 1000, 60000 }
-- Ids taken off the backlog and (score, id) pairs leased, sent batched.
-- One token fences every lease of this call: a lease is the pair of a job
-- and the token, and each call's token is new (docs/protocol.md).
local taken, leased = {}, {}
local n_taken, n_leased = 0, 0
local waited = 0
-- One job's checked numbers, by the same indexes; reused for every job
-- (a table per job, grown field by field, cost about 0.7 µs of each).
local v = { false, 0, 0, 0, 0, 0, 0, 0, 0 }
for _, id in ipairs(cand) do
  local jk = job_key(id)
  local f, kind = read_job(jk, 'payload', 'attempts', 'max_attempts', 'lease_ms',
    'enqueued_at', 'run_at', 'priority', 'backoff_ms', 'backoff_max_ms', 'state',
    'timeout_ms', 'timeout_retry', 'kids')
  local size = (f and f[1] and #f[1]) or 0
  if budget > 0 and n_leased > 0 and bytes + size > budget then break end
  n_taken = n_taken + 1
  taken[n_taken] = id
  local bad = nil
  if f and f[10] and f[1] then
    for c = 2, 9 do
      local raw = f[c]
      if raw == false then
        v[c] = CHECK_DEFAULT[c]
      else
        -- decimal()'s memo, looked up here first: most of a batch's
        -- numbers are known after its first job.
        local x = decimals[raw]
        if x == nil then x = decimal(raw) end
        if not x or x < CHECK_MIN[c] or x > CHECK_MAX[c] then bad = c; break end
        v[c] = x
      end
    end
  end
  if not f then
    quarantine(id, now, kind)
  elseif not f[10] then
    -- The hash is gone (deleted by hand, or expired): nothing to run.
    redis.call('SREM', K_OUT, id)
  elseif f[10] == 'cancelled' or f[10] == 'dead' or f[10] == 'completed' then
    -- Ended since this call read the backlog (a corrupt job just before
    -- it, dead, failed their flow and cancelled it): nothing to run.
    redis.call('SREM', K_OUT, id)
  elseif not f[1] then
    to_dead(jk, id, now, 'corrupt job: its hash has no payload field')
  elseif bad then
    corrupt(jk, id, now, CHECK_NAME[bad], f[bad])
  else
    local attempts = v[2] + 1
    local lease_ms = v[4]
    local deadline = now + lease_ms
    -- The deadline lives in `active` (its score) only.
    redis.call('HSET', jk, 'state', 'active', 'attempts', text(attempts), 'lease', token,
      'started_at', now_text)
    leased[n_leased * 2 + 1] = text(deadline)
    leased[n_leased * 2 + 2] = id
    n_leased = n_leased + 1
    -- Waited from due (enqueue, delay or retry time) to this start.
    local due = v[5]
    if v[6] > due then due = v[6] end
    if now > due then waited = waited + (now - due) end
    bytes = bytes + size
    -- The time-limit options are advisory: a damaged value reads as unset.
    local retry = -1
    if f[12] == '0' then retry = 0 elseif f[12] == '1' then retry = 1 end
    local timeout, kids = 0, 0
    if f[11] then timeout = num_field(f[11], 0, MAX_TIMEOUT_MS) or 0 end
    if f[13] then kids = num_field(f[13], 0, MAX_BATCH) or 0 end
    jobs[n_leased] = { id, f[1], attempts, v[3], lease_ms, v[5], v[6], v[7], v[8], v[9],
      token, deadline, timeout, retry, kids }
  end
end

-- Taken off the backlog, and the leased ones onto `active`, in one command
-- each (lib.lua's `batched`).
batched('ZREM', K_READY, taken)
batched('ZADD', K_ACTIVE, leased)
if #jobs > 0 then count_minute(now, { started = #jobs, wait_ms = waited }) end

if #jobs > 0 then
  -- More waiting than this consumer took: wake another.
  if redis.call('ZCARD', K_READY) > 0 then wake(1) end
  return { jobs, 0 }
end

local hint = -1
local s = redis.call('ZRANGE', K_SCHED, 0, 0, 'WITHSCORES')
if s[2] then hint = math.max(0, tonumber(s[2]) - now) end
local a = redis.call('ZRANGE', K_ACTIVE, 0, 0, 'WITHSCORES')
if a[2] then
  local d = math.max(0, tonumber(a[2]) - now + 1)
  if hint < 0 or d < hint then hint = d end
end
return { jobs, hint }
