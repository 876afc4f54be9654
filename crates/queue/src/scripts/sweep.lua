-- sweep.lua: the periodic housekeeping any worker may run; cheap and idempotent.
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] limit per step
-- Returns: { promoted, recovered, pruned }: scheduled jobs made ready, expired
--       leases handed back (or killed), retention index entries dropped.

argc(2)
local limit = int_arg(ARGV[2], 'limit', 1, 100000)
keep_working_when_full()
local now = now_ms()
local promoted = promote_due(now, limit)
local recovered = recover_expired(now, limit)
follow_pause(limit)
local pruned = redis.call('ZREMRANGEBYSCORE', K_DONE, '-inf', now)
  + redis.call('ZREMRANGEBYSCORE', K_CANC, '-inf', now)
return { promoted, recovered, pruned }
