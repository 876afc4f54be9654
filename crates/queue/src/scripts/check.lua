-- check.lua: reconciles jobs with the indexes their state says they are in,
-- for `spoolctl check`; repairs only when asked.
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] mode ('check': report only, 'repair': fix), then ids
-- Returns: one line per finding, "<id>: <what was wrong>" (repaired when the
--       mode is 'repair'); nothing when every job sits where its state says.
-- Invariant kept (after a repair): `outstanding` = `ready` ∪ `active`, and a
--       job with state ready, active, scheduled or waiting is in that index (and only
--       there; a ready job may be in `parked` instead of `ready`); a finished
--       or missing job is in none of the live indexes; a waiting parent has
--       a child that has not ended, and knows of each one that has.

local mode = ARGV[2]
if mode ~= 'check' and mode ~= 'repair' then bad_arg('mode', mode, 'must be check or repair') end
for i = 3, #ARGV do str_arg(ARGV[i], 'id', 1, MAX_ID) end
local fix = mode == 'repair'
guard_keys()
local now = now_ms()
local out = {}

local function note(id, what)
  out[#out + 1] = id .. ': ' .. what
end

local function score(key, id)
  return redis.call('ZSCORE', key, id)
end

-- A waiting parent: each child that has ended is recorded in the parent's
-- results or failures (so the parent learns of every end), and once every
-- child has, the parent is ready.
local function check_flow(id)
  local ck, rk, fk = flow_keys(id)
  local kids = num_field(redis.call('HGET', job_key(id), 'kids'), 0, MAX_BATCH) or 0
  local list = redis.call('LRANGE', ck, 0, -1)
  if #list ~= kids then
    note(id, 'lists ' .. #list .. ' children but counts ' .. kids .. '; count set to the list')
    if fix then redis.call('HSET', job_key(id), 'kids', #list) end
  end
  for _, c in ipairs(list) do
    if redis.call('HEXISTS', rk, c) == 0 and redis.call('HEXISTS', fk, c) == 0 then
      -- A child of another queue is read, and ends, in its own queue.
      local q, cid = split_entry(c)
      local cf = in_queue(q, function() return read_job(job_key(cid), 'state', 'result', 'last_error') end)
      local s = cf and cf[1]
      if not cf or s == 'completed' or s == 'dead' or s == 'cancelled' or not s then
        note(id, 'child ' .. c .. ' ended (' .. (s or 'gone') .. ') but its parent did not learn it; told now')
        if fix and redis.call('HGET', job_key(id), 'state') == 'waiting' then
          local pq = q and QUEUE_NAME or nil
          if s == 'completed' then
            in_queue(q, child_ended, cid, id, pq, 'completed', cf[2] or '', now)
          elseif s == 'cancelled' then
            in_queue(q, child_ended, cid, id, pq, 'cancelled', '', now)
          else
            in_queue(q, child_ended, cid, id, pq, 'dead', (cf and cf[3]) or 'its hash is gone', now)
          end
        end
      end
    end
  end
  if redis.call('HGET', job_key(id), 'state') == 'waiting'
    and redis.call('HLEN', rk) + redis.call('HLEN', fk) >= #list then
    note(id, 'waiting but every child has ended; made ready')
    if fix then
      local p = redis.call('HMGET', job_key(id), 'priority', 'run_at')
      parent_ready(job_key(id), id, p[1], p[2], now)
    end
  end
end

for i = 3, #ARGV do
  local id = ARGV[i]
  local jk = job_key(id)
  local f, kind = read_job(jk, 'state', 'priority', 'lease_ms', 'run_at')
  local in_ready = score(K_READY, id)
  local in_parked = score(K_PARKED, id)
  local in_active = score(K_ACTIVE, id)
  local in_sched = score(K_SCHED, id)
  local in_wait = score(K_WAITING, id)
  local in_out = redis.call('SISMEMBER', K_OUT, id) == 1
  if not f then
    note(id, 'its key holds a ' .. kind .. ', not a hash; moved aside and recorded dead')
    if fix then quarantine(id, now, kind) end
  elseif not f[1] and redis.call('EXISTS', jk) == 1 then
    -- A hash without its state field (deleted by hand or another tool): no
    -- script would ever index or settle it again, so it would sit unseen.
    note(id, 'its hash has no state field; recorded dead (retry it from the dead letters)')
    if fix then
      unindex(id)
      corrupt(jk, id, now, 'state', '')
    end
  elseif not f[1] then
    if in_ready or in_parked or in_active or in_sched or in_wait or in_out then
      note(id, 'indexed but its hash is gone; removed from the indexes')
      if fix then
        unindex(id)
      end
    end
  else
    local state = f[1]
    if state == 'ready' then
      -- In the backlog and outstanding, or parked and not outstanding (a
      -- paused queue, or one being resumed).
      local placed = (in_ready and in_out and not in_parked)
        or (in_parked and not in_ready and not in_out)
      if not placed or in_active or in_sched or in_wait then
        note(id, 'ready but not (only) in the backlog; put back at the front')
        if fix then
          unindex(id)
          make_ready(id, num_field(f[2] or 0, -PRIORITY_MAX, PRIORITY_MAX) or 0, true)
          wake(1)
        end
      end
    elseif state == 'active' then
      if not in_active or in_ready or in_parked or in_sched or in_wait or not in_out then
        note(id, 'active but not (only) in the active set; its lease restored')
        if fix then
          unindex(id)
          -- A fresh lease: its holder's next beat moves the deadline on;
          -- without a holder, the sweep takes the job back after it.
          redis.call('ZADD', K_ACTIVE, now + (num_field(f[3], MIN_LEASE_MS, MAX_LEASE_MS) or 30000), id)
          redis.call('SADD', K_OUT, id)
        end
      end
    elseif state == 'scheduled' then
      if not in_sched or in_ready or in_parked or in_active or in_wait or in_out then
        note(id, 'scheduled but not (only) in the schedule; rescheduled')
        if fix then
          unindex(id)
          redis.call('ZADD', K_SCHED, num_field(f[4], 0, 1e15) or now, id)
        end
      end
    elseif state == 'waiting' then
      if not in_wait or in_ready or in_parked or in_active or in_sched or in_out then
        note(id, 'waiting for its children but not (only) in the waiting set; put back')
        if fix then
          unindex(id)
          redis.call('ZADD', K_WAITING, now, id)
        end
      end
      check_flow(id)
    elseif in_ready or in_parked or in_active or in_sched or in_wait or in_out then
      note(id, state .. ' but still in a live index; removed from it')
      if fix then
        unindex(id)
      end
    end
  end
end

return out
