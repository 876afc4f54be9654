-- flow.lua: enqueues a flow, a parent and its children (nested up to 32
-- levels), atomically: all of it or nothing.
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] queue name, [3] n (1..10000), then n groups of 14:
--       the 12 of enqueue.lua, then parent (0 for entry 1, the flow's root;
--       for every other entry the number, from 1, of an earlier entry: its
--       parent) and on_child_failure ('fail' or 'continue': what a child that
--       dies or is cancelled does to this entry, when it has children).
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

local STRIDE = 14
local MAX_DEPTH = 32
local POLICIES = { fail = true, continue = true }
local queue = str_arg(ARGV[2], 'queue', 1, MAX_ID)
local n = int_arg(ARGV[3], 'n', 1, MAX_BATCH)
argc(3 + n * STRIDE)

local function base(i) return 4 + (i - 1) * STRIDE end
local parent_of, depth, kids, ids_seen, dedups_seen = {}, {}, {}, {}, {}
for i = 1, n do
  local b = base(i)
  local at = ' (entry ' .. i .. ')'
  check_job_args(b, at, ARGV[b + 10], ARGV[b + 11])
  local p = int_arg(ARGV[b + 12], 'parent' .. at, i == 1 and 0 or 1, i - 1)
  if not POLICIES[ARGV[b + 13]] then
    bad_arg('on_child_failure' .. at, ARGV[b + 13], "must be 'fail' or 'continue'")
  end
  if ids_seen[ARGV[b]] then bad_arg('id' .. at, ARGV[b], 'appears twice in the flow') end
  ids_seen[ARGV[b]] = true
  local d = ARGV[b + 9]
  if d ~= '' then
    if dedups_seen[d] then bad_arg('dedup_key' .. at, d, 'appears twice in the flow') end
    dedups_seen[d] = true
  end
  parent_of[i], kids[i], depth[i] = p, 0, 0
  if p > 0 then
    -- Pre-order: the parent is the previous entry or one of its ancestors.
    local a = i - 1
    while a > 0 and a ~= p do a = parent_of[a] end
    if a ~= p then
      bad_arg('parent' .. at, p, 'entries must come in document order (each subtree whole)')
    end
    depth[i] = depth[p] + 1
    if depth[i] > MAX_DEPTH then bad_arg('parent' .. at, p, 'flows nest at most 32 levels') end
    kids[p] = kids[p] + 1
  end
end

guard_keys()

-- A live job holding dedup key `d`, or nil.
local function dedup_holder(d)
  if d == '' then return nil end
  local held = redis.pcall('GET', PREFIX .. 'dedup:' .. d)
  if type(held) == 'string' and redis.call('EXISTS', job_key(held)) == 1 then return held end
  return nil
end

-- The ids of a stored flow, in document order.
local function flow_ids(id, out)
  out[#out + 1] = id
  for _, c in ipairs(redis.call('LRANGE', (flow_keys(id)), 0, -1)) do flow_ids(c, out) end
  return out
end

local root = ARGV[base(1)]
if redis.call('EXISTS', job_key(root)) == 1 then return flow_ids(root, {}) end
local holder = dedup_holder(ARGV[base(1) + 9])
if holder then return flow_ids(holder, {}) end
for i = 2, n do
  local b = base(i)
  if redis.call('EXISTS', job_key(ARGV[b])) == 1 then
    error({ err = 'ERR spool: child id "' .. printable(ARGV[b]) .. '" (entry ' .. i
      .. ') exists already; a flow\'s children must be new jobs' })
  end
  holder = dedup_holder(ARGV[b + 9])
  if holder then
    error({ err = 'ERR spool: dedup key "' .. printable(ARGV[b + 9]) .. '" (entry ' .. i
      .. ') is held by live job "' .. printable(holder) .. '"; a flow\'s children must be new jobs' })
  end
end

local now = now_ms()
local out, lists = {}, {}
local woken = 0
for i = 1, n do
  local b = base(i)
  local id = ARGV[b]
  local delay = tonumber(ARGV[b + 3])
  -- SET replaces whatever the key held (a dead job's claim, or damage).
  if ARGV[b + 9] ~= '' then redis.call('SET', PREFIX .. 'dedup:' .. ARGV[b + 9], id) end
  local run_at = now + delay
  local fields = job_fields(queue, b, now, run_at, ARGV[b + 10], ARGV[b + 11])
  local p = parent_of[i]
  if p > 0 then
    fields[#fields + 1] = 'parent'
    fields[#fields + 1] = ARGV[base(p)]
    lists[p] = lists[p] or {}
    lists[p][#lists[p] + 1] = id
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
    woken = woken + 1
  end
  out[#out + 1] = id
end
for p, list in pairs(lists) do batched('RPUSH', (flow_keys(ARGV[base(p)])), list) end
if woken > 0 then wake(woken) end
return out
