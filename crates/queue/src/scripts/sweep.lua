-- sweep.lua: the periodic housekeeping any worker may run; cheap and idempotent.
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] limit per step
-- Returns: { promoted, recovered, pruned, lateness_ms, next_due_in_ms }:
--       scheduled jobs made ready, expired leases handed back (or killed),
--       retained jobs deleted with their index entries (up to 5 x limit per
--       index), how late the oldest due job left in
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
-- Deletes the jobs (and their logs) whose retention has passed, up to
-- `limit` per index: a job still in the state its index says (an id reused
-- after a deletion by hand is left alone), then drops the entries. Keys are
-- deleted in batches, so expiry costs a command per batch, not per job.
local function prune(index_key, state, max)
  local ids = redis.call('ZRANGEBYSCORE', index_key, '-inf', now, 'LIMIT', 0, max)
  if #ids == 0 then return 0 end
  local dels = {}
  for _, id in ipairs(ids) do
    local jk = job_key(id)
    local f = read_job(jk, 'state', 'kids')
    if f and f[1] == state then
      dels[#dels + 1] = jk
      dels[#dels + 1] = PREFIX .. 'log:' .. id
      if f[2] then
        -- A flow's parent: its children list, results and failures too.
        local ck, rk, fk = flow_keys(id)
        dels[#dels + 1] = ck
        dels[#dels + 1] = rk
        dels[#dels + 1] = fk
      end
    end
  end
  for i = 1, #dels, 1000 do
    redis.call('DEL', unpack(dels, i, math.min(i + 999, #dels)))
  end
  batched('ZREM', index_key, ids)
  return #ids
end
local pruned = prune(K_DONE, 'completed', limit * 5) + prune(K_CANC, 'cancelled', limit * 5)
local lateness, next_due = 0, -1
local first = redis.call('ZRANGE', K_SCHED, 0, 0, 'WITHSCORES')
if first[2] then
  local at = tonumber(first[2]) or now
  if at <= now then lateness = now - at else next_due = at - now end
  if at <= now then next_due = 0 end
end
return { promoted, recovered, pruned, math.floor(lateness), math.floor(next_due) }
