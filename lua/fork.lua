-- fork: copy one snapshot into a new run of the same workflow and apply edits.
-- KEYS[1] the source snapshot hash   KEYS[2] the fork's snapshot hash
-- KEYS[3] the fork's steps sorted set   KEYS[4] the run-index bucket of the fork
-- KEYS[5] the fork's meta hash (super-step -> "<timestamp> <label>")
-- ARGV[1] super-step   ARGV[2] ttl in ms ('0' = none)   ARGV[3] the fork's run id
-- ARGV[4] the workflow's event channel   ARGV[5] the event to publish (JSON; '' = none)
-- ARGV[6] the fork snapshot's "<timestamp> <label>" (its field in the meta hash)
-- ARGV[7..] field, value, ... (the edits, then the fork's label, timestamp and ':w' = its run id)
-- The fork shares its source's slot (same lineage tag), so every key is in one slot (the
-- workflow registry bucket index_run derives from KEYS[4] has the same hash tag).
-- Checks first, and no write happens before every check that can fail has passed: a missing
-- source fails with NOTFOUND; a fork target run that exists fails with CONFLICT, unless it is
-- this very fork (its snapshot's ':w' is this run id: a retry), which returns 0 and writes
-- nothing; a user without +time fails with NOPERM; over maxmemory (noeviction), OOM.
-- Then, atomically: the source is never changed; the fork's keys expire together at
-- now + 2*ttl or never (COPY would otherwise carry over the source's TTL).
local source, target, steps, index, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local step = ARGV[1]
local ttl = tonumber(ARGV[2])

if redis.call('EXISTS', steps) == 1 then
  if redis.call('HGET', target, ':w') == ARGV[3] then
    return 0
  end
  return redis.error_reply('CONFLICT the fork target already exists')
end
if redis.call('EXISTS', source) == 0 then
  return redis.error_reply('NOTFOUND no snapshot to fork at super-step ' .. step)
end
local deadline = nil
if ttl > 0 then
  local now, err = server_time()
  if err then
    return err
  end
  deadline = now + 2 * ttl
end

refuse_if_out_of_memory(steps)
redis.call('COPY', source, target)
hset_pairs(target, 7)
redis.call('ZADD', steps, step, step)
redis.call('HSET', meta, step, ARGV[6])
expire_at(target, deadline)
expire_at(steps, deadline)
expire_at(meta, deadline)
index_run(index, ARGV[3], deadline)
publish(ARGV[4], ARGV[5])
return 1
