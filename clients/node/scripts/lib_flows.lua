-- lib_flows.lua: the flow helpers (docs/protocol.md, "Flows"), after lib.lua
-- in the scripts that can end a job or revive a flow (reserve, settle,
-- sweep, cancel, dead and check) and in flow.lua (scripts.rs). They fill in the functions
-- lib.lua declares (`child_ended` and the rest), which lib.lua's `to_dead`
-- and `to_cancelled` call; the other scripts never end a job, so they
-- neither pay for these closures nor reach them (a test holds them to it).

-- Flows whose jobs span queues (a single server or Sentinel: on Redis
-- Cluster each queue is its own hash slot, and spool-queue refuses such a
-- flow before sending it). A parent lists a child of another queue as
-- "<queue> <id>" (ids hold no whitespace), in its children list and its
-- results and failures; the child's hash names the parent's queue in
-- `parent_queue`. `in_queue(q, fn, ...)` runs `fn` with every queue
-- variable of lib.lua (prefix, keys, the pause and listener caches)
-- switched to queue `q`, then switches them back; nil or the current
-- queue runs `fn` as it is.
local QUEUE_NAME = string.sub(PREFIX, 8, -3)
in_queue = function(q, fn, ...)
  if not q or q == '' or q == QUEUE_NAME then return fn(...) end
  local saved = { PREFIX, QUEUE_NAME, K_READY, K_SCHED, K_ACTIVE, K_OUT, K_DEAD, K_DONE, K_CANC,
    K_SEQ, K_WAKE, K_PAUSED, K_PARKED, K_WAITING, K_EVENTS, K_LISTENING, K_MINUTES }
  local was_paused, was_listened = paused_now, listened
  local p = 'spool:{' .. q .. '}:'
  PREFIX, QUEUE_NAME = p, q
  K_READY, K_SCHED, K_ACTIVE, K_OUT = p .. 'ready', p .. 'scheduled', p .. 'active', p .. 'outstanding'
  K_DEAD, K_DONE, K_CANC = p .. 'dead', p .. 'completed', p .. 'cancelled'
  K_SEQ, K_WAKE, K_PAUSED, K_PARKED = p .. 'seq', p .. 'wake', p .. 'paused', p .. 'parked'
  K_WAITING, K_EVENTS, K_LISTENING, K_MINUTES = p .. 'waiting', p .. 'events', p .. 'listening',
    p .. 'minutes'
  paused_now, listened = nil, nil
  local r1, r2 = fn(...)
  PREFIX, QUEUE_NAME, K_READY, K_SCHED, K_ACTIVE, K_OUT, K_DEAD, K_DONE, K_CANC, K_SEQ, K_WAKE,
    K_PAUSED, K_PARKED, K_WAITING, K_EVENTS, K_LISTENING, K_MINUTES = unpack(saved, 1, 17)
  paused_now, listened = was_paused, was_listened
  return r1, r2
end

