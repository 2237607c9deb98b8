-- list: the metadata of a run's snapshots, ascending by super-step, read from each snapshot hash.
-- The store lists a run with one HGETALL of its meta hash (see save.lua); this script is its
-- fallback for a run without one (saved by a version before the meta hash, or no run at all).
-- KEYS[1] the run's steps sorted set   KEYS[2] the run's snapshot-key prefix
-- ARGV[1] upper score bound ('+inf', or '(N' for steps below N)   ARGV[2] limit ('0' = all)
-- Returns {step, timestamp, label, step, timestamp, label, ...}: with a limit, the highest
-- `limit` steps under the bound. One atomic read.
local newest_first
if tonumber(ARGV[2]) > 0 then
  newest_first = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], '-inf', 'LIMIT', 0, ARGV[2])
else
  newest_first = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], '-inf')
end
local rows = {}
for i = #newest_first, 1, -1 do
  local step = newest_first[i]
  local meta = redis.call('HMGET', KEYS[2] .. step, ':ts', ':label')
  if meta[1] then
    rows[#rows + 1] = step
    rows[#rows + 1] = meta[1]
    rows[#rows + 1] = meta[2]
  end
end
return rows
