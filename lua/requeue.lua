-- requeue: queue a run again from outside the fleet (see Checkpointer.resume_run, .requeue).
-- KEYS[1] .. KEYS[5] the run's bucket queue keys: queue, leased, paused, dead, blocked
-- KEYS[6] the run's record hash   KEYS[7] the run's steps sorted set (all one slot: the run's tag)
-- ARGV[1] 'answer' (resume a paused run with a human's answer) or 'again' (requeue by hand)
-- ARGV[2] the answer (JSON)   ARGV[3] delay in ms   ARGV[4] workflow id   ARGV[5] run id
-- ARGV[6] the bucket's event channel
-- Returns the run's queue state. Checks first, no write before them: no steps fails with
-- RUNNOTFOUND; 'answer' on a run neither paused nor never queued fails with STATE <state>
-- (unless it waits in the queue with this very answer: a retry, returning 'queued'); 'again' on a
-- queued or running run returns that state and writes nothing, and on a run neither failed,
-- blocked nor never queued fails with STATE <state>. NOPERM and OOM fail before any write.
-- Then, atomically: the run leaves every index of its bucket, keeps the answer ('answer', for the
-- pause at its latest super-step: answer_step, as record_answer.lua keeps it) or has
-- its attempts and reason reset ('again'), and is queued at now + delay (event queued).
local record, steps = KEYS[6], KEYS[7]
local mode, run_id = ARGV[1], ARGV[5]

if redis.call('EXISTS', steps) == 0 then
  return redis.error_reply('RUNNOTFOUND the run has no checkpoint')
end
local f = redis.call('HMGET', record, 'state', 'answer', 'answer_step')
local state = f[1]
local paused_at = redis.call('ZREVRANGE', steps, 0, 0)[1]
if mode == 'answer' then
  if state == 'queued' and f[2] == ARGV[2] and f[3] == paused_at then
    return 'queued'
  end
  if state and state ~= 'paused' then
    return redis.error_reply('STATE ' .. state)
  end
else
  if state == 'queued' or state == 'running' then
    return state
  end
  if state and state ~= 'failed' and state ~= 'blocked' then
    return redis.error_reply('STATE ' .. state)
  end
end
local now, err = server_time()
if err then
  return err
end
refuse_if_out_of_memory(steps)
unindex(run_id)
if mode == 'answer' then
  redis.call('HSET', record, 'answer', ARGV[2], 'answer_step', paused_at)
else
  redis.call('HSET', record, 'attempts', 0)
  redis.call('HDEL', record, 'reason')
end
local ready = int(now + tonumber(ARGV[3]))
redis.call('HSET', record, 'state', 'queued', 'ready', ready)
redis.call('ZADD', KEYS[1], ready, run_id)
follow_run_deadline(record, steps)
publish(ARGV[6], queue_event('queued', ARGV[4], run_id, '', now))
return 'queued'
