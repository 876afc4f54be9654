-- watch.lua: a producer is about to wait for a job's end over the events
-- stream (lib.lua's `emit`).
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] id
-- Returns: { state, last event id, progress }: state '' when there is no
--       such job, progress '' when it has none; for a job that has not ended,
--       its hash gets notify=1 first, so each of its events from now on is
--       written to the stream, after the id returned (read from there with
--       XREAD). The progress spares a waiter a second read to start from.

argc(2)
local id = str_arg(ARGV[2], 'id', 1, MAX_ID)
local jk = job_key(id)
guard_keys()
local f = read_job(jk, 'state', 'progress')
local state = (f and f[1]) or ''
local progress = (f and f[2]) or ''
if state ~= '' and state ~= 'completed' and state ~= 'dead' and state ~= 'cancelled' then
  redis.call('HSET', jk, 'notify', '1')
end
local last = redis.call('XREVRANGE', K_EVENTS, '+', '-', 'COUNT', 1)
local last_id = '0-0'
if last[1] then last_id = last[1][1] end
return { state, last_id, progress }
