-- heartbeat.lua: extends leases, optionally storing progress, a batch per
-- call (a worker beats every job of its that is due in one call: a beat's
-- cost is mostly the request, docs/performance.md).
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] extension ms (0: each job's own lease_ms), [3] n,
--       then n groups of 3: id, token, progress ('' leaves it unchanged)
-- Returns: for each entry, in order, { 'ok', deadline, cancel_requested (0|1) },
--       { 'lease_lost', state } or { 'not_found' }.
-- Invariant: a lease is valid while its token is the job's and the job is active;
--       one past its deadline stays valid until a sweep reclaims the job.

local STRIDE = 3
local ext_all = int_arg(ARGV[2], 'extension_ms', 0, MAX_LEASE_MS)
local n = int_arg(ARGV[3], 'n', 0, MAX_BATCH)
argc(3 + n * STRIDE)
for i = 0, n - 1 do
  local b = 4 + i * STRIDE
  str_arg(ARGV[b], 'id', 1, MAX_ID, i + 1)
  str_arg(ARGV[b + 1], 'token', 1, 2 * MAX_ID, i + 1)
end
-- A beat writes the jobs' hashes and `active` only: those are the keys it
-- checks (one TYPE, where every queue key would cost twelve commands on
-- each beat).
guard_key(K_ACTIVE, 'zset')
local now = now_ms()
keep_working_when_full()

local out = {}
-- (deadline, id) pairs, sent as one ZADD after the loop (lib.lua's
-- `batched`): the deadline is `active`'s score, and nothing else, so a
-- beat without progress writes that one score.
local beats = {}
for i = 0, n - 1 do
  local b = 4 + i * STRIDE
  local id, token, progress = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local jk = job_key(id)
  local f = read_job(jk, 'state', 'lease', 'lease_ms', 'cancel', 'notify', 'attempts')
  if not f then
    out[i + 1] = { 'lease_lost', 'corrupt' }
  elseif not f[1] then
    out[i + 1] = { 'not_found' }
  elseif f[1] ~= 'active' or f[2] ~= token then
    out[i + 1] = { 'lease_lost', f[1] }
  else
    local ext = ext_all
    if ext <= 0 then ext = num_field(f[3], MIN_LEASE_MS, MAX_LEASE_MS) or 30000 end
    local deadline = now + ext
    if progress ~= '' then
      redis.call('HSET', jk, 'progress', progress)
      emit(id, f[5], 'progress', tonumber(f[6]) or 0, progress)
    end
    beats[#beats + 1] = text(deadline)
    beats[#beats + 1] = id
    local cancel = 0
    if f[4] == '1' then cancel = 1 end
    out[i + 1] = { 'ok', deadline, cancel }
  end
end
batched('ZADD', K_ACTIVE, beats)
return out
