-- pause.lua: pauses or resumes a queue (its intake of work, not its producers).
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] action ('pause', 'resume' or 'status'),
--       [3] how many backlog jobs to move in this call (1..=10000)
-- Returns: { paused (0 or 1), parked, ready, active, paused_at_ms (0: not paused) }
--       after the call. Pausing sets the flag and moves the backlog into
--       `parked` (best first, order kept); call again while `ready` > 0.
--       Resuming clears the flag and moves it back; call again while
--       `parked` > 0. Reserve and sweep finish a move a caller left.
-- Invariant: while paused nothing is leased and enqueues are accepted (into
--       `parked`); running jobs finish and settle as usual. `outstanding` =
--       `ready` ∪ `active` holds throughout.

argc(3)
local action = ARGV[2]
if action ~= 'pause' and action ~= 'resume' and action ~= 'status' then
  bad_arg('action', action, 'must be pause, resume or status')
end
local limit = int_arg(ARGV[3], 'limit', 1, MAX_BATCH)
guard_keys()
if action == 'pause' then
  redis.call('SET', K_PAUSED, now_ms(), 'NX')
  paused_now = true
elseif action == 'resume' then
  redis.call('DEL', K_PAUSED)
  paused_now = false
end
if action ~= 'status' then follow_pause(limit) end
return { is_paused() and 1 or 0, redis.call('ZCARD', K_PARKED), redis.call('ZCARD', K_READY),
  redis.call('ZCARD', K_ACTIVE), tonumber(redis.call('GET', K_PAUSED) or '0') }
