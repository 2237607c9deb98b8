-- submit: create a run at super-step 0 and queue it, atomically (see Checkpointer.submit).
-- KEYS[1] .. KEYS[5] the run's bucket queue keys: queue, leased, paused, dead, blocked
-- KEYS[6] the run's steps sorted set   KEYS[7] its super-step 0 snapshot hash
-- KEYS[8] its run-index bucket          KEYS[9] its record hash   KEYS[10] its meta hash
-- ARGV[1] ttl in ms ('0' = none)   ARGV[2] run id   ARGV[3] delay in ms before it is claimable
-- ARGV[4] the workflow's event channel (shard channel, same tag)   ARGV[5] the 'saved' event
-- ARGV[6] the snapshot's "<timestamp> <label>"   ARGV[7] workflow id   ARGV[8..] field, value...
-- Every key is declared (one slot: the run's tag). Returns 1 when it created the run; 0, with
-- nothing written, when the run exists or a live lease guards it (an inline start): so a caller's
-- retry with the same run id, or a duplicate submission, is a no-op.
-- Checks first: NOPERM (no +time) and OOM (over maxmemory, noeviction) fail before any write.
-- Then: the snapshot, steps, meta and record are written as save.lua writes a new run (every key
-- with one deadline of now + 2*ttl, or none), the run is added to its run-index bucket, its
-- record gets state 'queued' with 0 attempts, and it enters the queue at now + delay.
local queue = KEYS[1]
local steps, snapshot, index, record, meta = KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local ttl, run_id, delay = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])

if redis.call('EXISTS', steps) == 1 then
  return 0
end
local now, err = server_time()
if err then
  return err
end
local held = redis.call('HMGET', record, 'owner', 'until')
if held[1] and tonumber(held[2]) > now then
  return 0
end

refuse_if_out_of_memory(steps)
redis.call('DEL', snapshot, meta)
hset_pairs(snapshot, 8)
redis.call('ZADD', steps, 0, 0)
redis.call('HSET', meta, 0, ARGV[6])
redis.call('HDEL', record, 'note', 'reason', 'cancel', 'answer', 'answer_step', 'settled',
  'expired')
redis.call('HSET', record, 'state', 'queued', 'attempts', 0, 'ready', int(now + delay))
local deadline = nil
if ttl > 0 then
  deadline = now + 2 * ttl
end
for _, key in ipairs({snapshot, steps, meta, record}) do
  expire_at(key, deadline)
end
index_run(index, run_id, deadline)
unindex(run_id)
redis.call('ZADD', queue, int(now + delay), run_id)
publish(ARGV[4], ARGV[5])
publish(ARGV[4], queue_event('queued', ARGV[7], run_id, '', now))
return 1
