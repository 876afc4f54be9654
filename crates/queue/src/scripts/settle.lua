-- settle.lua: ends or hands back leased jobs, a batch per call.
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] n, then n groups of 5: id, token, mode, data, delay_ms
--       mode: complete (data = result), retry (data = error, delay_ms = backoff),
--             dead (data = error), release (back to the front, attempt refunded),
--             cancelled (the worker stopped after a cancel request)
-- Returns: for each entry, the job's new state (completed, scheduled, dead, ready,
--       cancelled), or 'lease_lost:<state>' when the token is not the job's
--       current lease, or 'not_found'.
-- Invariant (fencing): only the holder of the current lease changes the job.
--       Repeating a settle whose reply was lost returns the state it set.

local n = tonumber(ARGV[2])
local STRIDE = 5
local now = now_ms()
local out = {}
local woken = 0

for i = 0, n - 1 do
  local b = 3 + i * STRIDE
  local id, token, mode, data = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local delay = tonumber(ARGV[b + 4]) or 0
  local jk = job_key(id)
  local f = redis.call('HMGET', jk, 'state', 'lease', 'attempts', 'max_attempts',
    'priority', 'settled_by', 'dedup', 'retention_s')
  local state, lease = f[1], f[2]
  if not state then
    out[#out + 1] = 'not_found'
  elseif state ~= 'active' or lease ~= token then
    if f[6] == token then
      out[#out + 1] = state
    else
      out[#out + 1] = 'lease_lost:' .. state
    end
  else
    redis.call('ZREM', K_ACTIVE, id)
    local dedup = f[7] or ''
    if mode == 'complete' then
      redis.call('HSET', jk, 'state', 'completed', 'result', data, 'finished_at', now,
        'settled_by', token)
      redis.call('SREM', K_OUT, id)
      release_dedup(jk, id, dedup)
      retain(jk, id, K_DONE, now, f[8] or 0)
      out[#out + 1] = 'completed'
    elseif mode == 'release' then
      make_ready(id, tonumber(f[5]) or 0, true,
        { 'attempts', math.max(0, (tonumber(f[3]) or 1) - 1), 'settled_by', token })
      woken = woken + 1
      out[#out + 1] = 'ready'
    elseif mode == 'cancelled' then
      redis.call('HSET', jk, 'settled_by', token)
      to_cancelled(jk, id, now)
      out[#out + 1] = 'cancelled'
    elseif mode == 'retry' and (tonumber(f[3]) or 0) < (tonumber(f[4]) or 1) then
      local run_at = now + delay
      redis.call('HSET', jk, 'state', 'scheduled', 'last_error', data, 'run_at', run_at,
        'settled_by', token)
      redis.call('ZADD', K_SCHED, run_at, id)
      redis.call('SREM', K_OUT, id)
      out[#out + 1] = 'scheduled'
    else
      local reason = data
      if mode == 'retry' then
        reason = data .. ' (attempt ' .. f[3] .. ' of ' .. f[4] .. ', no retries left)'
      end
      redis.call('HSET', jk, 'settled_by', token)
      to_dead(jk, id, now, reason)
      out[#out + 1] = 'dead'
    end
  end
end

if woken > 0 then wake(woken) end
return out
