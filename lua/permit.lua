-- permit: fleet-wide permits that cap how many runs of one workflow are in flight at once.
-- KEYS[1] the workflow's permits sorted set (holder -> expiry; in the workflow's hint slot)
-- ARGV[1] 'take', 'renew' or 'drop'   ARGV[2] ttl in ms   ARGV[3] the cap (for 'take')
-- ARGV[4..] holders (one for 'take' and 'drop'; a worker renews all of its own at once)
-- take: expired permits are dropped, then the holder's permit is extended if it has one, or
-- granted while fewer than the cap are held; returns 1 when held, 0 when the cap is reached.
-- renew: extends the holders' permits that still exist; returns how many. drop: removes the
-- holder's permit; returns 1. NOPERM (no +time) and OOM fail before any write.
local permits, mode, ttl = KEYS[1], ARGV[1], tonumber(ARGV[2])
local now, err = server_time()
if err then
  return err
end
if mode == 'drop' then
  redis.call('ZREM', permits, ARGV[4])
  return 1
end
refuse_if_out_of_memory(permits)
local expires = int(now + ttl)
if mode == 'renew' then
  local renewed = 0
  for i = 4, #ARGV do
    if redis.call('ZSCORE', permits, ARGV[i]) then
      redis.call('ZADD', permits, expires, ARGV[i])
      renewed = renewed + 1
    end
  end
  return renewed
end
redis.call('ZREMRANGEBYSCORE', permits, '-inf', now)
if redis.call('ZSCORE', permits, ARGV[4]) or redis.call('ZCARD', permits) < tonumber(ARGV[3]) then
  redis.call('ZADD', permits, expires, ARGV[4])
  return 1
end
return 0
