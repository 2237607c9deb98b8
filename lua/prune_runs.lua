-- prune_runs: drop index entries of runs that no longer exist (expired).
-- KEYS[1] a run-index bucket   KEYS[2..n] the steps sorted sets of candidate runs
-- ARGV[1..n-1] the run ids, ARGV[i] naming the run of KEYS[i + 1]
-- Guarantees, atomically: an entry is removed only if its run has no steps set at this moment,
-- so a run saved again concurrently is never dropped from the index; a bucket left empty takes
-- its workflow out of the registry bucket of the same tag (derived from KEYS[1]: same slot).
-- Returns the count removed.
local removed = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    removed = removed + unindex_run(KEYS[1], ARGV[i - 1])
  end
end
return removed
