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
  local timeout_ms, timeout_retry = limits(b)
  check_job_args(b, i + 1, timeout_ms, timeout_retry)
end

guard_keys()
local now = now_ms()
local out = {}
local woken = 0
-- The ready jobs' index updates, sent after the loop (lib.lua's
-- `ready_batch`).
local batch = ready_batch(n)

for i = 0, n - 1 do
  local b = 4 + i * STRIDE
  local id = ARGV[b]
  local priority, delay = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local dedup = ARGV[b + 9]
  local jk = job_key(id)
  local existing = nil
  if redis.call('EXISTS', jk) == 1 then
    existing = id
  elseif dedup ~= '' then
    existing = dedup_holder(dedup)
    -- SET takes the key over, whatever it held (a stale claim, damage).
    if not existing then redis.call('SET', PREFIX .. 'dedup:' .. dedup, id) end
  end
  if existing then
    out[#out + 1] = existing
  else
    local run_at = now + delay
    local timeout_ms, timeout_retry = limits(b)
    local fields = job_fields(queue, b, now, run_at, timeout_ms, timeout_retry)
    if delay > 0 then
      redis.call('HSET', jk, 'state', 'scheduled', unpack(fields))
      redis.call('ZADD', K_SCHED, run_at, id)
    else
      make_ready(id, priority, false, fields, batch)
      woken = woken + 1
    end
    out[#out + 1] = id
  end
end

flush_ready(batch)
if woken > 0 then wake(woken) end
return out
