-- sweep.lua: the periodic housekeeping any worker may run; cheap and idempotent.
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] limit per step
-- Returns: { promoted, recovered, pruned, lateness_ms, next_due_in_ms }:
--       scheduled jobs made ready, expired leases handed back (or killed),
--       retention index entries dropped, how late the oldest due job left in
--       `scheduled` is (0: none; more were due than `limit`), and when the
--       next scheduled job is due from now (-1: nothing scheduled).
--
-- Run by every worker on its sweep interval, and by the promoter
-- (`spoolctl promote`), which keeps a fleet at zero from stranding due work:
-- the keys KEDA reads see a delayed or retried job once it is promoted.

argc(2)
local limit = int_arg(ARGV[2], 'limit', 1, 100000)
guard_keys()
keep_working_when_full()
local now = now_ms()
local promoted = promote_due(now, limit)
local recovered = recover_expired(now, limit)
follow_pause(limit)
local pruned = redis.call('ZREMRANGEBYSCORE', K_DONE, '-inf', now)
  + redis.call('ZREMRANGEBYSCORE', K_CANC, '-inf', now)
local lateness, next_due = 0, -1
local first = redis.call('ZRANGE', K_SCHED, 0, 0, 'WITHSCORES')
if first[2] then
  local at = tonumber(first[2]) or now
  if at <= now then lateness = now - at else next_due = at - now end
  if at <= now then next_due = 0 end
end
return { promoted, recovered, pruned, math.floor(lateness), math.floor(next_due) }
