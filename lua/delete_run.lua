-- delete_run: remove every key of one run.
-- KEYS[1] the run's steps sorted set   KEYS[2] the run's snapshot-key prefix
-- KEYS[3] the run-index bucket         KEYS[4] the run's record hash (lease, fencing counter)
-- KEYS[5] the run's deletion marker   KEYS[6] the run's meta hash
-- ARGV[1] the run id   ARGV[2] this call's token
-- ARGV[3] the workflow's event channel   ARGV[4] the event to publish (JSON; '' = none)
-- Snapshot keys are derived from KEYS[2] and the run's own sorted set, and the workflow
-- registry bucket from KEYS[3] (unindex_run): the same slot.
-- Guarantees, atomically: every snapshot hash, the steps set, the meta hash, the run's record
-- (so its lease: a worker still holding it can save nothing more) and the index entry are gone
-- together, and the workflow's registry entry too when that was its last run in the bucket;
-- other runs (forks included: they are copies) are untouched. Nothing can fail before the
-- writes (and deleting is allowed over maxmemory: it frees memory). A marker keeps this call's
-- token and answer for a minute, so a retry after a lost reply gets the same answer.
-- Returns the number of snapshots removed.
local marker = redis.call('GET', KEYS[5])
if marker then
  local token, count = string.match(marker, '^(.-):(%d+)$')
  if token == ARGV[2] then
    return tonumber(count)
  end
end
local removed = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, step in ipairs(removed) do
  redis.call('DEL', KEYS[2] .. step)
end
redis.call('DEL', KEYS[1], KEYS[4], KEYS[6])
unindex_run(KEYS[3], ARGV[1])
if #removed > 0 then
  redis.call('SET', KEYS[5], ARGV[2] .. ':' .. #removed, 'PX', 60000)
  publish(ARGV[3], ARGV[4])
end
return #removed
