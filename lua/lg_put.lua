-- lg_put: store one LangGraph checkpoint (BaseCheckpointSaver.put) and the blobs of its new
-- channel versions.
-- KEYS[1] the thread's cps key, KEYS[2] its key prefix (see lg_common.lua).
-- ARGV[1] ttl in ms ('0' = none)   ARGV[2] thread id (escaped)   ARGV[3] member ns \0 checkpoint_id
-- ARGV[4] run id (escaped, '' = none)   ARGV[5] the record: run \2 refs \2 type \0 payload
-- ARGV[6..] blob field, value, field, value, ... (field ns \0 channel \0 version; the blobs of
-- unchanged channels are not sent)
-- Guarantees, atomically: the checkpoint is listed once in its namespace and its record replaced
-- whole (a re-put under another run leaves that run's index); blobs are keyed by channel version,
-- so no blob of another checkpoint is rewritten when versions are unique per branch; the run
-- index <bucket>r:<run> (derived, same {bucket} tag and slot as KEYS) lists the thread; every key
-- of the thread shares one deadline (see begin_write). Nothing in it can fail after argument
-- checks done by the caller, so no write happens before a check that can fail.
local t = thread_at(1)
local ttl, thread, member, run, rec = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local deadline, refresh, is_new, now = begin_write(ttl, t)

if redis.call('ZADD', t.cps, 0, member) == 0 then
  local old = redis.call('HGET', t.cp, member)
  if old then
    local old_run = record_parts(old)
    if old_run ~= '' and old_run ~= run then
      redis.call('ZREM', t.rm, old_run .. '\0' .. member)
      if #redis.call('ZRANGEBYLEX', t.rm, '[' .. old_run .. '\0', '(' .. old_run .. '\1', 'LIMIT', 0, 1) == 0 then
        redis.call('SREM', run_key(t, old_run), thread)
      end
    end
  end
end
redis.call('HSET', t.cp, member, rec)
chunked('HSET', t.b, ARGV, 6)
if run ~= '' then
  redis.call('ZADD', t.rm, 0, run .. '\0' .. member)
  index_add(run_key(t, run), deadline, 'SADD', thread)
end
finish_write(t, thread, deadline, refresh, is_new, now)
return 1
