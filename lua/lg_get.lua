-- lg_get: one checkpoint of a thread namespace with its blobs and pending writes (get_tuple).
-- KEYS[1] the thread's cps key, KEYS[2] its key prefix (see lg_common.lua).
-- ARGV[1] namespace (escaped)   ARGV[2] member ns \0 checkpoint_id, or '' for the newest of ARGV[1]
-- Returns {member, record, blob values in the record's refs order, write members}, or nil.
-- Guarantees: read-only, one consistent view of the thread (a checkpoint is never seen without
-- its blobs). Touches the thread keys derived from KEYS[1] (same {bucket} tag, so the same slot);
-- it has no check that can fail and writes nothing.
-- It checks nothing that can fail, so no write happens before every check that can fail.
local t = thread_at(1)
local ns, member = ARGV[1], ARGV[2]
if member == '' then
  local last = redis.call('ZREVRANGEBYLEX', t.cps, '(' .. ns .. '\1', '[' .. ns .. '\0', 'LIMIT', 0, 1)
  if #last == 0 then
    return false
  end
  member = last[1]
end
return entry(t, member)
