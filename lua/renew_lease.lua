-- renew_lease: extend a live lease by its ttl from now, and keep its run alive as long.
-- KEYS[1] the run's record hash   KEYS[2] the run's steps sorted set
-- KEYS[3] the run's snapshot-key prefix   KEYS[4] the run's meta hash   KEYS[5] its run-index bucket
-- ARGV[1] the lease's fencing token   ARGV[2] lease ttl in ms   ARGV[3] the store's ttl in ms
-- ('0' = none)   ARGV[4] the run id
-- Every key is declared or derived from KEYS[3] and the run's own sorted set: one slot.
-- Returns {the new deadline (ms, server clock), 1 if someone asked to cancel the run else 0}.
-- Checks first, no write before them: a lease that expired, was taken over or whose run was
-- deleted fails with LEASELOST. Then its deadline moves (a retry after a lost reply moves it
-- again, to about the same time), and the run's keys never expire while the lease is live: with
-- the rules of keep_for_lease (_common.lua), all keys of the run keep sharing one deadline, moved
-- only when it would come too soon (O(1) otherwise). The record of a run not saved yet follows
-- the lease's deadline. NOPERM (no +time) and OOM fail before any write.
local record, steps, snapshot_prefix, meta, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local lease_ttl, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local now, err = server_time()
if err then
  return err
end
local held = redis.call('HMGET', record, 'owner', 'token', 'until', 'cancel')
if not held[1] or held[2] ~= ARGV[1] or tonumber(held[3]) <= now then
  return redis.error_reply('LEASELOST the lease on this run was lost')
end
local expires = now + lease_ttl
refuse_if_out_of_memory(steps)
redis.call('HSET', record, 'until', int(expires))
if redis.call('EXISTS', steps) == 0 then
  local record_expires = redis.call('PEXPIRETIME', record)
  if record_expires >= 0 and record_expires < expires then
    redis.call('PEXPIREAT', record, int(expires))
  end
else
  keep_for_lease(steps, snapshot_prefix, meta, record, index, ARGV[4], now, ttl, expires, lease_ttl)
end
return {int(expires), held[4] and 1 or 0}
