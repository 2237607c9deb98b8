-- lg_prune: delete threads whole, or keep only the newest checkpoint of each namespace
-- (delete_thread, prune).
-- KEYS two per thread: its cps key and its key prefix (see lg_common.lua).
-- ARGV[1] 'delete' or 'keep_latest'   ARGV[2..] the thread ids (escaped), one per pair of KEYS
-- Guarantees, atomically for all the threads given: 'delete' removes every key of each thread,
-- its entries in the run index and in the thread index; 'keep_latest' keeps the newest checkpoint
-- of each namespace with its pending writes, removes the others with their writes, then the
-- blobs no kept checkpoint uses and run-index entries of runs left without a checkpoint.
-- On a cluster the caller groups threads by bucket, so all keys (KEYS and the run-index keys
-- derived with the same {bucket} tag) are in one slot. It has no check that can fail.
-- It checks nothing that can fail, so no write happens before every check that can fail.
local removed = 0
for g = 1, #KEYS / 2 do
  local t = thread_at(g * 2 - 1)
  local thread = ARGV[g + 1]
  if ARGV[1] == 'delete' then
    removed = removed + redis.call('ZCARD', t.cps)
    delete_thread(t, thread)
  else
    local members = redis.call('ZRANGE', t.cps, 0, -1)
    local drop = {}
    for i = 1, #members - 1 do
      if head(members[i]) == head(members[i + 1]) then
        drop[#drop + 1] = members[i]
      end
    end
    removed = removed + drop_checkpoints(t, thread, drop)
  end
end
return removed
