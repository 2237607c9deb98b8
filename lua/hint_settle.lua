-- hint_settle: after a claim on a slot bucket, its hint moves to when it next needs a claim.
-- KEYS[1] the workflow's hint sorted set   KEYS[2] its generation hash (same tag)
-- ARGV[1] bucket   ARGV[2] the bucket's generation when the worker read the hint (hint_due)
-- ARGV[3] when the bucket next needs a claim, as the claim saw it (ms; '' = never)
-- Only when the generation is unchanged (no hint_touch since: nothing was queued in the bucket
-- after the claim looked), the score becomes ARGV[3], or the bucket leaves the hint. Otherwise
-- nothing is written (the touch's score stands). Generations never go back, so an old read never
-- matches a later state. Returns 1 when settled, 0 when not.
local hint, generation, bucket = KEYS[1], KEYS[2], ARGV[1]
if (redis.call('HGET', generation, bucket) or '0') ~= ARGV[2] then
  return 0
end
if ARGV[3] == '' then
  redis.call('ZREM', hint, bucket)
else
  redis.call('ZADD', hint, ARGV[3], bucket)
end
return 1
