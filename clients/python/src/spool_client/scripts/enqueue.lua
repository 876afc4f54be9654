-- enqueue.lua: adds jobs to a queue, atomically, a batch per call.
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] queue name, [3] n, then n groups of 12:
--       id, payload, priority, delay_ms, max_attempts, backoff_ms,
--       backoff_max_ms, lease_ms, retention_s, dedup_key ('' for none),
--       timeout_ms (0: the worker's limit), timeout_retry ('', '0' or '1';
--       '': the worker's choice). Groups of 10 (without the last two, as
--       producers written before the time-limit options send) are accepted.
-- Returns: the n ids in input order. An id that already exists, or a dedup key
--       still held by a live job, returns that job's id and changes nothing, so a
--       producer may retry an enqueue whose reply it lost.
--       Every argument is checked before anything is written (ranges in
--       docs/protocol.md); one bad entry refuses the whole call.
-- Invariant: a job is either in `ready` and `outstanding` or in `scheduled`.

local queue = str_arg(ARGV[2], 'queue', 1, MAX_ID)
local n = int_arg(ARGV[3], 'n', 0, MAX_BATCH)
local STRIDE = 12
if n > 0 and #ARGV == 3 + n * 10 then STRIDE = 10 end
argc(3 + n * STRIDE)
-- The time-limit options of entry `b` ('0' and '': unset).
local function limits(b)
  if STRIDE == 10 then return '0', '' end
  return ARGV[b + 10], ARGV[b + 11]
end
for i = 0, n - 1 do
  local b = 4 + i * STRIDE
  local at = ' (entry ' .. (i + 1) .. ')'
  str_arg(ARGV[b], 'id' .. at, 1, MAX_ID)
  int_arg(ARGV[b + 2], 'priority' .. at, -PRIORITY_MAX, PRIORITY_MAX)
  int_arg(ARGV[b + 3], 'delay_ms' .. at, 0, MAX_DELAY_MS)
  int_arg(ARGV[b + 4], 'max_attempts' .. at, 1, MAX_ATTEMPTS)
  local backoff = int_arg(ARGV[b + 5], 'backoff_ms' .. at, 0, MAX_BACKOFF_MS)
  int_arg(ARGV[b + 6], 'backoff_max_ms' .. at, backoff, MAX_BACKOFF_MS)
  int_arg(ARGV[b + 7], 'lease_ms' .. at, MIN_LEASE_MS, MAX_LEASE_MS)
  int_arg(ARGV[b + 8], 'retention_s' .. at, 0, MAX_RETENTION_S)
  str_arg(ARGV[b + 9], 'dedup_key' .. at, 0, MAX_ID)
  local timeout_ms, timeout_retry = limits(b)
  int_arg(timeout_ms, 'timeout_ms' .. at, 0, MAX_TIMEOUT_MS)
  if not TIMEOUT_RETRY[timeout_retry] then
    bad_arg('timeout_retry' .. at, timeout_retry, "must be '', '0' or '1'")
  end
end

guard_keys()
local now = now_ms()
local out = {}
local woken = 0

for i = 0, n - 1 do
  local b = 4 + i * STRIDE
  local id, payload = ARGV[b], ARGV[b + 1]
  local priority, delay = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local dedup = ARGV[b + 9]
  local jk = job_key(id)
  local existing = nil
  if redis.call('EXISTS', jk) == 1 then
    existing = id
  elseif dedup ~= '' then
    local dk = PREFIX .. 'dedup:' .. dedup
    local held = redis.pcall('GET', dk)
    if type(held) == 'table' then
      -- Not a string: not a dedup key spool wrote; take it over.
      redis.call('DEL', dk)
      held = false
    end
    if held and redis.call('EXISTS', job_key(held)) == 1 then
      existing = held
    else
      redis.call('SET', dk, id)
    end
  end
  if existing then
    out[#out + 1] = existing
  else
    local run_at = now + delay
    local fields = {
      'id', id, 'queue', queue, 'payload', payload, 'priority', priority,
      'attempts', 0, 'max_attempts', ARGV[b + 4], 'backoff_ms', ARGV[b + 5],
      'backoff_max_ms', ARGV[b + 6], 'lease_ms', ARGV[b + 7],
      'retention_s', ARGV[b + 8],
      'enqueued_at', now, 'run_at', run_at }
    -- The dedup key and the time-limit options are stored only when set,
    -- so a job hash carries no field it does not use (every byte written
    -- here is also written to the AOF and to each replica).
    if dedup ~= '' then
      fields[#fields + 1] = 'dedup'
      fields[#fields + 1] = dedup
    end
    local timeout_ms, timeout_retry = limits(b)
    if tonumber(timeout_ms) > 0 then
      fields[#fields + 1] = 'timeout_ms'
      fields[#fields + 1] = timeout_ms
    end
    if timeout_retry ~= '' then
      fields[#fields + 1] = 'timeout_retry'
      fields[#fields + 1] = timeout_retry
    end
    if delay > 0 then
      redis.call('HSET', jk, 'state', 'scheduled', unpack(fields))
      redis.call('ZADD', K_SCHED, run_at, id)
    else
      make_ready(id, priority, false, fields)
      woken = woken + 1
    end
    out[#out + 1] = id
  end
end

if woken > 0 then wake(woken) end
return out
