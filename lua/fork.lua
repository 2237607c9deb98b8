-- fork: copy one snapshot into a new run of the same workflow and apply edits.
-- KEYS[1] the source snapshot hash   KEYS[2] the fork's snapshot hash
-- KEYS[3] the fork's steps sorted set   KEYS[4] the run-index bucket of the fork
-- ARGV[1] super-step   ARGV[2] ttl in ms ('0' = none)   ARGV[3] the fork's run id
-- ARGV[4..] field, value, ... (the edits, then the fork's label and timestamp)
-- Guarantees, atomically: a missing source fails with NOTFOUND and writes nothing; the source is
-- never changed; the fork's keys expire together at now + 2*ttl or never (COPY would otherwise
-- carry over the source's TTL). The fork shares its source's slot (same lineage tag).
local source, target, steps, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local step = ARGV[1]
local ttl = tonumber(ARGV[2])

if redis.call('EXISTS', source) == 0 then
  return redis.error_reply('NOTFOUND no snapshot to fork at super-step ' .. step)
end
if redis.call('COPY', source, target) == 0 then
  return redis.error_reply('CONFLICT the fork target already exists')
end
hset_pairs(target, 4)
redis.call('ZADD', steps, step, step)

local deadline = nil
if ttl > 0 then
  deadline = now_ms() + 2 * ttl
end
expire_at(target, deadline)
expire_at(steps, deadline)
index_run(index, ARGV[3], deadline)
return 1
