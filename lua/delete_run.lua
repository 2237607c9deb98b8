-- delete_run: remove every key of one run.
-- KEYS[1] the run's steps sorted set   KEYS[2] the run's snapshot-key prefix
-- KEYS[3] the run-index bucket         ARGV[1] the run id
-- Guarantees, atomically: every snapshot hash, the steps set and the index entry are gone
-- together; other runs (forks included: they are copies) are untouched. Returns the number of
-- snapshots removed.
local removed = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, step in ipairs(removed) do
  redis.call('DEL', KEYS[2] .. step)
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return #removed
