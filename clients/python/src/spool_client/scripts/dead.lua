-- dead.lua: retries or purges dead jobs.
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] action (retry | purge), [3] limit, then ids (none: the
--       oldest `limit` dead jobs)
-- Returns: the number of jobs retried or purged.
-- Invariant: a retried job starts over with attempts 0 and is outstanding again.

local action = ARGV[2]
if action ~= 'retry' and action ~= 'purge' then bad_arg('action', action, 'must be retry or purge') end
local limit = int_arg(ARGV[3], 'limit', 1, MAX_BATCH)
for i = 4, #ARGV do str_arg(ARGV[i], 'id', 1, MAX_ID) end
guard_keys()
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
      redis.call('DEL', jk, PREFIX .. 'log:' .. id)
      done = done + 1
    else
      local f = read_job(jk, 'state', 'priority', 'dedup')
      if f and f[1] then
        -- Its dedup key may have been taken by a newer job meanwhile: then
        -- this one comes back without it, so one key never names two live jobs.
        local fields = { 'attempts', 0, 'finished_at', '', 'settled_by', '', 'cancel', '' }
        local d = f[3]
        if d and d ~= '' then
          local dk = PREFIX .. 'dedup:' .. d
          local held = redis.pcall('GET', dk)
          if type(held) == 'string' and held ~= id and redis.call('EXISTS', job_key(held)) == 1 then
            fields[#fields + 1] = 'dedup'
            fields[#fields + 1] = ''
          else
            redis.call('SET', dk, id)
          end
        end
        make_ready(id, num_field(f[2] or 0, -PRIORITY_MAX, PRIORITY_MAX) or 0, false, fields)
        done = done + 1
      else
        -- Not a hash (or gone): keep it listed as dead.
        redis.call('ZADD', K_DEAD, now_ms(), id)
      end
    end
  end
end
if action == 'retry' and done > 0 then wake(done) end
return done
