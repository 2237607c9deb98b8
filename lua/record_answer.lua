-- record_answer: keep a human's answer to a paused run in the run's record, without running it.
-- KEYS[1] the run's record hash   KEYS[2] the run's steps sorted set (same slot: same run)
-- ARGV[1] the super-step of the pause it answers   ARGV[2] the answer (JSON)
-- ARGV[3] the lease's fencing token ('' = no lease)
-- Returns 1. Checks first, no write before them: no run fails with RUNNOTFOUND; with a lease,
-- one that is not the run's live lease fails with LEASELOST; without one, a live lease held by
-- anyone fails with LEASEHELD <until> <owner>; a run someone asked to cancel fails with
-- CANCELLED; a run whose latest super-step is not ARGV[1] fails with NOTAT <latest> (not MOVED:
-- redis-py would read that as a cluster redirect); without a lease, a different answer already
-- recorded for that super-step fails with ANSWERED (the first answer wins; the same one sent
-- again is a retry and succeeds). A user without +time
-- fails with NOPERM, and over maxmemory (noeviction) it fails with OOM.
-- Then the record holds answer_step = ARGV[1] and answer = ARGV[2], and shares the run's deadline.
local record, steps = KEYS[1], KEYS[2]
local step, answer, lease = ARGV[1], ARGV[2], ARGV[3]
local latest = redis.call('ZREVRANGE', steps, 0, 0)[1]
if not latest then
  return redis.error_reply('RUNNOTFOUND the run has no checkpoint')
end
local now, err = server_time()
if err then
  return err
end
local held = redis.call('HMGET', record, 'owner', 'token', 'until', 'cancel', 'answer_step', 'answer')
local refused = lease_refusal(held, lease, now)
if refused then
  return refused
end
if held[4] then
  return redis.error_reply('CANCELLED the run was cancelled')
end
if latest ~= step then
  return redis.error_reply('NOTAT ' .. latest)
end
if lease == '' and held[5] == step and held[6] ~= answer then
  return redis.error_reply('ANSWERED that pause already has a different answer')
end
local run_expires = redis.call('PEXPIRETIME', steps)
refuse_if_out_of_memory(steps)
redis.call('HSET', record, 'answer_step', step, 'answer', answer)
if run_expires >= 0 then
  redis.call('PEXPIREAT', record, int(run_expires))
end
return 1
