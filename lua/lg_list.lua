-- lg_list: checkpoints of a thread, newest first, with their blobs and pending writes (list).
-- KEYS[1] the thread's cps key, KEYS[2] its key prefix (see lg_common.lua).
-- ARGV[1] upper lex bound of the cps members ('(' or '[' prefixed, or '+')   ARGV[2] lower bound
-- ARGV[3] at most this many ('0' = all)   ARGV[4] only checkpoint ids below this ('' = any)
-- ARGV[5] only this checkpoint id ('' = any)
-- Returns a flat list of entries {member, record, blob values, write members} (see lg_get.lua).
-- Guarantees: read-only, one consistent view of the thread. Touches the thread keys derived from
-- KEYS[1] (same {bucket} tag, so the same slot); it has no check that can fail and writes nothing.
-- It checks nothing that can fail, so no write happens before every check that can fail.
local t = thread_at(1)
local limit, before, only = tonumber(ARGV[3]), ARGV[4], ARGV[5]
local members
if before == '' and only == '' and limit > 0 then
  members = redis.call('ZREVRANGEBYLEX', t.cps, ARGV[1], ARGV[2], 'LIMIT', 0, limit)
else
  members = redis.call('ZREVRANGEBYLEX', t.cps, ARGV[1], ARGV[2])
end
local out = {}
for _, member in ipairs(members) do
  local id = string.sub(member, string.find(member, '\0', 1, true) + 1)
  if (before == '' or id < before) and (only == '' or id == only) then
    local e = entry(t, member)
    if e then
      out[#out + 1] = e
      if limit > 0 and #out >= limit then
        break
      end
    end
  end
end
return out
