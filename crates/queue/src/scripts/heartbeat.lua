-- heartbeat.lua: extends a lease, optionally storing progress.
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] id, [3] token, [4] extension ms (0: the job's lease_ms),
--       [5] progress ('' leaves it unchanged)
-- Returns: { 'ok', deadline, cancel_requested (0|1) }, { 'lease_lost', state }
--       or { 'not_found' }.
-- Invariant: a lease is valid while its token is the job's and the job is active;
--       one past its deadline stays valid until a sweep reclaims the job.

argc(5)
local id = str_arg(ARGV[2], 'id', 1, MAX_ID)
local token = str_arg(ARGV[3], 'token', 1, 2 * MAX_ID)
local ext = int_arg(ARGV[4], 'extension_ms', 0, MAX_LEASE_MS)
local jk = job_key(id)
local f = read_job(jk, 'state', 'lease', 'lease_ms', 'cancel', 'notify', 'attempts')
if not f then return { 'lease_lost', 'corrupt' } end
if not f[1] then return { 'not_found' } end
if f[1] ~= 'active' or f[2] ~= token then return { 'lease_lost', f[1] } end
if ext <= 0 then ext = num_field(f[3], MIN_LEASE_MS, MAX_LEASE_MS) or 30000 end
-- A beat writes the job's hash and `active` only: those are the keys it
-- checks (one TYPE, where every queue key would cost twelve commands on
-- each beat of each job).
guard_key(K_ACTIVE, 'zset')
local deadline = now_ms() + ext
keep_working_when_full()
-- The deadline is `active`'s score, and nothing else: a beat without
-- progress writes that one score.
if ARGV[5] ~= '' then
  redis.call('HSET', jk, 'progress', ARGV[5])
  emit(id, f[5], 'progress', tonumber(f[6]) or 0, ARGV[5])
end
redis.call('ZADD', K_ACTIVE, deadline, id)
local cancel = 0
if f[4] == '1' then cancel = 1 end
return { 'ok', deadline, cancel }
