-- lib_enqueue.lua: what enqueue.lua and flow.lua share, after lib.lua in
-- those two scripts only (scripts.rs).

-- The job options every enqueue takes, as a group of 12 arguments from
-- ARGV[b] (enqueue.lua documents them), checked; `entry` is its number
-- in the call (for the error).
local function check_job_args(b, entry, timeout_ms, timeout_retry)
  str_arg(ARGV[b], 'id', 1, MAX_ID, entry)
  int_arg(ARGV[b + 2], 'priority', -PRIORITY_MAX, PRIORITY_MAX, entry)
  int_arg(ARGV[b + 3], 'delay_ms', 0, MAX_DELAY_MS, entry)
  int_arg(ARGV[b + 4], 'max_attempts', 1, MAX_ATTEMPTS, entry)
  local backoff = int_arg(ARGV[b + 5], 'backoff_ms', 0, MAX_BACKOFF_MS, entry)
  int_arg(ARGV[b + 6], 'backoff_max_ms', backoff, MAX_BACKOFF_MS, entry)
  int_arg(ARGV[b + 7], 'lease_ms', MIN_LEASE_MS, MAX_LEASE_MS, entry)
  int_arg(ARGV[b + 8], 'retention_s', 0, MAX_RETENTION_S, entry)
  str_arg(ARGV[b + 9], 'dedup_key', 0, MAX_ID, entry)
  int_arg(timeout_ms, 'timeout_ms', 0, MAX_TIMEOUT_MS, entry)
  if not TIMEOUT_RETRY[timeout_retry] then
    bad_arg('timeout_retry', timeout_retry, "must be '', '0' or '1'", entry)
  end
end

-- A new job's hash fields from its group of arguments at ARGV[b]. The
-- dedup key and the time-limit options are stored only when set, so a job
-- hash carries no field it does not use (every byte written here is also
-- written to the AOF and to each replica).
local function job_fields(queue, b, now, run_at, timeout_ms, timeout_retry)
  local fields = {
    'id', ARGV[b], 'queue', queue, 'payload', ARGV[b + 1], 'priority', text(decimal(ARGV[b + 2])),
    'attempts', '0', 'max_attempts', ARGV[b + 4], 'backoff_ms', ARGV[b + 5],
    'backoff_max_ms', ARGV[b + 6], 'lease_ms', ARGV[b + 7],
    'retention_s', ARGV[b + 8],
    'enqueued_at', text(now), 'run_at', text(run_at) }
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
