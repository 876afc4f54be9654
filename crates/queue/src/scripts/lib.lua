-- lib.lua: helpers shared by every spool script. It is prepended to each script
-- at build time (see scripts.rs), so each script stays one atomic EVALSHA.
--
-- Every script takes the same KEYS, in this order (all share the queue's hash tag,
-- so one script touches one cluster slot):
--   KEYS[1] ready        ZSET  id -> priority/FIFO score   (the backlog; KEDA key)
--   KEYS[2] scheduled    ZSET  id -> run-at ms             (delayed jobs, retry waits)
--   KEYS[3] active       ZSET  id -> lease deadline ms
--   KEYS[4] outstanding  SET   ids ready or active          (KEDA key: outstanding work)
--   KEYS[5] dead         ZSET  id -> died-at ms
--   KEYS[6] completed    ZSET  id -> retention expiry ms
--   KEYS[7] cancelled    ZSET  id -> retention expiry ms
--   KEYS[8] seq          STRING counter giving FIFO order within a priority
--   KEYS[9] wake         LIST  wake-up tokens for blocked consumers
-- and ARGV[1] is the queue's key prefix, "spool:{<queue>}:", from which job
-- hashes ("<prefix>job:<id>"), dedup keys ("<prefix>dedup:<key>"), the pause
-- flag ("<prefix>paused") and the parked backlog ("<prefix>parked") are built.
--
-- Time is always the server's (TIME), never a client's clock.

local K_READY, K_SCHED, K_ACTIVE, K_OUT = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_DEAD, K_DONE, K_CANC, K_SEQ, K_WAKE = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local PREFIX = ARGV[1]
-- A paused queue: the flag (STRING, the pause time in ms) and the backlog held
-- while it is set (ZSET, scored as in `ready`). See `follow_pause`.
local K_PAUSED, K_PARKED = PREFIX .. 'paused', PREFIX .. 'parked'
-- Parents of flows waiting for their children (ZSET id -> since ms); see
-- "Flows" below.
local K_WAITING = PREFIX .. 'waiting'

-- Priorities run from -1000 to 1000 (higher first). Each priority owns a band of
-- 2^41 scores; inside it the middle (2^40) separates jobs put at the front
-- (released, recovered: 2^40 - seq) from jobs appended (2^40 + seq). The largest
-- score, 2000 * 2^41 + 2^41, stays below 2^53, so doubles hold it exactly.
local PRIORITY_MAX = 1000
local BAND = 2199023255552      -- 2^41
local MID = 1099511627776       -- 2^40
-- A blocked consumer needs one token; more than this many waiting is waste.
local WAKE_CAP = 64

-- Accepted argument ranges (docs/protocol.md lists them; spool-queue's
-- JobOptions::validate enforces the same before sending).
local MAX_ID = 256                 -- bytes, ids and dedup keys
local MAX_DELAY_MS = 31622400000   -- 366 days
local MAX_ATTEMPTS = 10000
local MAX_BACKOFF_MS = 86400000    -- 1 day
local MIN_LEASE_MS = 100
local MAX_LEASE_MS = 86400000      -- 1 day
local MAX_RETENTION_S = 31622400   -- 366 days
local MAX_BATCH = 10000            -- entries in one call
local MAX_TIMEOUT_MS = 2678400000  -- 31 days, a job's own time limit
local TIMEOUT_RETRY = { [''] = true, ['0'] = true, ['1'] = true }

-- A full Redis (at maxmemory with `maxmemory-policy noeviction`) refuses a
-- script's writes that may grow memory (HSET, ZADD: DENYOOM commands), but
-- only until the script's first write of any kind: after one, Redis lets the
-- script finish, so a script is never cut in half. The scripts a worker runs
-- on jobs it holds or drains (reserve, heartbeat, settle, sweep) keep memory
-- about flat or shrink it, and draining is what frees a full Redis, so they
-- call this before their first write and keep working; enqueue does not, and
-- is refused whole. HDEL of a key that never exists is a write command that
-- changes nothing (nothing reaches replicas or the AOF).
local function keep_working_when_full()
  redis.call('HDEL', PREFIX .. 'oom-guard', 'x')
end

