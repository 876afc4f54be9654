-- flow.lua: enqueues a flow, a parent and its children (nested up to 32
-- levels), atomically: all of it or nothing.
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] queue name, [3] n (1..10000), then n groups of 15:
--       the 12 of enqueue.lua, then parent (0 for entry 1, the flow's root;
--       for every other entry the number, from 1, of an earlier entry: its
--       parent), on_child_failure ('fail' or 'continue': what a child that
--       dies or is cancelled does to this entry, when it has children) and
--       queue (the entry's queue; '' for the call's, which entry 1 must be
--       in). Groups of 14, without the queue, are accepted: every entry is
--       then in the call's queue. An entry in another queue touches keys
--       the call did not declare, which a single server allows and Redis
--       Cluster does not (spool-queue refuses such a flow there).
--       Entries come in document order: each parent before its children and
--       each subtree whole (pre-order), as a depth-first walk lists them.
-- Returns: the n ids in input order. When the root exists already (its id,
--       or its dedup key held by a live job) nothing is written and the reply
--       is that flow's ids in the same order, so a producer may retry an
--       enqueue whose reply it lost. A child whose id exists, or whose dedup
--       key a live job holds, refuses the whole call: a flow's children are
--       new jobs. Every argument is checked before anything is written.
-- Invariant: a parent is in `waiting` (and no other index) until each of its
--       children has ended; a child is enqueued as enqueue.lua enqueues a job.

local MAX_DEPTH = 32
local POLICIES = { fail = true, continue = true }
local queue = str_arg(ARGV[2], 'queue', 1, MAX_ID)
local n = int_arg(ARGV[3], 'n', 1, MAX_BATCH)
local STRIDE = 15
if #ARGV == 3 + n * 14 then STRIDE = 14 end
argc(3 + n * STRIDE)

local function base(i) return 4 + (i - 1) * STRIDE end
local parent_of, depth, kids, ids_seen, dedups_seen = {}, {}, {}, {}, {}
-- Each entry's queue, and the queues other than the call's.
local eq, others = {}, {}
for i = 1, n do
  local b = base(i)
  local q = queue
  if STRIDE == 15 and ARGV[b + 14] ~= '' then
    q = ARGV[b + 14]
    if #q > 100 or not string.match(q, '^[%w%-_%.:]+$') then
      bad_arg('queue', q, 'must be 1 to 100 ASCII letters, digits and - _ . :', i)
    end
    if i == 1 and q ~= queue then bad_arg('queue', q, "must be the call's queue", i) end
    if q ~= queue then others[q] = true end
  end
  eq[i] = q
  check_job_args(b, i, ARGV[b + 10], ARGV[b + 11])
  local p = int_arg(ARGV[b + 12], 'parent', i == 1 and 0 or 1, i - 1, i)
  if not POLICIES[ARGV[b + 13]] then
    bad_arg('on_child_failure', ARGV[b + 13], "must be 'fail' or 'continue'", i)
  end
  local key = q .. ' ' .. ARGV[b]
  if ids_seen[key] then bad_arg('id', ARGV[b], 'appears twice in the flow', i) end
  ids_seen[key] = true
  local d = ARGV[b + 9]
  if d ~= '' then
    if dedups_seen[q .. ' ' .. d] then bad_arg('dedup_key', d, 'appears twice in the flow', i) end
    dedups_seen[q .. ' ' .. d] = true
  end
  parent_of[i], kids[i], depth[i] = p, 0, 0
  if p > 0 then
    -- Pre-order: the parent is the previous entry or one of its ancestors.
    local a = i - 1
    while a > 0 and a ~= p do a = parent_of[a] end
    if a ~= p then
      bad_arg('parent', p, 'entries must come in document order (each subtree whole)', i)
    end
    depth[i] = depth[p] + 1
    if depth[i] > MAX_DEPTH then bad_arg('parent', p, 'flows nest at most 32 levels', i) end
    kids[p] = kids[p] + 1
  end
end

guard_keys()
for q in pairs(others) do in_queue(q, guard_keys) end

-- The ids of a stored flow, in document order.
local function flow_ids(id, out)
  out[#out + 1] = id
  for _, c in ipairs(redis.call('LRANGE', (flow_keys(id)), 0, -1)) do
    local q, cid = split_entry(c)
    in_queue(q, flow_ids, cid, out)
  end
  return out
end

local root = ARGV[base(1)]
if redis.call('EXISTS', job_key(root)) == 1 then return flow_ids(root, {}) end
local holder = dedup_holder(ARGV[base(1) + 9])
if holder then return flow_ids(holder, {}) end
for i = 2, n do
  local b = base(i)
  local exists = in_queue(eq[i], function() return redis.call('EXISTS', job_key(ARGV[b])) end)
  if exists == 1 then
    error({ err = 'ERR spool: child id "' .. printable(ARGV[b]) .. '" (entry ' .. i
      .. ') exists already; a flow\'s children must be new jobs' })
  end
  holder = in_queue(eq[i], dedup_holder, ARGV[b + 9])
  if holder then
    error({ err = 'ERR spool: dedup key "' .. printable(ARGV[b + 9]) .. '" (entry ' .. i
      .. ') is held by live job "' .. printable(holder) .. '"; a flow\'s children must be new jobs' })
  end
end

local now = now_ms()
local out, lists = {}, {}
local woken = {}
-- Writes entry `i` in its own queue (the caller switched to it).
local function write_entry(i)
  local b = base(i)
  local id = ARGV[b]
  local delay = tonumber(ARGV[b + 3])
  -- SET replaces whatever the key held (a dead job's claim, or damage).
  if ARGV[b + 9] ~= '' then redis.call('SET', PREFIX .. 'dedup:' .. ARGV[b + 9], id) end
  local run_at = now + delay
  local fields = job_fields(eq[i], b, now, run_at, ARGV[b + 10], ARGV[b + 11])
  local p = parent_of[i]
  if p > 0 then
    fields[#fields + 1] = 'parent'
    fields[#fields + 1] = ARGV[base(p)]
    if eq[p] ~= eq[i] then
      fields[#fields + 1] = 'parent_queue'
      fields[#fields + 1] = eq[p]
    end
  end
  local jk = job_key(id)
  if kids[i] > 0 then
    fields[#fields + 1] = 'kids'
    fields[#fields + 1] = kids[i]
    fields[#fields + 1] = 'on_child_failure'
    fields[#fields + 1] = ARGV[b + 13]
    redis.call('HSET', jk, 'state', 'waiting', unpack(fields))
    redis.call('ZADD', K_WAITING, now, id)
  elseif delay > 0 then
    redis.call('HSET', jk, 'state', 'scheduled', unpack(fields))
    redis.call('ZADD', K_SCHED, run_at, id)
  else
    make_ready(id, tonumber(ARGV[b + 2]), false, fields)
    woken[eq[i]] = (woken[eq[i]] or 0) + 1
  end
end
for i = 1, n do
  in_queue(eq[i], write_entry, i)
  local p = parent_of[i]
  if p > 0 then
    -- The parent lists a child of another queue by queue and id.
    local entry = ARGV[base(i)]
    if eq[p] ~= eq[i] then entry = eq[i] .. ' ' .. entry end
    lists[p] = lists[p] or {}
    lists[p][#lists[p] + 1] = entry
  end
  out[#out + 1] = ARGV[base(i)]
end
for p, list in pairs(lists) do
  in_queue(eq[p], function() batched('RPUSH', (flow_keys(ARGV[base(p)])), list) end)
end
for q, k in pairs(woken) do in_queue(q, wake, k) end
return out
