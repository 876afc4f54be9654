-- cancel.lua: cancels a job.
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] id
-- Returns: 'cancelled' (it was waiting and is now cancelled), 'requested' (it is
--       running: the flag reaches its worker at the next heartbeat),
--       'finished:<state>' when it had already ended, or 'not_found'.

argc(2)
local id = str_arg(ARGV[2], 'id', 1, MAX_ID)
local jk = job_key(id)
guard_keys()
local now = now_ms()
local f, kind = read_job(jk, 'state')
if not f then
  quarantine(id, now, kind)
  return 'finished:dead'
end
local state = f[1]
if not state then return 'not_found' end
if state == 'ready' then
  redis.call('ZREM', K_READY, id)
  redis.call('ZREM', K_PARKED, id)
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