-- Argument checks. Redis does not undo a script's earlier writes when it
-- fails, so every script checks all of its arguments before its first write,
-- and a bad call changes nothing.
-- Only printable ASCII goes into an error reply: clients parse replies as
-- text, and a stray byte from a binary argument would break their connection.
local function printable(v)
  local s = tostring(v):sub(1, 64):gsub('[^%w%p ]', '?')
  return s
end

-- `entry`, when given, is the argument's entry in a batch: its name is only
-- built here, on the way out, since concatenating names for every entry of
-- every call cost about a microsecond per job (docs/performance.md).
local function bad_arg(name, v, why, entry)
  if entry then name = name .. ' (entry ' .. entry .. ')' end
  error({ err = 'ERR spool: invalid ' .. name .. ' "' .. printable(v) .. '": ' .. why })
end

-- The integer a decimal string (or a Lua integer) holds: an optional '-'
-- and 1 to 16 digits, nothing else; nil otherwise. `%d+` and a length
-- check, not sixteen optional `%d?`: a quarter cheaper, and every job's
-- stored numbers pass through here (about 11 per job; docs/performance.md).
-- Each string's answer is kept for the rest of the call (`false`: not a
-- decimal): a batch's jobs share most of their stored numbers (options,
-- and the enqueue time of jobs enqueued together), and a table lookup of an
-- interned string costs a fraction of the pattern match.
local decimals = {}
local function decimal(v)
  local known = decimals[v]
  if known ~= nil then return known or nil end
  if type(v) == 'number' then
    if v ~= v or v ~= math.floor(v) then return nil end
    return v
  end
  if type(v) ~= 'string' then return nil end
  local n = #v
  local x = false
  if n > 0 and n <= 17 and string.find(v, '^%-?%d+$')
    and (n < 17 or string.byte(v, 1) == 45) then
    x = tonumber(v)
  end
  decimals[v] = x
  return x or nil
end

-- The decimal text of integer `x`, kept for the rest of the call. Redis
-- formats each number a script passes to a command with a printf (about a
-- third of a microsecond), and the jobs of a call share most of theirs
-- (the time, a deadline, attempt 1), so the hot paths pass this instead.
local texts = {}
local function text(x)
  local s = texts[x]
  if not s then
    s = string.format('%d', x)
    texts[x] = s
  end
  return s
end

-- An integer in lo..hi (no NaN, no infinity, no fraction).
local function int_arg(v, name, lo, hi, entry)
  -- Decimal digits only, as docs/protocol.md specifies: `tonumber` alone
  -- also takes "0x2", "1e3" and " 5", which the readers then refuse.
  local x = decimal(v)
  if x == nil or x < lo or x > hi then
    bad_arg(name, v, 'must be a decimal integer in ' .. lo .. '..' .. hi, entry)
  end
  return x
end

-- A string of min..max bytes.
local function str_arg(v, name, min, max, entry)
  if type(v) ~= 'string' or #v < min or #v > max then
    bad_arg(name, v, 'must be ' .. min .. ' to ' .. max .. ' bytes', entry)
  end
  return v
end

