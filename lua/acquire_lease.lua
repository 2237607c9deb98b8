-- acquire_lease: claim a run for one owner, for a while, with a fencing token.
-- KEYS[1] the run's record hash   KEYS[2] the run's steps sorted set
-- KEYS[3] the run's snapshot-key prefix   KEYS[4] the run's meta hash   KEYS[5] its run-index bucket
-- ARGV[1] owner   ARGV[2] lease ttl in ms   ARGV[3] '1' if the run must already exist
-- ARGV[4] the store's ttl in ms ('0' = none)   ARGV[5] the run id
-- Every key is declared or derived from KEYS[3] and the run's own sorted set: one slot.
-- Returns {token, until, cancel}: the fencing token, the lease's deadline (ms, server clock) and
-- whether someone asked to cancel the run (1 or 0); or
-- {'held', owner, until} while another owner holds a live lease (nothing written).
-- Checks first, no write before them: a run that must exist and has no steps set fails with
-- RUNNOTFOUND. Then, atomically: the same owner holding a live lease extends it and keeps its
-- token (so a retried call gets the same lease); otherwise the token is the record's fencing
-- counter plus one, or the server's clock in microseconds if that is larger, so it keeps growing
-- even across a run deleted (or expired) and started again. A record made for a run that does not
-- exist yet (a start) expires with the lease, until the run's first save gives it the run's
-- deadline; an existing run's record shares the run's deadline, and the run's keys are kept at
-- least as long as the lease (grant_lease and keep_for_lease in _common.lua). A user without +time
-- fails with NOPERM, and over maxmemory (noeviction) it fails with OOM, before any write.
local record, steps, snapshot_prefix, meta, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local owner, ttl = ARGV[1], tonumber(ARGV[2])

local run_exists = redis.call('EXISTS', steps) == 1
if ARGV[3] == '1' and not run_exists then
  return redis.error_reply('RUNNOTFOUND the run has no checkpoint')
end
local now, err = server_time()
if err then
  return err
end
local held = redis.call('HMGET', record, 'owner', 'token', 'until', 'cancel')
local live = held[1] and tonumber(held[3]) > now
if live and held[1] ~= owner then
  return {'held', held[1], held[3]}
end

refuse_if_out_of_memory(steps)
local keep = {snapshot_prefix, meta, index, ARGV[5], tonumber(ARGV[4])}
local token, expires = grant_lease(record, steps, owner, ttl, now, held, keep)
return {token, int(expires), held[4] and 1 or 0}
