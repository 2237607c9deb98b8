-- lg_import: merge what lg_export returned into a thread (copy_thread across cluster slots).
-- KEYS[1] the target thread's cps key, KEYS[2] its key prefix (see lg_common.lua).
-- ARGV[1] ttl in ms ('0' = none)   ARGV[2] thread id (escaped)
-- ARGV[3..7] how many cps members, cp values, b values, w members, rm members follow
-- ARGV[8..] those, in that order
-- Guarantees, atomically: as lg_copy for the target. Touches the thread keys derived from KEYS[1]
-- and run-index keys, all with the same {bucket} tag (same slot). It has no check that can fail.
-- It checks nothing that can fail, so no write happens before every check that can fail.
local data, at = {}, 8
for part = 1, 5 do
  local n = tonumber(ARGV[2 + part])
  data[part] = {}
  for i = at, at + n - 1 do
    data[part][#data[part] + 1] = ARGV[i]
  end
  at = at + n
end
return import(thread_at(1), ARGV[2], tonumber(ARGV[1]), data)