-- Exactly `want` arguments.
local function argc(want)
  if #ARGV ~= want then
    error({ err = 'ERR spool: expected ' .. want .. ' arguments, got ' .. #ARGV })
  end
end

-- A stored numeric field, or nil when missing or malformed (stored fields can
-- be damaged by hand or by another tool: a job's corruption, never a reason
-- to fail the other jobs of a call).
local function num_field(v, lo, hi)
  local x = decimal(v)
  if x == nil or x < lo or x > hi then return nil end
  return x
end

-- Refuses the call, before its first write, when a queue key holds the
-- wrong type (or `seq` something that is not a counter): Redis does not
-- undo a script's earlier writes when a later command fails, so a script
-- that met a damaged key half way would leave a job in no index, or
-- enqueued while the producer was told it failed. Checked once per call
-- (one TYPE per key, well under a microsecond each), whatever the batch.
local function damaged_key(key, what)
  error({ err = 'WRONGTYPE spool: ' .. printable(key) .. ' ' .. what
    .. '; nothing was changed: delete or repair that key (docs/operations.md, Troubleshooting), then retry' })
end
local function guard_key(key, want)
  local t = redis.call('TYPE', key).ok
  if t ~= 'none' and t ~= want then
    damaged_key(key, 'holds a ' .. t .. ', not a ' .. want)
  end
end
local function guard_keys()
  -- Built here, not once: a flow that spans queues guards each one
  -- (lib_flows.lua's `in_queue` switches these variables).
  local types = {
    { K_READY, 'zset' }, { K_SCHED, 'zset' }, { K_ACTIVE, 'zset' }, { K_OUT, 'set' },
    { K_DEAD, 'zset' }, { K_DONE, 'zset' }, { K_CANC, 'zset' }, { K_SEQ, 'string' },
    { K_WAKE, 'list' }, { K_PARKED, 'zset' }, { K_PAUSED, 'string' }, { K_WAITING, 'zset' },
  }
  for _, e in ipairs(types) do guard_key(e[1], e[2]) end
  local seq = redis.call('GET', K_SEQ)
  -- A counter past 10^15 is damage too: scores must stay exact doubles
  -- (below 2^53), and enqueue takes its block of numbers with GET and SET.
  if seq and (not string.match(seq, '^%-?%d+$') or math.abs(tonumber(seq)) >= 1e15) then
    damaged_key(K_SEQ, 'holds "' .. printable(seq) .. '", not a counter')
  end
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function job_key(id)
  return PREFIX .. 'job:' .. id
end

-- HMGET that survives a job key of the wrong type: returns the values, or
-- nil and the key's type.
local function read_job(jk, ...)
  local r = redis.pcall('HMGET', jk, ...)
  if type(r) == 'table' and r.err then
    return nil, redis.call('TYPE', jk).ok
  end
  return r
end

-- Whether the queue is paused, read once per script call.
local paused_now = nil
local function is_paused()
  if paused_now == nil then paused_now = redis.call('EXISTS', K_PAUSED) == 1 end
  return paused_now
end

local function wake(n)
  local room = WAKE_CAP - redis.call('LLEN', K_WAKE)
  local k = math.min(n, room)
  if k > 0 then
    local tokens = {}
    for i = 1, k do tokens[i] = '1' end
    redis.call('LPUSH', K_WAKE, unpack(tokens))
  end
end

-- Puts a job in the backlog: the only way into `ready`, so `outstanding` and
-- `ready` can never disagree. On a paused queue the job goes to `parked`
-- instead (state still 'ready'), outside both KEDA keys. `fields` (optional)
-- are more hash fields to set in the same HSET, which saves a command per job
-- on the hot paths. With `batch` (`ready_batch`), the index updates wait in
-- it for `flush_ready`, which the caller runs before it returns.
local function make_ready(id, priority, front, fields, batch)
  local seq
  if batch then
    -- The batch's block of FIFO numbers, taken from `seq` at its first job
    -- (GET and SET, which every role's ACL allows, where INCRBY would need
    -- a new grant; guard_keys has checked that `seq` holds a counter).
    if not batch.seq then
      batch.seq = tonumber(redis.call('GET', K_SEQ) or '0')
      redis.call('SET', K_SEQ, text(batch.seq + batch.size))
    end
    batch.seq = batch.seq + 1
    seq = batch.seq
  else
    seq = redis.call('INCR', K_SEQ)
  end
  local score = (PRIORITY_MAX - priority) * BAND + MID
  if front then score = score - seq else score = score + seq end
  if batch then
    batch.adds[#batch.adds + 1] = score
    batch.adds[#batch.adds + 1] = id
    batch.ids[#batch.ids + 1] = id
  elseif is_paused() then
    -- A job coming back from `active` (released, its lease expired) is
    -- still in `outstanding`: it leaves it here, for every caller.
    redis.call('ZADD', K_PARKED, score, id)
    redis.call('SREM', K_OUT, id)
  else
    redis.call('ZADD', K_READY, score, id)
    redis.call('SADD', K_OUT, id)
  end
  if fields then
    redis.call('HSET', job_key(id), 'state', 'ready', unpack(fields))
  else
    redis.call('HSET', job_key(id), 'state', 'ready')
  end
end

-- A batch for `make_ready` of at most `size` jobs: their backlog entries
-- go in one command per index (`flush_ready`), as reserve and settle send
-- theirs, and their FIFO numbers are one block of `seq` (numbers of jobs
-- that never come go unused, which is harmless: `seq` only orders).
local function ready_batch(size)
  return { size = size, adds = {}, ids = {} }
end

-- The live job holding dedup key `d`, or nil: the key names a job whose
-- hash exists. A key of another type is not one spool wrote (a SET takes
-- it over), and a key naming a deleted job is stale.
local function dedup_holder(d)
  if not d or d == '' then return nil end
  local held = redis.pcall('GET', PREFIX .. 'dedup:' .. d)
  if type(held) == 'string' and redis.call('EXISTS', job_key(held)) == 1 then return held end
  return nil
end

-- A live dedup key points at a job until it ends; only its own job frees it.
-- `dedup` is the job's dedup field when the caller has read it already.
local function release_dedup(jk, id, dedup)
  local d = dedup
  if d == nil then d = redis.call('HGET', jk, 'dedup') end
  if d and d ~= '' then
    local dk = PREFIX .. 'dedup:' .. d
    if redis.call('GET', dk) == id then redis.call('DEL', dk) end
  end
end

-- Many members in few commands: `redis.call(cmd, key, ...)` over `args` in
-- chunks (Lua's stack holds a few thousand values). Scripts that move many
-- jobs collect their index updates and send them this way: each command in
-- a script costs Redis a call and an entry in the AOF and the replication
-- stream, so one ZREM of 200 members is far cheaper than 200 ZREMs.
-- CHUNK is even, so ZADD's score/member pairs never split.
local function batched(cmd, key, args)
  local CHUNK = 4000
  for i = 1, #args, CHUNK do
    redis.call(cmd, key, unpack(args, i, math.min(i + CHUNK - 1, #args)))
  end
end

-- Sends what `make_ready` kept in `batch`: the same index updates, one
-- command per index.
local function flush_ready(batch)
  if is_paused() then
    batched('ZADD', K_PARKED, batch.adds)
    batched('SREM', K_OUT, batch.ids)
  else
    batched('ZADD', K_READY, batch.adds)
    batched('SADD', K_OUT, batch.ids)
  end
end

-- Moves up to `limit` jobs, best first and with their scores (so their
-- order), between the backlog and `parked`, the way the pause flag says:
-- while paused, `ready` drains into `parked` and leaves `outstanding`, so
-- both keys KEDA reads count only running jobs, then nothing, and the fleet
-- scales to zero; once resumed, `parked` goes back. Pause, resume, reserve
-- and sweep call it, so a move cut short (a client killed between calls)
-- finishes by itself. Returns how many moved.
local function follow_pause(limit)
  local paused = is_paused()
  local from, to = K_PARKED, K_READY
  if paused then from, to = K_READY, K_PARKED end
  local r = redis.call('ZRANGE', from, 0, limit - 1, 'WITHSCORES')
  if #r == 0 then return 0 end
  local ids, adds = {}, {}
  for i = 1, #r, 2 do
    ids[#ids + 1] = r[i]
    adds[#adds + 1] = r[i + 1]
    adds[#adds + 1] = r[i]
  end
  batched('ZREM', from, ids)
  batched('ZADD', to, adds)
  if paused then
    batched('SREM', K_OUT, ids)
  else
    batched('SADD', K_OUT, ids)
    wake(#ids)
  end
  return #ids
end

-- Flows (docs/protocol.md, "Flows"): a parent job waits, in state 'waiting'
-- and in K_WAITING, until each of its children has ended; then it becomes
-- ready like any job and its handler reads what they left. Its hash holds
-- `kids` (how many children), `on_child_failure` ('fail' or 'continue') and,
-- once a child has failed it, `failed_by`; each child's hash holds `parent`.
-- Per parent: "<prefix>children:<id>" LIST its children in document order,
-- "<prefix>results:<id>" HASH child -> result of each completed child, and
-- "<prefix>failures:<id>" HASH child -> error of each child that died or was
-- cancelled. A child has ended, for its parent, once it is in one of the two
-- hashes (never both), so the children still pending are
-- kids - HLEN(results) - HLEN(failures): a count that cannot drift. The three
-- keys go when the parent's hash goes. A child may live in another queue
-- (lib_flows.lua's `in_queue`: a single server only).
local function flow_keys(id)
  return PREFIX .. 'children:' .. id, PREFIX .. 'results:' .. id, PREFIX .. 'failures:' .. id
end

-- The keys that go with job `id` when it is deleted: its hash, its log
-- (`logged` = '1') and, for a parent (`kids` set), its flow keys.
local function job_keys(jk, id, logged, kids)
  local keys = { jk }
  if logged == '1' then keys[#keys + 1] = PREFIX .. 'log:' .. id end
  if kids then
    local ck, rk, fk = flow_keys(id)
    keys[#keys + 1] = ck
    keys[#keys + 1] = rk
    keys[#keys + 1] = fk
  end
  return keys
end

-- A job's end reaches its parent (`child_ended`), whose end may reach its
-- own parent, and a flow's failure or cancel reaches its children
-- (`cancel_job`). They are defined in lib_flows.lua, which only the scripts
-- that can end a job or revive a flow include (scripts.rs): every script
-- call pays for creating the closures its prelude defines, used or not, at
-- a cost that grows with the outer variables each captures (the flow
-- helpers cost about 2.4 µs a call together), and a heartbeat or an
-- enqueue never needs them.
local parent_ready, child_ended, cancel_job, cancel_children, reclaim_dedup, rerun, revive
local in_queue

-- Completed and cancelled jobs are kept `retention_s` seconds (0: deleted now).
-- `retention` is the job's retention_s field when the caller has read it.
-- A job deleted now goes with its log (when its `logged` field says it has
-- one: log.lua sets it) and a parent's flow keys (`kids`); those two are
-- read only then, since a kept job's log and keys go when the sweep
-- prunes it.
-- With `zadds`, the index entry is appended there (score, id) for the caller
-- to send batched, instead of added now.
local function retain(jk, id, index_key, now, retention, zadds)
  local read, logged, kids = retention == nil, nil, nil
  if read then
    local f = redis.call('HMGET', jk, 'retention_s', 'logged', 'kids')
    retention, logged, kids = f[1], f[2], f[3]
  end
  local r = num_field(retention, 0, MAX_RETENTION_S) or 0
  if r <= 0 then
    if not read then
      local f = redis.call('HMGET', jk, 'logged', 'kids')
      logged, kids = f[1], f[2]
    end
    redis.call('DEL', unpack(job_keys(jk, id, logged, kids)))
  else
    -- No EXPIRE: the retention index, scored by expiry, is what deletes the
    -- job and its log (sweep.lua's `prune`, batched), so a job costs one
    -- command less now (and Redis no expiry DEL of its own later).
    if zadds then
      zadds[#zadds + 1] = text(now + r * 1000)
      zadds[#zadds + 1] = id
    else
      redis.call('ZADD', index_key, now + r * 1000, id)
    end
  end
end

-- History for the console's charts (docs/console.md, docs/protocol.md): a
-- ring of 1,440 one-minute slots, one hash field per slot,
-- "<prefix>minutes" slot -> "minute completed failed dead started wait_ms",
-- where `minute` is the slot's minute since the epoch (a stale slot is
-- reset on its first write), `failed` counts failed attempts (retried,
-- dead, or lease expired), `started` counts leases and `wait_ms` sums their
-- time from due to start. Two commands per call, however many jobs it
-- moves; the hash never holds more than 1,440 fields.
local K_MINUTES = PREFIX .. 'minutes'
local MINUTE_FIELDS = { completed = 2, failed = 3, dead = 4, started = 5, wait_ms = 6 }
local function count_minute(now, adds)
  local minute = math.floor(now / 60000)
  local slot = minute % 1440
  local v = { minute, 0, 0, 0, 0, 0 }
  local old = redis.call('HGET', K_MINUTES, slot)
  if old then
    local parts = {}
    for p in string.gmatch(old, '%d+') do parts[#parts + 1] = tonumber(p) end
    if #parts == 6 and parts[1] == minute then v = parts end
  end
  for name, n in pairs(adds) do
    local i = MINUTE_FIELDS[name]
    v[i] = v[i] + n
  end
  redis.call('HSET', K_MINUTES, slot, string.format('%d %d %d %d %d %d', v[1], v[2], v[3], v[4], v[5], v[6]))
end

-- Each failed attempt of a job, kept in its hash ("failures": a JSON array
-- of {attempt, started_at_ms, at_ms, error}, the last 20, each error cut at
-- 2,000 bytes on a UTF-8 boundary) for the console's job page. Only the
-- failure paths pay for it (the fields are read here, not by the callers'
-- common path).
local MAX_FAILURES = 20
local MAX_FAILURE_BYTES = 2000
local function record_failure(jk, attempt, now, reason)
  local h = redis.call('HMGET', jk, 'started_at', 'failures')
  local started, old = h[1], h[2]
  local list = {}
  if old and old ~= '' then
    local ok, decoded = pcall(cjson.decode, old)
    if ok and type(decoded) == 'table' then list = decoded end
  end
  local text = tostring(reason or '')
  if #text > MAX_FAILURE_BYTES then
    local cut = MAX_FAILURE_BYTES
    -- Back off continuation bytes (10xxxxxx) so the cut is whole characters.
    while cut > 0 do
      local b = string.byte(text, cut + 1)
      if not b or b < 128 or b >= 192 then break end
      cut = cut - 1
    end
    text = string.sub(text, 1, cut) .. '...'
  end
  list[#list + 1] = { attempt = tonumber(attempt) or 0, started_at_ms = tonumber(started) or 0,
    at_ms = now, error = text }
  while #list > MAX_FAILURES do table.remove(list, 1) end
  redis.call('HSET', jk, 'failures', cjson.encode(list))
end

-- Job events (docs/protocol.md, "Events"): a capped stream,
-- "<prefix>events", entries {job, event, attempt, data}, written only while
-- someone listens: a job whose hash has notify=1 (a producer waits on it),
-- or every job while "<prefix>listening" exists (a QueueEvents subscriber
-- keeps it alive). Nobody listening costs one EXISTS per script call.
-- `event` is completed (data: the result), failed (an attempt failed and
-- the job will run again; data: the error), dead (data: the error),
-- cancelled, or progress (data: the progress). A result over 64 KiB is
-- sent as `big`=1 without data (read it from the job).
local K_EVENTS, K_LISTENING = PREFIX .. 'events', PREFIX .. 'listening'
local MAX_EVENTS = 10000
local MAX_EVENT_DATA = 65536
local listened = nil
-- Whether an event of a job whose notify field is `notify` has a listener.
local function listening(notify)
  if notify == '1' then return true end
  if listened == nil then listened = redis.call('EXISTS', K_LISTENING) == 1 end
  return listened
end
local function emit(id, notify, event, attempt, data)
  if not listening(notify) then return end
  data = data or ''
  if #data > MAX_EVENT_DATA then
    redis.call('XADD', K_EVENTS, 'MAXLEN', '~', MAX_EVENTS, '*', 'job', id, 'event', event,
      'attempt', attempt or 0, 'big', '1')
  else
    redis.call('XADD', K_EVENTS, 'MAXLEN', '~', MAX_EVENTS, '*', 'job', id, 'event', event,
      'attempt', attempt or 0, 'data', data)
  end
end

local function to_dead(jk, id, now, reason)
  redis.call('HSET', jk, 'state', 'dead', 'last_error', reason, 'finished_at', now)
  redis.call('ZADD', K_DEAD, now, id)
  redis.call('SREM', K_OUT, id)
  local f = redis.call('HMGET', jk, 'dedup', 'parent', 'parent_queue')
  release_dedup(jk, id, f[1] or '')
  if f[2] then child_ended(id, f[2], f[3], 'dead', reason, now) end
end

-- Takes a job out of every live index (backlog, schedule, active set,
-- outstanding work); the caller puts it where its state says.
local function unindex(id)
  redis.call('ZREM', K_READY, id)
  redis.call('ZREM', K_PARKED, id)
  redis.call('ZREM', K_SCHED, id)
  redis.call('ZREM', K_ACTIVE, id)
  redis.call('ZREM', K_WAITING, id)
  redis.call('SREM', K_OUT, id)
end

-- A job whose key holds something other than a hash: the value is moved
-- aside (kept for inspection) and the job recorded dead with the reason, so
-- it leaves every live index and the other jobs of the call go on.
local function quarantine(id, now, kind)
  local jk = job_key(id)
  local aside = PREFIX .. 'corrupt:' .. id
  redis.call('RENAME', jk, aside)
  redis.call('HSET', jk, 'id', id, 'state', 'dead', 'attempts', 0, 'max_attempts', 1,
    'last_error', 'corrupt job: its key held a ' .. kind .. ', not a hash; moved to ' .. aside,
    'finished_at', now)
  unindex(id)
  redis.call('ZADD', K_DEAD, now, id)
end

-- A job hash with a malformed field: dead, naming the field.
local function corrupt(jk, id, now, field, value)
  unindex(id)
  to_dead(jk, id, now, 'corrupt job: field ' .. field .. ' is "' .. printable(value) .. '"')
end

-- Ends a job as cancelled (the caller has taken it out of its live index)
-- and returns its new state: 'cancelled', or 'ready' for a child its flow
-- cancelled whose parent has been revived since (a retry from the dead
-- letters), which runs again instead.
local function to_cancelled(jk, id, now)
  local w = redis.call('HMGET', jk, 'notify', 'attempts', 'parent', 'flow_cancelled', 'priority',
    'parent_queue')
  if w[3] and w[4] == '1' then
    local p = in_queue(w[6], function() return read_job(job_key(w[3]), 'state') end)
    if p and p[1] == 'waiting' then
      make_ready(id, num_field(w[5] or 0, -PRIORITY_MAX, PRIORITY_MAX) or 0, true,
        { 'attempts', 0, 'cancel', '', 'flow_cancelled', '' })
      wake(1)
      return 'ready'
    end
  end
  emit(id, w[1], 'cancelled', tonumber(w[2]) or 0, '')
  redis.call('HSET', jk, 'state', 'cancelled', 'finished_at', now)
  redis.call('SREM', K_OUT, id)
  release_dedup(jk, id)
  if w[3] then child_ended(id, w[3], w[6], 'cancelled', '', now) end
  retain(jk, id, K_CANC, now)
  return 'cancelled'
end

-- Moves scheduled jobs whose time has come into the backlog.
local function promote_due(now, limit)
  local ids = redis.call('ZRANGEBYSCORE', K_SCHED, '-inf', now, 'LIMIT', 0, limit)
  local moved = 0
  for _, id in ipairs(ids) do
    redis.call('ZREM', K_SCHED, id)
    local jk = job_key(id)
    local f, kind = read_job(jk, 'priority', 'state')
    if not f then
      quarantine(id, now, kind)
    elseif f[2] then
      local prio = num_field(f[1] or 0, -PRIORITY_MAX, PRIORITY_MAX)
      if prio == nil then
        corrupt(jk, id, now, 'priority', f[1])
      else
        make_ready(id, prio, false)
        moved = moved + 1
      end
    end
  end
  if moved > 0 then wake(moved) end
  return moved
end

-- Returns jobs whose lease ran out to the front of the backlog, or to the dead
-- set when that was their last attempt (attempts are counted at reserve, so a job
-- that kills every worker that touches it still ends dead).
local function recover_expired(now, limit)
  local ids = redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', now, 'LIMIT', 0, limit)
  local back = 0
  local expired_failed, expired_dead = 0, 0
  for _, id in ipairs(ids) do
    redis.call('ZREM', K_ACTIVE, id)
    local jk = job_key(id)
    local f, kind = read_job(jk, 'attempts', 'max_attempts', 'priority', 'cancel', 'state',
      'notify')
    local attempts, max_attempts, prio
    if f then
      attempts = num_field(f[1] or 0, 0, 1e15)
      max_attempts = num_field(f[2] or 1, 1, 1e15)
      prio = num_field(f[3] or 0, -PRIORITY_MAX, PRIORITY_MAX)
    end
    if not f then
      quarantine(id, now, kind)
    elseif not f[5] then
      redis.call('SREM', K_OUT, id)
    elseif f[4] == '1' then
      to_cancelled(jk, id, now)
    elseif attempts == nil then
      corrupt(jk, id, now, 'attempts', f[1])
    elseif max_attempts == nil then
      corrupt(jk, id, now, 'max_attempts', f[2])
    elseif prio == nil then
      corrupt(jk, id, now, 'priority', f[3])
    else
      local reason = 'lease expired during attempt ' .. attempts .. ' of ' .. max_attempts
        .. ': the worker died, was killed or stopped heartbeating'
      record_failure(jk, attempts, now, reason)
      expired_failed = expired_failed + 1
      if attempts >= max_attempts then
        expired_dead = expired_dead + 1
        emit(id, f[6], 'dead', attempts, reason)
        to_dead(jk, id, now, reason)
      else
        emit(id, f[6], 'failed', attempts, reason)
        make_ready(id, prio, true, { 'last_error', reason })
        back = back + 1
      end
    end
  end
  if back > 0 then wake(back) end
  if expired_failed > 0 then
    count_minute(now, { failed = expired_failed, dead = expired_dead })
  end
  return #ids
end

str_arg(PREFIX, 'prefix', 1, 2 * MAX_ID)
