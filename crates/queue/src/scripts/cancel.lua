-- cancel.lua: cancels a job.
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] id
-- Returns: 'cancelled' (it was waiting and is now cancelled), 'requested' (it is
--       running: the flag reaches its worker at the next heartbeat),
--       'finished:<state>' when it had already ended, or 'not_found'.

local id = ARGV[2]
local jk = job_key(id)
local state = redis.call('HGET', jk, 'state')
if not state then return 'not_found' end
local now = now_ms()
if state == 'ready' then
  redis.call('ZREM', K_READY, id)
  to_cancelled(jk, id, now)
  return 'cancelled'
elseif state == 'scheduled' then
  redis.call('ZREM', K_SCHED, id)
  to_cancelled(jk, id, now)
  return 'cancelled'
elseif state == 'active' then
  redis.call('HSET', jk, 'cancel', '1')
  return 'requested'
end
return 'finished:' .. state
