-- lg_put_writes: store the pending writes of one task on one checkpoint (put_writes).
-- KEYS[1] the thread's cps key, KEYS[2] its key prefix (see lg_common.lua).
-- ARGV[1] ttl in ms ('0' = none)   ARGV[2] thread id (escaped)   ARGV[3] ns \0 checkpoint_id \0
-- ARGV[4..] one write each: task \0 idx \0 channel \0 path \0 type \0 value (a negative idx starts
-- with '-'); every write of a call is of the same task.
-- Guarantees, atomically: a write is keyed by (checkpoint, task, idx); one with idx >= 0 that is
-- already stored is left as it is (a retried or repeated call changes nothing), one with a
-- negative idx (error, interrupt, resume, scheduled) replaces the stored one; every key of the
-- thread shares one deadline (see begin_write). Nothing in it can fail after argument checks
-- done by the caller, so no write happens before a check that can fail. Touches the thread keys
-- derived from KEYS[1] and run-index keys, all with the same {bucket} tag (same slot).
local t = thread_at(1)
local ttl, thread, base = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local deadline, refresh, is_new, now = begin_write(ttl, t)

-- Whether write ARGV[i] has a negative idx (its idx, after task \0, starts with '-').
local function negative(i)
  return string.byte(ARGV[i], string.find(ARGV[i], '\0', 1, true) + 1) == 45
end

-- The key of write ARGV[i]: base .. task \0 idx \0.
local function key_of(i)
  local task_end = string.find(ARGV[i], '\0', 1, true)
  return base .. string.sub(ARGV[i], 1, string.find(ARGV[i], '\0', task_end + 1, true))
end

-- base .. task \0: the writes of this task on this checkpoint all start with it.
local task = base .. string.sub(ARGV[4], 1, string.find(ARGV[4], '\0', 1, true))
local regular = true
for i = 4, #ARGV do
  if negative(i) then
    regular = false
  end
end
local stored = redis.call('ZRANGEBYLEX', t.w, '[' .. task, '(' .. string.sub(task, 1, -2) .. '\1', 'LIMIT', 0, 1)
if regular and #stored == 0 then
  -- The task has no write yet, and regular indexes are distinct: add them all at once.
  local members = {}
  for i = 4, #ARGV do
    members[#members + 1] = 0
    members[#members + 1] = base .. ARGV[i]
  end
  chunked('ZADD', t.w, members)
else
  for i = 4, #ARGV do
    local key = key_of(i)
    local member = base .. ARGV[i]
    local found = redis.call('ZRANGEBYLEX', t.w, '[' .. key, '(' .. string.sub(key, 1, -2) .. '\1', 'LIMIT', 0, 1)
    if #found == 0 then
      redis.call('ZADD', t.w, 0, member)
    elseif negative(i) and found[1] ~= member then
      redis.call('ZREM', t.w, found[1])
      redis.call('ZADD', t.w, 0, member)
    end
  end
end
finish_write(t, thread, deadline, refresh, is_new, now)
return 1
