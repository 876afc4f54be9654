-- reserve.lua: leases up to n ready jobs to one consumer.
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] n, [3] lease token base (random, per call),
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
local token_base = str_arg(ARGV[3], 'token', 1, MAX_ID)
local sweep_limit = int_arg(ARGV[4], 'sweep limit', 1, 100000)
local budget = int_arg(ARGV[5], 'byte budget', 0, 1e15)
argc(5)
guard_keys()
local now = now_ms()
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
-- The stored numbers a lease needs: { field index, name, min, max, default }.
local CHECKS = {
  { 2, 'attempts', 0, 1e15, 0 }, { 3, 'max_attempts', 1, 1e15, 1 },
  { 4, 'lease_ms', MIN_LEASE_MS, MAX_LEASE_MS, 30000 },
  { 5, 'enqueued_at', 0, 1e15, now }, { 6, 'run_at', 0, 1e15, now },
  { 7, 'priority', -PRIORITY_MAX, PRIORITY_MAX, 0 },
  { 8, 'backoff_ms', 0, MAX_BACKOFF_MS, 1000 },
  { 9, 'backoff_max_ms', 0, MAX_BACKOFF_MS, 60000 } }
-- Ids taken off the backlog and (score, id) pairs leased, sent batched.
local taken, leased = {}, {}
local waited = 0
for _, id in ipairs(cand) do
  local jk = job_key(id)
  local f, kind = read_job(jk, 'payload', 'attempts', 'max_attempts', 'lease_ms',
    'enqueued_at', 'run_at', 'priority', 'backoff_ms', 'backoff_max_ms', 'state',
    'timeout_ms', 'timeout_retry', 'kids')
  local size = (f and f[1] and #f[1]) or 0
  if budget > 0 and #jobs > 0 and bytes + size > budget then break end
  taken[#taken + 1] = id
  local bad = nil
  local v = {}
  if f and f[10] and f[1] then
    for _, c in ipairs(CHECKS) do
      local raw = f[c[1]]
      if raw == false or raw == nil then
        v[c[1]] = c[5]
      else
        v[c[1]] = num_field(raw, c[3], c[4])
        if v[c[1]] == nil then bad = c; break end
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
    corrupt(jk, id, now, bad[2], f[bad[1]])
  else
    local attempts = v[2] + 1
    local lease_ms = v[4]
    local deadline = now + lease_ms
    local token = token_base .. ':' .. (#jobs + 1)
    -- The deadline lives in `active` (its score) only.
    redis.call('HSET', jk, 'state', 'active', 'attempts', attempts, 'lease', token,
      'started_at', now)
    leased[#leased + 1] = deadline
    leased[#leased + 1] = id
    -- Waited from due (enqueue, delay or retry time) to this start.
    waited = waited + math.max(0, now - math.max(v[5], v[6]))
    bytes = bytes + size
    -- The time-limit options are advisory: a damaged value reads as unset.
    local retry = -1
    if f[12] == '0' then retry = 0 elseif f[12] == '1' then retry = 1 end
    jobs[#jobs + 1] = { id, f[1], attempts, v[3], lease_ms, v[5], v[6], v[7], v[8], v[9],
      token, deadline, num_field(f[11] or 0, 0, MAX_TIMEOUT_MS) or 0, retry,
      num_field(f[13] or 0, 0, MAX_BATCH) or 0 }
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
