-- request_cancel: flag a run as cancelled in its record, for its lease holder to see and stop.
-- KEYS[1] the run's record hash   KEYS[2] the run's steps sorted set (same slot: same run)
-- Returns 1 when the run exists (flagged now, or before: a retry keeps the first request's
-- time), 0 when it has no snapshot (nothing written). A user without +time fails with NOPERM,
-- and over maxmemory (noeviction) it fails with OOM, before any write. Then the record holds
-- cancel = the server's clock (ms) and shares the run's deadline. save.lua refuses a save
-- carrying a lease on a flagged run (CANCELLED); acquire_lease and renew_lease report the flag.
local record, steps = KEYS[1], KEYS[2]
if redis.call('EXISTS', steps) == 0 then
  return 0
end
local now, err = server_time()
if err then
  return err
end
local run_expires = redis.call('PEXPIRETIME', steps)
refuse_if_out_of_memory(steps)
redis.call('HSETNX', record, 'cancel', int(now))
if run_expires >= 0 then
  redis.call('PEXPIREAT', record, int(run_expires))
end
return 1