-- A children list's entry: the child's queue (nil: the parent's) and id.
local function split_entry(e)
  local q, id = string.match(e, '^(%S+) (%S+)$')
  if q then return q, id end
  return nil, e
end

-- A parent whose children have all ended: into the backlog, or the
-- schedule while its own delay runs (`p` holds its priority and run_at).
parent_ready = function(pk, parent, prio, run_at, now)
  redis.call('ZREM', K_WAITING, parent)
  local at = num_field(run_at, 0, 1e15) or 0
  if at > now then
    redis.call('HSET', pk, 'state', 'scheduled')
    redis.call('ZADD', K_SCHED, at, parent)
  else
    make_ready(parent, num_field(prio or 0, -PRIORITY_MAX, PRIORITY_MAX) or 0, false)
    wake(1)
  end
end

-- Child `id` of `parent` has ended: `outcome` is completed (data: its
-- result), dead (data: the error) or cancelled. Recorded for a waiting parent
-- (and a dead one, which a retry may revive); a waiting parent then becomes
-- ready when that was its last child, or, when a child failed under the
-- 'fail' policy, dead naming the child, its other children cancelled.
child_ended = function(id, parent, parent_q, outcome, data, now)
  if parent_q and parent_q ~= '' and parent_q ~= QUEUE_NAME then
    -- The parent lists this child by queue and id; its end is recorded there.
    return in_queue(parent_q, child_ended, QUEUE_NAME .. ' ' .. id, parent, nil, outcome, data, now)
  end
  local pk = job_key(parent)
  local p = read_job(pk, 'state', 'on_child_failure', 'kids', 'priority', 'run_at', 'notify',
    'attempts')
  if not p or (p[1] ~= 'waiting' and p[1] ~= 'dead') then return end
  local _, rk, fk = flow_keys(parent)
  if outcome == 'completed' then
    redis.call('HDEL', fk, id)
    redis.call('HSET', rk, id, data)
  else
    if outcome == 'cancelled' then data = 'cancelled' end
    redis.call('HSET', fk, id, data)
  end
  if p[1] ~= 'waiting' then return end
  if outcome ~= 'completed' and p[2] ~= 'continue' then
    local reason = 'child ' .. id .. ' was cancelled'
    if outcome == 'dead' then reason = 'child ' .. id .. ' died: ' .. data end
    redis.call('ZREM', K_WAITING, parent)
    redis.call('HSET', pk, 'failed_by', id)
    emit(parent, p[6], 'dead', tonumber(p[7]) or 0, reason)
    to_dead(pk, parent, now, reason)
    cancel_children(parent, now)
    return
  end
  local kids = num_field(p[3], 0, MAX_BATCH) or 0
  local ended = redis.call('HLEN', rk) + redis.call('HLEN', fk)
  if ended >= kids then
    parent_ready(pk, parent, p[4], p[5], now)
  else
    -- A waiting parent's progress is its children's (docs/protocol.md,
    -- "Flows"), until it runs and reports its own: one HSET per child's
    -- end, and an event only while someone listens.
    local progress = string.format('{"phase":"children","ended":%d,"of":%d,"percent":%.1f}',
      ended, kids, 100 * ended / kids)
    redis.call('HSET', pk, 'progress', progress)
    emit(parent, p[6], 'progress', tonumber(p[7]) or 0, progress)
  end
end

-- Cancels job `id`: a waiting one (ready, scheduled, or a parent waiting for
-- its children, which are cancelled with it) at once, a running one by
-- request (its worker sees the flag at its next heartbeat). `by_flow` marks
-- a child its flow cancels (`flow_cancelled`). Returns cancel.lua's reply.
cancel_job = function(id, now, by_flow)
  local jk = job_key(id)
  local f, kind = read_job(jk, 'state')
  if not f then
    quarantine(id, now, kind)
    return 'finished:dead'
  end
  local state = f[1]
  if not state then return 'not_found' end
  if state == 'ready' or state == 'scheduled' or state == 'waiting' then
    -- Its children are listed first: a retention of 0 deletes the list
    -- with the parent.
    local kids = state == 'waiting' and redis.call('LRANGE', (flow_keys(id)), 0, -1)
    unindex(id)
    if by_flow then redis.call('HSET', jk, 'flow_cancelled', '1') end
    to_cancelled(jk, id, now)
    if kids then cancel_children(id, now, kids) end
    return 'cancelled'
  elseif state == 'active' then
    -- A cancel by hand clears the flow's mark: the job then ends cancelled,
    -- even when its parent has been revived meanwhile.
    redis.call('HSET', jk, 'cancel', '1', 'flow_cancelled', by_flow and '1' or '')
    return 'requested'
  end
  return 'finished:' .. state
end

-- Cancels every child of `parent` that is still live (`list`: its children,
-- when the caller has read them).
cancel_children = function(parent, now, list)
  list = list or redis.call('LRANGE', (flow_keys(parent)), 0, -1)
  for _, c in ipairs(list) do
    local q, id = split_entry(c)
    in_queue(q, cancel_job, id, now, true)
  end
end

-- A job coming back from the dead letters (or a flow's cancel) takes its
-- dedup key back when no newer live job holds it; otherwise it comes back
-- without one, so one key never names two live jobs. Appends to `fields`.
reclaim_dedup = function(id, d, fields)
  if not d or d == '' then return end
  local holder = dedup_holder(d)
  if holder and holder ~= id then
    fields[#fields + 1] = 'dedup'
    fields[#fields + 1] = ''
  else
    redis.call('SET', PREFIX .. 'dedup:' .. d, id)
  end
end

-- Runs an ended job again from its first attempt (the caller has taken it
-- out of the dead or cancelled index, and wakes a consumer).
rerun = function(id, prio, dedup)
  local fields = { 'attempts', 0, 'finished_at', '', 'cancel', '', 'flow_cancelled', '' }
  reclaim_dedup(id, dedup, fields)
  make_ready(id, num_field(prio or 0, -PRIORITY_MAX, PRIORITY_MAX) or 0, false, fields)
end

-- Brings a parent that ended before running (dead because a child failed
-- it, or cancelled with its flow) back to waiting: every child that did not
-- complete runs again (dead and cancelled ones from their first attempt; a
-- running one keeps running, its cancel request withdrawn), and the parent
-- runs once they have. Returns false, changing nothing, when a child that
-- must run again is gone (deleted by its retention or by hand).
revive = function(pid, now)
  local pk = job_key(pid)
  local ck, rk, fk = flow_keys(pid)
  local again = {}
  for _, c in ipairs(redis.call('LRANGE', ck, 0, -1)) do
    if redis.call('HEXISTS', rk, c) == 0 then
      local q, id = split_entry(c)
      local f = in_queue(q, function() return read_job(job_key(id), 'state', 'priority', 'dedup', 'kids') end)
      if not f or not f[1] then return false end
      again[#again + 1] = { q, id, f }
    end
  end
  local p = redis.call('HMGET', pk, 'dedup', 'priority', 'run_at')
  local fields = { 'state', 'waiting', 'failed_by', '', 'finished_at', '', 'attempts', 0,
    'cancel', '', 'flow_cancelled', '' }
  reclaim_dedup(pid, p[1], fields)
  redis.call('ZREM', K_DEAD, pid)
  redis.call('ZREM', K_CANC, pid)
  redis.call('DEL', fk)
  redis.call('HSET', pk, unpack(fields))
  redis.call('ZADD', K_WAITING, now, pid)
  for _, e in ipairs(again) do
    local c, f = e[2], e[3]
    in_queue(e[1], function()
      if f[1] == 'dead' or f[1] == 'cancelled' then
        redis.call('ZREM', K_DEAD, c)
        redis.call('ZREM', K_CANC, c)
        if not (f[4] and revive(c, now)) then
          rerun(c, f[2], f[3])
          wake(1)
        end
      elseif f[1] == 'active' then
        redis.call('HSET', job_key(c), 'cancel', '')
      end
    end)
  end
  if #again == 0 then parent_ready(pk, pid, p[2], p[3], now) end
  return true
end
