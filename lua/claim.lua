-- claim: hand the earliest ready run of one slot bucket to a worker, with its lease.
-- KEYS[1] .. KEYS[5] the bucket's queue keys: queue, leased, paused, dead, blocked
-- ARGV[1] owner   ARGV[2] lease ttl in ms   ARGV[3] workflow id   ARGV[4] the bucket's event
-- channel (shard channel, same tag)   ARGV[5] the store's ttl in ms ('0' = none)
-- Each queued run's keys (record, steps, snapshots, meta, run index) are derived from KEYS[1]
-- (run_keys_of): same tag, so one slot. Bounded work: at most 64 expired deadlines and 16 queue entries per call.
-- 1. Takeover: every claimed run whose lease deadline (its score in 'leased') has passed is
--    looked at. A lease renewed since (renew_lease moves only the record) moves its score to the
--    new deadline. Otherwise its worker is gone: a run still 'running' is queued again at now
--    (event lease_expired, and marked so that the next claim reports a takeover), or ends
--    'cancelled' if its cancellation was requested.
-- 2. Claim: among the runs queued with a ready time <= now, in ready-time order, a run whose
--    steps are gone (deleted, expired) leaves the queue; a run whose lease someone holds live
--    (an inline runner) is looked at again when that lease ends; the first free one gets the
--    lease (the same fencing rules as acquire_lease: grant_lease), leaves 'queue' for 'leased'
--    scored by its deadline, and its state becomes 'running' (event claimed, label: the owner).
-- Returns {run_id, token, deadline, attempts, cancel, taken_over, next, now}, or
-- {false, ..., next, now} when nothing is ready; next is when the bucket next needs a claim (its
-- earliest ready time or lease deadline; false: never), now the server clock. NOPERM and OOM fail before any write.
local queue, leased = KEYS[1], KEYS[2]
local owner, ttl, workflow_id, channel = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]

local now, err = server_time()
if err then
  return err
end
refuse_if_out_of_memory(queue)

for _, run_id in ipairs(redis.call('ZRANGE', leased, '-inf', now, 'BYSCORE', 'LIMIT', 0, 64)) do
  local record, steps = run_keys_of(queue, run_id)
  local held = redis.call('HMGET', record, 'owner', 'until', 'state', 'cancel')
  if held[1] and tonumber(held[2]) > now then
    redis.call('ZADD', leased, held[2], run_id)
  else
    redis.call('ZREM', leased, run_id)
    if held[3] == 'running' and redis.call('EXISTS', steps) == 1 then
      if held[4] then
        redis.call('HSET', record, 'state', 'cancelled')
        publish(channel, queue_event('cancelled', workflow_id, run_id, '', now))
      else
        redis.call('HSET', record, 'state', 'queued', 'ready', int(now), 'expired', '1')
        redis.call('ZADD', queue, int(now), run_id)
        publish(channel, queue_event('lease_expired', workflow_id, run_id, held[1] or '', now))
      end
    end
  end
end

for _, run_id in ipairs(redis.call('ZRANGE', queue, '-inf', now, 'BYSCORE', 'LIMIT', 0, 16)) do
  local record, steps, keep = run_keys_of(queue, run_id, tonumber(ARGV[5]))
  if redis.call('EXISTS', steps) == 0 then
    redis.call('ZREM', queue, run_id)
  else
    local held = redis.call('HMGET', record, 'owner', 'token', 'until')
    if held[1] and tonumber(held[3]) > now then
      redis.call('ZADD', queue, held[3], run_id)
    else
      local token, expires = grant_lease(record, steps, owner, ttl, now, held, keep)
      redis.call('ZREM', queue, run_id)
      redis.call('ZADD', leased, int(expires), run_id)
      local f = redis.call('HMGET', record, 'attempts', 'cancel', 'expired')
      redis.call('HSET', record, 'state', 'running')
      redis.call('HDEL', record, 'ready', 'expired')
      publish(channel, queue_event('claimed', workflow_id, run_id, owner, now))
      return {run_id, token, int(expires), f[1] or '0', f[2] and '1' or '0', f[3] or '0',
        next_attention(queue, leased), int(now)}
    end
  end
end
return {false, false, false, false, false, false, next_attention(queue, leased), int(now)}
