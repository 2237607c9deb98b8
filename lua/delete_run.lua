-- delete_run: remove every key of one run.
-- KEYS[1] the run's steps sorted set   KEYS[2] the run's snapshot-key prefix
-- KEYS[3] the run-index bucket         KEYS[4] the run's record hash (lease, fencing counter)
-- ARGV[1] the run id
-- Snapshot keys are derived from KEYS[2] and the run's own sorted set: the same slot.
-- Guarantees, atomically: every snapshot hash, the steps set, the run's record (so its lease:
-- a worker still holding it can save nothing more) and the index entry are gone together; other
-- runs (forks included: they are copies) are untouched. Nothing can fail before the writes.
-- Returns the number of snapshots removed.
local removed = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, step in ipairs(removed) do
  redis.call('DEL', KEYS[2] .. step)
end
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('ZREM', KEYS[3], ARGV[1])
return #removed
