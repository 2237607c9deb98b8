-- run_record: a run's lease, note and queue record, read against the server's clock.
-- KEYS[1] the run's record hash
-- Returns {now, owner, token, until, ttl, note, state, attempts, ready, reason, cancel, answer}
-- (false for a missing field). Writes nothing.
local now, err = server_time()
if err then
  return err
end
local held = redis.call('HMGET', KEYS[1], 'owner', 'token', 'until', 'ttl', 'note', 'state',
  'attempts', 'ready', 'reason', 'cancel', 'answer')
return {int(now), held[1], held[2], held[3], held[4], held[5], held[6], held[7], held[8],
  held[9], held[10], held[11]}
