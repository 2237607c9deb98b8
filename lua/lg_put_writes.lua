-- lg_put_writes: store the pending writes of one task on one checkpoint (put_writes).
-- KEYS[1] the thread's cps key, KEYS[2] its key prefix (see lg_common.lua).
-- ARGV[1] ttl in ms ('0' = none)   ARGV[2] thread id (escaped)   ARGV[3] ns \0 checkpoint_id \0
-- ARGV[4..] by threes, one write each: task \0 idx \0, then channel \0 path \0 type \0 value, then
-- '1' when idx < 0 (else '0'); every write of a call is of the same task.
-- Guarantees, atomically: a write is keyed by (checkpoint, task, idx); one with idx >= 0 that is
-- already stored is left as it is (a retried or repeated call changes nothing), one with a
-- negative idx (error, interrupt, resume, scheduled) replaces the stored one; every key of the
-- thread shares one deadline (see begin_write). Nothing in it can fail after argument checks
-- done by the caller, so no write happens before a check that can fail. Touches the thread keys
-- derived from KEYS[1] and run-index keys, all with the same {bucket} tag (same slot).
local t = thread_at(1)
local ttl, thread, base = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local deadline, refresh, is_new, now = begin_write(ttl, t)

-- base .. task \0: the writes of this task on this checkpoint all start with it.
local first = base .. ARGV[4]
local task = string.sub(first, 1, string.find(first, '\0', #base + 1, true))
local regular = true
for i = 6, #ARGV, 3 do
  if ARGV[i] == '1' then
    regular = false
  end
end
local stored = redis.call('ZRANGEBYLEX', t.w, '[' .. task, '(' .. string.sub(task, 1, -2) .. '\1', 'LIMIT', 0, 1)
if regular and #stored == 0 then
  -- The task has no write yet, and regular indexes are distinct: add them all at once.
  local members = {}
  for i = 4, #ARGV, 3 do
    members[#members + 1] = 0
    members[#members + 1] = base .. ARGV[i] .. ARGV[i + 1]
  end
  chunked('ZADD', t.w, members)
else
  for i = 4, #ARGV, 3 do
    local key = base .. ARGV[i]
    local member = key .. ARGV[i + 1]
    local found = redis.call('ZRANGEBYLEX', t.w, '[' .. key, '(' .. string.sub(key, 1, -2) .. '\1', 'LIMIT', 0, 1)
    if #found == 0 then
      redis.call('ZADD', t.w, 0, member)
    elseif ARGV[i + 2] == '1' and found[1] ~= member then
      redis.call('ZREM', t.w, found[1])
      redis.call('ZADD', t.w, 0, member)
    end
  end
end
finish_write(t, thread, deadline, refresh, is_new, now)
return 1
