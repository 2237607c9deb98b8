-- cancel: stop a run (see Checkpointer.cancel).
-- KEYS[1] .. KEYS[5] the run's bucket queue keys: queue, leased, paused, dead, blocked
-- KEYS[6] the run's record hash   KEYS[7] the run's steps sorted set (all one slot: the run's tag)
-- ARGV[1] workflow id   ARGV[2] run id   ARGV[3] the bucket's event channel
-- Returns the run's queue state. Checks first, no write before them: no steps fails with
-- RUNNOTFOUND; a completed or cancelled run returns that state (so a retry answers the same);
-- NOPERM and OOM fail before any write. Then: a running run (claimed, or leased live by an inline
-- runner) gets the 'cancel' flag (the server's clock in ms, the first request's kept: what
-- save.lua, renew_lease.lua and acquire_lease.lua read) and 'running' is returned (its worker
-- stops at its next checkpoint or renewal, and finish or a takeover ends it 'cancelled'); any
-- other run gets the flag too, leaves every index of its bucket and ends 'cancelled' (event
-- cancelled), its pending answer dropped.
local record, steps = KEYS[6], KEYS[7]
local run_id = ARGV[2]

if redis.call('EXISTS', steps) == 0 then
  return redis.error_reply('RUNNOTFOUND the run has no checkpoint')
end
local f = redis.call('HMGET', record, 'state', 'owner', 'until')
if f[1] == 'completed' or f[1] == 'cancelled' then
  return f[1]
end
local now, err = server_time()
if err then
  return err
end
refuse_if_out_of_memory(steps)
if f[1] == 'running' or (f[2] and tonumber(f[3]) > now) then
  redis.call('HSETNX', record, 'cancel', int(now))
  follow_run_deadline(record, steps)
  return 'running'
end
unindex(run_id)
redis.call('HSET', record, 'state', 'cancelled')
redis.call('HSETNX', record, 'cancel', int(now))
redis.call('HDEL', record, 'answer', 'answer_step', 'ready')
follow_run_deadline(record, steps)
publish(ARGV[3], queue_event('cancelled', ARGV[1], run_id, '', now))
return 'cancelled'
