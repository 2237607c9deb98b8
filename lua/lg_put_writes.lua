-- lg_put_writes: store the pending writes of one task on one checkpoint (put_writes).
-- KEYS[1] the thread's cps key, KEYS[2] its key prefix (see lg_common.lua).
-- ARGV[1] ttl in ms ('0' = none)   ARGV[2] thread id (escaped)   ARGV[3] ns \0 checkpoint_id \0
-- ARGV[4] lengths (comma-separated) of the pieces of ARGV[5], by threes: task \0 idx \0, then
-- channel \0 path \0 type \0 value, then '1' when idx < 0 (else '0')
-- Guarantees, atomically: a write is keyed by (checkpoint, task, idx); one with idx >= 0 that is
-- already stored is left as it is (a retried or repeated call changes nothing), one with a
-- negative idx (error, interrupt, resume, scheduled) replaces the stored one; every key of the
-- thread shares one deadline (see begin_write). Nothing in it can fail after argument checks
-- done by the caller, so no write happens before a check that can fail. Touches the thread keys
-- derived from KEYS[1] and run-index keys, all with the same {bucket} tag (same slot).
local t = thread_at(1)
local ttl, thread, base = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local deadline, refresh, is_new, now = begin_write(ttl, t)

local p = pieces(ARGV[4], ARGV[5])
for i = 1, #p, 3 do
  local key = base .. p[i]
  local member = key .. p[i + 1]
  local found = redis.call('ZRANGEBYLEX', t.w, '[' .. key, '(' .. string.sub(key, 1, -2) .. '\1', 'LIMIT', 0, 1)
  if #found == 0 then
    redis.call('ZADD', t.w, 0, member)
  elseif p[i + 2] == '1' and found[1] ~= member then
    redis.call('ZREM', t.w, found[1])
    redis.call('ZADD', t.w, 0, member)
  end
end
finish_write(t, thread, deadline, refresh, is_new, now)
return 1
