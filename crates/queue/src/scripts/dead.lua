-- dead.lua: retries or purges dead jobs.
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] action (retry | purge), [3] limit, then ids (none: the
--       oldest `limit` dead jobs)
-- Returns: the number of jobs retried or purged.
-- Invariant: a retried job starts over with attempts 0 and is outstanding again.
--       Retrying a flow's child, or a parent a child failed, revives the flow
--       (lib.lua's `revive`).

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
local now = now_ms()
for _, id in ipairs(ids) do
  if redis.call('ZREM', K_DEAD, id) == 1 then
    local jk = job_key(id)
    if action == 'purge' then
      redis.call('DEL', unpack(job_keys(jk, id, '1', '1')))
      done = done + 1
    else
      local f = read_job(jk, 'state', 'priority', 'dedup', 'kids', 'failed_by', 'parent',
        'parent_queue')
      if f and f[1] then
        -- A parent that a child failed comes back waiting for its children
        -- (lib.lua's `revive`); any other job runs again.
        if not (f[4] and f[5] and f[5] ~= '' and revive(id, now)) then
          rerun(id, f[2], f[3])
        end
        -- Its parent learns it: a waiting one counts it pending again; a
        -- dead one that a child failed is revived with all its children,
        -- and so on up a nested flow.
        -- `cq` is the child's queue; a parent's `parent_queue` is set only
        -- when it differs from its child's.
        local child, cq, parent, pq = id, QUEUE_NAME, f[6], f[7]
        while parent do
          local q = (pq and pq ~= '') and pq or cq
          local entry = child
          if q ~= cq then entry = cq .. ' ' .. child end
          local p = in_queue(q, function()
            local r = read_job(job_key(parent), 'state', 'failed_by', 'parent', 'parent_queue')
            if r and r[1] == 'waiting' then
              local _, _, fk = flow_keys(parent)
              redis.call('HDEL', fk, entry)
              return nil
            elseif r and r[1] == 'dead' and r[2] and r[2] ~= '' and revive(parent, now) then
              return r
            end
            return nil
          end)
          if not p then break end
          child, cq, parent, pq = parent, q, p[3], p[4]
        end
        done = done + 1
      else
        -- Not a hash (or gone): keep it listed as dead.
        redis.call('ZADD', K_DEAD, now, id)
      end
    end
  end
end
if action == 'retry' and done > 0 then wake(done) end
return done
