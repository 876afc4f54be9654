-- lib_enqueue.lua: what enqueue.lua and flow.lua share, after lib.lua in
-- those two scripts only (scripts.rs).

-- The job options every enqueue takes, as a group of 12 arguments from
-- ARGV[b] (enqueue.lua documents them), checked; `at` names the entry.
local function check_job_args(b, at, timeout_ms, timeout_retry)
  str_arg(ARGV[b], 'id' .. at, 1, MAX_ID)
  int_arg(ARGV[b + 2], 'priority' .. at, -PRIORITY_MAX, PRIORITY_MAX)
  int_arg(ARGV[b + 3], 'delay_ms' .. at, 0, MAX_DELAY_MS)
  int_arg(ARGV[b + 4], 'max_attempts' .. at, 1, MAX_ATTEMPTS)
  local backoff = int_arg(ARGV[b + 5], 'backoff_ms' .. at, 0, MAX_BACKOFF_MS)
  int_arg(ARGV[b + 6], 'backoff_max_ms' .. at, backoff, MAX_BACKOFF_MS)
  int_arg(ARGV[b + 7], 'lease_ms' .. at, MIN_LEASE_MS, MAX_LEASE_MS)
  int_arg(ARGV[b + 8], 'retention_s' .. at, 0, MAX_RETENTION_S)
  str_arg(ARGV[b + 9], 'dedup_key' .. at, 0, MAX_ID)
  int_arg(timeout_ms, 'timeout_ms' .. at, 0, MAX_TIMEOUT_MS)
  if not TIMEOUT_RETRY[timeout_retry] then
    bad_arg('timeout_retry' .. at, timeout_retry, "must be '', '0' or '1'")
  end
end

-- A new job's hash fields from its group of arguments at ARGV[b]. The
-- dedup key and the time-limit options are stored only when set, so a job
-- hash carries no field it does not use (every byte written here is also
-- written to the AOF and to each replica).
local function job_fields(queue, b, now, run_at, timeout_ms, timeout_retry)
  local fields = {
    'id', ARGV[b], 'queue', queue, 'payload', ARGV[b + 1], 'priority', tonumber(ARGV[b + 2]),
    'attempts', 0, 'max_attempts', ARGV[b + 4], 'backoff_ms', ARGV[b + 5],
    'backoff_max_ms', ARGV[b + 6], 'lease_ms', ARGV[b + 7],
    'retention_s', ARGV[b + 8],
    'enqueued_at', now, 'run_at', run_at }
  if ARGV[b + 9] ~= '' then
    fields[#fields + 1] = 'dedup'
    fields[#fields + 1] = ARGV[b + 9]
  end
  if tonumber(timeout_ms) > 0 then
    fields[#fields + 1] = 'timeout_ms'
    fields[#fields + 1] = timeout_ms
  end
  if timeout_retry ~= '' then
    fields[#fields + 1] = 'timeout_retry'
    fields[#fields + 1] = timeout_retry
  end
  return fields
end
