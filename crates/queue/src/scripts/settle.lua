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
--       Repeating a settle whose reply was lost returns the state it set
--       (the job's `lease` field keeps the token until the next reserve).

local STRIDE = 5
local MODES = { complete = true, retry = true, dead = true, release = true, cancelled = true }
local n = int_arg(ARGV[2], 'n', 0, MAX_BATCH)
argc(2 + n * STRIDE)
for i = 0, n - 1 do
  local b = 3 + i * STRIDE
  local e = i + 1
  -- The common case checked inline (a call per argument costs per job);
  -- the helpers only build the error.
  local id, token, delay = ARGV[b], ARGV[b + 1], ARGV[b + 4]
  if #id < 1 or #id > MAX_ID then str_arg(id, 'id', 1, MAX_ID, e) end
  if #token < 1 or #token > 2 * MAX_ID then str_arg(token, 'token', 1, 2 * MAX_ID, e) end
  if not MODES[ARGV[b + 2]] then bad_arg('mode', ARGV[b + 2], 'must be complete, retry, dead, release or cancelled', e) end
  if delay ~= '0' then int_arg(delay, 'delay_ms', 0, MAX_DELAY_MS, e) end
end
guard_keys()
local now = now_ms()
local now_text = text(now)
local out = {}
local woken = 0
keep_working_when_full()
-- Index updates of completed jobs, sent batched after the loop (lib.lua's
-- `batched`). Only a job that was active under this call's token lands in
-- them, and no later entry of this call reads them.
-- `done` is both `active`'s ZREM and `outstanding`'s SREM.
local done, done_index = {}, {}
local n_done = 0
-- This call's counts for the per-minute history (lib.lua's `count_minute`).
local n_failed, n_dead = 0, 0

for i = 0, n - 1 do
  local b = 3 + i * STRIDE
  local id, token, mode, data = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local jk = job_key(id)
  -- What the common path (complete) needs, and only that: each field read
  -- costs about 0.2 µs, present or not (docs/performance.md). A failure
  -- reads the counters below; a completed job's attempt is read only for
  -- an event, its parent's queue only when it has a parent, and its log
  -- and flow keys only when it is deleted now (`retain`).
  local f, kind = read_job(jk, 'state', 'lease', 'dedup', 'retention_s', 'notify', 'parent')
  local state, lease
  if f then state, lease = f[1], f[2] end
  local attempts, max_attempts, prio, g
  if f and state == 'active' and lease == token and mode ~= 'complete' then
    g = redis.call('HMGET', jk, 'attempts', 'max_attempts', 'priority')
    attempts = num_field(g[1] or 0, 0, 1e15)
    max_attempts = num_field(g[2] or 1, 1, 1e15)
    prio = num_field(g[3] or 0, -PRIORITY_MAX, PRIORITY_MAX)
  end
  if not f then
    -- Not a hash: nobody's lease; moved aside and recorded dead.
    quarantine(id, now, kind)
    out[#out + 1] = 'lease_lost:dead'
  elseif not state then
    out[#out + 1] = 'not_found'
  elseif state ~= 'active' or lease ~= token then
    -- The lease field keeps the token that settled the job until the next
    -- reserve replaces it: a repeated settle (its reply lost) gets the
    -- state it set, anyone else lease_lost.
    if lease == token then
      out[#out + 1] = state
    else
      out[#out + 1] = 'lease_lost:' .. state
    end
  elseif mode ~= 'complete' and (attempts == nil or max_attempts == nil or prio == nil) then
    -- The holder reports an outcome, but the job's counters are damaged:
    -- dead with the reason rather than a guess.
    local field, value = 'attempts', g[1]
    if max_attempts == nil then field, value = 'max_attempts', g[2]
    elseif prio == nil then field, value = 'priority', g[3] end
    corrupt(jk, id, now, field, value)
    out[#out + 1] = 'dead'
  elseif mode == 'complete' then
    -- The common path, with its index updates batched, and each optional
    -- step's helper called only when the job has what it is for.
    if listening(f[5]) then
      emit(id, f[5], 'completed', num_field(redis.call('HGET', jk, 'attempts') or 0, 0, 1e15), data)
    end
    redis.call('HSET', jk, 'state', 'completed', 'result', data, 'finished_at', now_text)
    n_done = n_done + 1
    done[n_done] = id
    if f[3] and f[3] ~= '' then release_dedup(jk, id, f[3]) end
    if f[6] then
      child_ended(id, f[6], redis.call('HGET', jk, 'parent_queue'), 'completed', data, now)
    end
    retain(jk, id, K_DONE, now, f[4] or 0, done_index)
    out[#out + 1] = 'completed'
  else
    redis.call('ZREM', K_ACTIVE, id)
    if mode == 'release' then
      make_ready(id, prio, true,
        { 'attempts', math.max(0, attempts - 1) })
      woken = woken + 1
      out[#out + 1] = 'ready'
    elseif mode == 'cancelled' then
      out[#out + 1] = to_cancelled(jk, id, now)
    elseif mode == 'retry' and attempts < max_attempts then
      local run_at = now + tonumber(ARGV[b + 4])
      record_failure(jk, attempts, now, data)
      n_failed = n_failed + 1
      emit(id, f[5], 'failed', attempts, data)
      redis.call('HSET', jk, 'state', 'scheduled', 'last_error', data, 'run_at', run_at)
      redis.call('ZADD', K_SCHED, run_at, id)
      redis.call('SREM', K_OUT, id)
      out[#out + 1] = 'scheduled'
    else
      local reason = data
      if mode == 'retry' then
        reason = data .. ' (attempt ' .. attempts .. ' of ' .. max_attempts .. ', no retries left)'
      end
      record_failure(jk, attempts, now, data)
      n_failed, n_dead = n_failed + 1, n_dead + 1
      emit(id, f[5], 'dead', attempts, reason)
      to_dead(jk, id, now, reason)
      out[#out + 1] = 'dead'
    end
  end
end

batched('ZREM', K_ACTIVE, done)
batched('SREM', K_OUT, done)
batched('ZADD', K_DONE, done_index)
if woken > 0 then wake(woken) end
if n_done > 0 or n_failed > 0 then
  count_minute(now, { completed = n_done, failed = n_failed, dead = n_dead })
end
return out
