-- release_lease: give a run up, leaving a note for whoever looks next.
-- KEYS[1] the run's record hash   KEYS[2] the run's steps sorted set (same slot: same run)
-- ARGV[1] the lease's fencing token
-- ARGV[2] '1' to store a note, '0' to clear it, 'keep' to leave the note there is
-- ARGV[3] the note (JSON), when ARGV[2] is '1'
-- Returns 1 when released (or released before by this very lease: a retry gets the same
-- answer), 0 when the run's lease is no longer this one (taken over, or the run deleted): then
-- nothing is written. The fencing counter stays, so the next token is still larger. Storing a
-- note over maxmemory (noeviction) fails with OOM before any write.
local record = KEYS[1]
if redis.call('HGET', record, 'token') ~= ARGV[1] then
  return 0
end
if ARGV[2] == '1' then
  refuse_if_out_of_memory(KEYS[2])
end
redis.call('HDEL', record, 'owner', 'until')
if ARGV[2] == '1' then
  redis.call('HSET', record, 'note', ARGV[3])
elseif ARGV[2] == '0' then
  redis.call('HDEL', record, 'note')
end
return 1
