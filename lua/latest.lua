-- latest: the snapshot with the highest super-step of a run.
-- KEYS[1] the run's steps sorted set   KEYS[2] the run's snapshot-key prefix
-- Returns {super-step, {field, value, ...}}, or nil when the run has no snapshot. One atomic
-- read: the step and its hash are seen together, even while the run is being saved or expires.
local top = redis.call('ZREVRANGE', KEYS[1], 0, 0)
if #top == 0 then
  return false
end
local fields = redis.call('HGETALL', KEYS[2] .. top[1])
if #fields == 0 then
  return false
end
return {top[1], fields}
