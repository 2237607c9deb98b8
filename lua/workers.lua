-- workers: the live workers and their last heartbeats.
-- KEYS[1] the live-workers sorted set (P:{workers}:live); each worker's key is derived from it
-- (P:{workers}:w:<escaped id>: the same tag, one slot).
-- Returns {id, heartbeat, deadline, ...} for each worker whose deadline is after now and whose
-- key still exists. Writes nothing.
local now, err = server_time()
if err then
  return err
end
local base = string.sub(KEYS[1], 1, -5) .. 'w:'
local live = redis.call('ZRANGE', KEYS[1], '(' .. int(now), '+inf', 'BYSCORE', 'WITHSCORES')
local out = {}
for i = 1, #live, 2 do
  local beat = redis.call('GET', base .. escape_id(live[i]))
  if beat then
    out[#out + 1] = live[i]
    out[#out + 1] = beat
    out[#out + 1] = live[i + 1]
  end
end
return out
