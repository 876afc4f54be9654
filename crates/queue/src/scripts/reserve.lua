-- reserve.lua: leases up to n ready jobs to one consumer.
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] n, [3] lease token base (random, per call),
--       [4] how many scheduled and expired jobs to sweep first
-- Returns: { jobs, wait_hint_ms } where each job is
--       { id, payload, attempts, max_attempts, lease_ms, enqueued_at, run_at,
--         priority, backoff_ms, backoff_max_ms, token, deadline }
--       and wait_hint_ms, when no job was leased, is the time until the next
--       scheduled job or lease deadline (-1: none), so a consumer blocks no longer.
-- Invariant: attempts grow here, before any work, so a job that crashes its
--       worker is still counted; a leased job is in `active` and `outstanding`.

local n = tonumber(ARGV[2])
local token_base = ARGV[3]
local sweep_limit = tonumber(ARGV[4])
local now = now_ms()

promote_due(now, sweep_limit)
recover_expired(now, sweep_limit)

local popped = redis.call('ZPOPMIN', K_READY, n)
local jobs = {}
for i = 1, #popped, 2 do
  local id = popped[i]
  local jk = job_key(id)
  local f = redis.call('HMGET', jk, 'payload', 'attempts', 'max_attempts', 'lease_ms',
    'enqueued_at', 'run_at', 'priority', 'backoff_ms', 'backoff_max_ms', 'state')
  if not f[10] then
    -- The hash is gone (deleted by hand, or expired): nothing to run.
    redis.call('SREM', K_OUT, id)
  elseif not f[1] then
    to_dead(jk, id, now, 'corrupt job: its hash has no payload field')
  else
    local attempts = (tonumber(f[2]) or 0) + 1
    local lease_ms = tonumber(f[4]) or 30000
    local deadline = now + lease_ms
    local token = token_base .. ':' .. (#jobs + 1)
    redis.call('HSET', jk, 'state', 'active', 'attempts', attempts, 'lease', token,
      'deadline', deadline, 'started_at', now)
    redis.call('ZADD', K_ACTIVE, deadline, id)
    jobs[#jobs + 1] = { id, f[1], attempts, tonumber(f[3]) or 1, lease_ms,
      tonumber(f[5]) or now, tonumber(f[6]) or now, tonumber(f[7]) or 0,
      tonumber(f[8]) or 1000, tonumber(f[9]) or 60000, token, deadline }
  end
end

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
