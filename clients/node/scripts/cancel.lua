-- cancel.lua: cancels a job.
--
-- KEYS: the common nine (lib.lua).
-- ARGV: [1] prefix, [2] id
-- Returns: 'cancelled' (it was waiting and is now cancelled), 'requested' (it is
--       running: the flag reaches its worker at the next heartbeat),
--       'finished:<state>' when it had already ended, or 'not_found'.
--       A parent waiting for its children is cancelled with every live child
--       (nested flows too); a child's cancel counts, for its parent, as the
--       child's failure (lib.lua, "Flows").

argc(2)
local id = str_arg(ARGV[2], 'id', 1, MAX_ID)
guard_keys()
return cancel_job(id, now_ms(), false)
