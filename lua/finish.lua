-- finish: a worker ends its claim on a run (see Checkpointer.finish).
-- KEYS[1] .. KEYS[5] the run's bucket queue keys: queue, leased, paused, dead, blocked
-- KEYS[6] the run's record hash   KEYS[7] the run's steps sorted set (all one slot: the run's tag)
-- ARGV[1] the lease's fencing token   ARGV[2] outcome: completed, paused, released, retry, failed
-- or blocked   ARGV[3] retry delay in ms   ARGV[4] max attempts ('0' = no limit)
-- ARGV[5] reason (JSON; '' = none)   ARGV[6] workflow id   ARGV[7] run id
-- ARGV[8] the bucket's event channel   ARGV[9] the lease's owner
-- ARGV[10] the note: '1' to store ARGV[11], '0' to clear it, 'keep' to leave it (release_lease)
-- Returns the run's queue state after it. Checks first, no write before them: a lease that is
-- no longer the run's (taken over, or the run deleted) fails with LEASELOST; a claim this token
-- already settled (a retry after a lost reply) returns the state it left, writing nothing; NOPERM
-- and OOM fail before any write. Then, atomically: the lease is released as release_lease
-- releases it (the note stored, cleared or kept by ARGV[10]; its token and fencing
-- counter stay), the run leaves every index of its bucket, and by the outcome: completed (event
-- completed; answer and reason cleared), paused (into 'paused'; a consumed answer cleared),
-- released (queued at now, event released), blocked (into 'blocked', event blocked), retry
-- (attempts + 1; queued at now + delay, event retrying; or, at max attempts, failed), failed
-- (attempts + 1, into 'dead', event failed). A run whose cancellation was requested ends
-- 'cancelled' (event cancelled) whatever the outcome, unless it completed.
local record = KEYS[6]
local token, outcome, run_id, channel = ARGV[1], ARGV[2], ARGV[7], ARGV[8]
local workflow_id = ARGV[6]

local f = redis.call('HMGET', record, 'token', 'settled', 'state', 'cancel')
if f[1] ~= token then
  return redis.error_reply('LEASELOST the lease on this run was lost')
end
if f[2] == token and f[3] then
  return f[3]
end
local now, err = server_time()
if err then
  return err
end
refuse_if_out_of_memory(KEYS[7])
redis.call('HDEL', record, 'owner', 'until', 'ready')
redis.call('HSET', record, 'settled', token)
if ARGV[10] == '1' then
  redis.call('HSET', record, 'note', ARGV[11])
elseif ARGV[10] == '0' then
  redis.call('HDEL', record, 'note')
end
unindex(run_id)

local state, event, label = nil, nil, ''
if f[4] and outcome ~= 'completed' then
  state, event = 'cancelled', 'cancelled'
  redis.call('HDEL', record, 'answer', 'answer_step')
elseif outcome == 'completed' then
  state, event = 'completed', 'completed'
  redis.call('HDEL', record, 'answer', 'answer_step', 'reason')
elseif outcome == 'paused' then
  state = 'paused'
  redis.call('HDEL', record, 'answer', 'answer_step')
  redis.call('ZADD', KEYS[3], int(now), run_id)
elseif outcome == 'released' then
  state, event, label = 'queued', 'released', ARGV[9]
  redis.call('HSET', record, 'ready', int(now))
  redis.call('ZADD', KEYS[1], int(now), run_id)
elseif outcome == 'blocked' then
  state, event = 'blocked', 'blocked'
  redis.call('ZADD', KEYS[5], int(now), run_id)
else
  local attempts = redis.call('HINCRBY', record, 'attempts', 1)
  local most = tonumber(ARGV[4])
  label = 'attempts ' .. attempts
  if outcome == 'failed' or (most > 0 and attempts >= most) then
    state, event = 'failed', 'failed'
    redis.call('ZADD', KEYS[4], int(now), run_id)
  else
    state, event = 'queued', 'retrying'
    local ready = int(now + tonumber(ARGV[3]))
    redis.call('HSET', record, 'ready', ready)
    redis.call('ZADD', KEYS[1], ready, run_id)
  end
end
if ARGV[5] ~= '' and state ~= 'completed' then
  redis.call('HSET', record, 'reason', ARGV[5])
end
redis.call('HSET', record, 'state', state)
if event then
  publish(channel, queue_event(event, workflow_id, run_id, label, now))
end
return state
