-- queue_depth: how many runs of one workflow's slot bucket are in each part of its queue.
-- KEYS[1] .. KEYS[5] the bucket's queue keys: queue, leased, paused, dead, blocked
-- Returns {ready, delayed, running, paused, failed, blocked} (ready: queued with a ready time
-- <= now, server clock). Writes nothing.
local now, err = server_time()
if err then
  return err
end
return {
  redis.call('ZCOUNT', KEYS[1], '-inf', now),
  redis.call('ZCOUNT', KEYS[1], '(' .. int(now), '+inf'),
  redis.call('ZCARD', KEYS[2]),
  redis.call('ZCARD', KEYS[3]),
  redis.call('ZCARD', KEYS[4]),
  redis.call('ZCARD', KEYS[5]),
}
