-- heartbeat: a worker says it is alive.
-- KEYS[1] the live-workers sorted set (worker id -> deadline)   KEYS[2] this worker's heartbeat
-- key (same {workers} tag)   ARGV[1] worker id   ARGV[2] what it says (JSON)   ARGV[3] ttl in ms
-- Atomically: the worker's key holds ARGV[2] and expires in ttl; its deadline in the set follows;
-- workers whose deadline passed leave the set. Each worker writes only its own key and entry, so
-- one never disturbs another. NOPERM (no +time) and OOM fail before any write. Returns 1.
local now, err = server_time()
if err then
  return err
end
refuse_if_out_of_memory(KEYS[1])
local deadline = now + tonumber(ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[1], int(deadline), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return 1
