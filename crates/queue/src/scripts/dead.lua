-- dead.lua: retries or purges dead jobs.
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] action (retry | purge), [3] limit, then ids (none: the
--       oldest `limit` dead jobs)
-- Returns: the number of jobs retried or purged.
-- Invariant: a retried job starts over with attempts 0 and is outstanding again.

local action, limit = ARGV[2], tonumber(ARGV[3])
local ids = {}
if #ARGV > 3 then
  for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = redis.call('ZRANGE', K_DEAD, 0, limit - 1)
end
local done = 0
for _, id in ipairs(ids) do
  if redis.call('ZREM', K_DEAD, id) == 1 then
    local jk = job_key(id)
    if action == 'purge' then
      redis.call('DEL', jk)
      done = done + 1
    elseif redis.call('EXISTS', jk) == 1 then
      make_ready(id, tonumber(redis.call('HGET', jk, 'priority')) or 0, false,
        { 'attempts', 0, 'finished_at', '', 'settled_by', '', 'cancel', '' })
      done = done + 1
    end
  end
end
if action == 'retry' and done > 0 then wake(done) end
return done
