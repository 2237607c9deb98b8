-- renew_lease: extend a live lease by its ttl from now.
-- KEYS[1] the run's record hash   KEYS[2] the run's steps sorted set (same slot: same run)
-- ARGV[1] the lease's fencing token   ARGV[2] lease ttl in ms
-- Returns {the new deadline (ms, server clock), 1 if someone asked to cancel the run else 0}. Checks first, no write before them: a lease that
-- expired, was taken over or whose run was deleted fails with LEASELOST. Then its deadline moves
-- (a retry after a lost reply moves it again, to about the same time). The record of a run not
-- saved yet follows the lease's deadline. NOPERM (no +time) and OOM fail before any write.
local record, steps = KEYS[1], KEYS[2]
local now, err = server_time()
if err then
  return err
end
local held = redis.call('HMGET', record, 'owner', 'token', 'until', 'cancel')
if not held[1] or held[2] ~= ARGV[1] or tonumber(held[3]) <= now then
  return redis.error_reply('LEASELOST the lease on this run was lost')
end
local expires = now + tonumber(ARGV[2])
refuse_if_out_of_memory(steps)
redis.call('HSET', record, 'until', int(expires))
if redis.call('EXISTS', steps) == 0 then
  local record_expires = redis.call('PEXPIRETIME', record)
  if record_expires >= 0 and record_expires < expires then
    redis.call('PEXPIREAT', record, int(expires))
  end
end
return {int(expires), held[4] and 1 or 0}
