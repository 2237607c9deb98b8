-- lg_delete_runs: delete every checkpoint (with its writes) that the given runs made
-- (delete_for_runs).
-- KEYS run-index keys <prefix>:lg:{bucket}:r:<run>, any number; on a cluster the caller sends
-- only keys of one bucket per call. ARGV none.
-- Guarantees, atomically for the keys given: in each thread the run index lists, the run's
-- checkpoints and their writes go, then the blobs no remaining checkpoint uses; a thread left
-- empty is removed whole; the run-index key goes. Thread keys are derived from the run key's
-- {bucket} tag and the listed thread ids, so they are in the declared key's slot. It has no
-- check that can fail.
-- It checks nothing that can fail, so no write happens before every check that can fail.
local removed = 0
for _, key in ipairs(KEYS) do
  local at = string.find(key, '}:r:', 1, true)
  local bucket, run = string.sub(key, 1, at + 1), string.sub(key, at + 4)
  for _, thread in ipairs(redis.call('SMEMBERS', key)) do
    local t = thread_in(bucket, thread)
    local members = {}
    for _, m in ipairs(redis.call('ZRANGEBYLEX', t.rm, '[' .. run .. '\0', '(' .. run .. '\1')) do
      members[#members + 1] = string.sub(m, #run + 2)
    end
    removed = removed + drop_checkpoints(t, thread, members)
  end
  redis.call('DEL', key)
end
return removed
