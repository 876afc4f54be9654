-- log.lua: appends lines to a job's log (a handler's `ctx.log`, FFmpeg's
-- warnings), kept capped and expiring with the job.
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] id, then 1..=200 lines (each cut to 2048 bytes;
--       spool-queue sends JSON objects of at most 1,000 bytes of message)
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
for i = 3, #ARGV do lines[#lines + 1] = string.sub(ARGV[i], 1, MAX_LOG_BYTES) end
local lk = PREFIX .. 'log:' .. id
-- Tells lib.lua's `retain` that the job has a log to expire or delete.
redis.call('HSET', jk, 'logged', '1')
redis.call('RPUSH', lk, unpack(lines))
redis.call('LTRIM', lk, -MAX_LOG_LINES, -1)
local ttl = redis.call('PTTL', jk)
if ttl > 0 then redis.call('PEXPIRE', lk, ttl) end
return redis.call('LLEN', lk)
