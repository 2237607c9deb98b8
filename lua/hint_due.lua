-- hint_due: the slot buckets of a workflow that need a claim now.
-- KEYS[1] the workflow's hint sorted set   KEYS[2] its generation hash (same tag)
-- ARGV[1] the most buckets to return
-- Returns {now, next, bucket, generation, bucket, generation, ...}: the server clock, the
-- earliest time after now at which another bucket needs a claim (false: none), and each due
-- bucket with its generation (for hint_settle). Writes nothing.
local hint, generation = KEYS[1], KEYS[2]
local now, err = server_time()
if err then
  return err
end
local later = redis.call('ZRANGE', hint, '(' .. int(now), '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')
local out = {int(now), later[2] or false}
for _, bucket in ipairs(redis.call('ZRANGE', hint, '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[1]))) do
  out[#out + 1] = bucket
  out[#out + 1] = redis.call('HGET', generation, bucket) or '0'
end
return out
