-- hint_touch: a slot bucket of a workflow needs a claim from a given time on.
-- KEYS[1] the workflow's hint sorted set (bucket -> time)   KEYS[2] its generation hash (same tag)
-- ARGV[1] bucket   ARGV[2] delay in ms from now, or '' with ARGV[4]
-- ARGV[3] the workflow's wake shard channel (same tag; '' = do not publish)
-- ARGV[4] an absolute time in ms instead of a delay (the sweep)
-- Sent after the bucket's script (in the same pipeline on standalone Redis): the hint's score
-- becomes the earlier of its score and that time, and the bucket's generation grows, so that a
-- worker that saw the bucket empty before this touch cannot settle the hint away (hint_settle).
-- When the bucket is ready now, the bucket number is published on the wake channel.
-- NOPERM (no +time) fails before any write. Returns 1.
local hint, generation, bucket = KEYS[1], KEYS[2], ARGV[1]
local now, err = server_time()
if err then
  return err
end
local at = now
if ARGV[4] and ARGV[4] ~= '' then
  at = tonumber(ARGV[4])
else
  at = now + tonumber(ARGV[2])
end
local score = redis.call('ZSCORE', hint, bucket)
if not score or tonumber(score) > at then
  redis.call('ZADD', hint, int(at), bucket)
end
redis.call('HINCRBY', generation, bucket, 1)
if ARGV[3] ~= '' and at <= now then
  publish(ARGV[3], bucket)
end
return 1
