-- log.lua: appends lines to a job's log (a handler's `ctx.log`, FFmpeg's
-- warnings), kept capped and expiring with the job.
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] id, then 1..=200 lines (JSON objects; spool's
--       producers keep each at most 1,100 bytes; a line over 2,048 bytes is
--       replaced by a warning line, never cut into invalid JSON)
-- Returns: the log's length after the call, or 0 when the job is gone (a log
--       never outlives its job, so nothing is written then).
-- Invariant: `<prefix>log:<id>` holds at most the last 200 lines and has the
--       job hash's TTL when the job has one (retained after its end); lib.lua's
--       `retain` and dead.lua's purge delete or expire it with the job.

local MAX_LOG_LINES = 200
local MAX_LOG_BYTES = 2048
if #ARGV < 3 or #ARGV > 2 + MAX_LOG_LINES then
  error({ err = 'ERR spool: expected an id and 1 to ' .. MAX_LOG_LINES .. ' lines, got ' .. (#ARGV - 1) .. ' arguments' })
end
local id = str_arg(ARGV[2], 'id', 1, MAX_ID)
local jk = job_key(id)
if redis.call('EXISTS', jk) == 0 then return 0 end
local lines = {}
for i = 3, #ARGV do
  local line = ARGV[i]
  if #line > MAX_LOG_BYTES then
    -- Cut JSON is broken JSON: a line over the limit (spool's own producers
    -- never send one) is replaced by a valid line saying so.
    line = cjson.encode({ at_ms = now_ms(), level = 'warning',
      message = '(a log line of ' .. #line .. ' bytes was dropped: the limit is ' .. MAX_LOG_BYTES .. ')' })
  end
  lines[#lines + 1] = line
end
local lk = PREFIX .. 'log:' .. id
-- Both keys checked before the first write (no log marked without lines).
local jt, lt = redis.call('TYPE', jk).ok, redis.call('TYPE', lk).ok
if jt ~= 'hash' then damaged_key(jk, 'holds a ' .. jt .. ', not a hash') end
if lt ~= 'none' and lt ~= 'list' then damaged_key(lk, 'holds a ' .. lt .. ', not a list') end
-- Tells lib.lua's `retain` that the job has a log to expire or delete.
redis.call('HSET', jk, 'logged', '1')
redis.call('RPUSH', lk, unpack(lines))
redis.call('LTRIM', lk, -MAX_LOG_LINES, -1)
local ttl = redis.call('PTTL', jk)
if ttl > 0 then redis.call('PEXPIRE', lk, ttl) end
return redis.call('LLEN', lk)
