-- run_record: a run's lease, note, answer, cancel flag and queue record, read against the
-- server's clock.
-- KEYS[1] the run's record hash
-- Returns {now, owner, token, until, ttl, note, answer_step, answer, cancel, state, attempts,
-- ready, reason} (false for a missing field). Writes nothing.
local now, err = server_time()
if err then
  return err
end
local held = redis.call('HMGET', KEYS[1], 'owner', 'token', 'until', 'ttl', 'note', 'answer_step',
  'answer', 'cancel', 'state', 'attempts', 'ready', 'reason')
return {int(now), unpack(held, 1, 12)}
