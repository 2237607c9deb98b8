-- save: write (upsert) one snapshot of a run.
-- KEYS[1] the run's steps sorted set   KEYS[2] the snapshot hash
-- KEYS[3] the run-index bucket         KEYS[4] the run's snapshot-key prefix
-- ARGV[1] super-step   ARGV[2] exclusive-save token ('' = not exclusive)
-- ARGV[3] ttl in ms ('0' = none)   ARGV[4] keep_last ('0' = keep all)   ARGV[5] run id
-- ARGV[6..] field, value, ... (with ':w' = the token, if any)
-- Guarantees, atomically: an exclusive save of an existing step changes nothing and fails with
-- CONFLICT, unless that step holds this very save's token (a retry after a lost reply: returns
-- 0); otherwise the hash is replaced whole and the step listed once. With keep_last, only the
-- highest keep_last steps remain. With a ttl, every key of the run shares one deadline between
-- ttl and 2*ttl from now: when less than ttl is left, all keys move to now + 2*ttl together
-- (O(steps), at most once per ttl; otherwise O(1)). Without a ttl, a run that already expires
-- keeps its deadline, so its keys still expire together. The run is added to its run-index
-- bucket when it is new, and the bucket's deadline follows the run's whenever that moves.
local steps, snapshot, index, snapshot_prefix = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local step, token = ARGV[1], ARGV[2]
local ttl, keep_last = tonumber(ARGV[3]), tonumber(ARGV[4])

if token ~= '' and redis.call('ZSCORE', steps, step) then
  if redis.call('HGET', snapshot, ':w') == token then
    return 0
  end
  return redis.error_reply('CONFLICT super-step ' .. step .. ' is already checkpointed')
end

local now = 0
if ttl > 0 then
  now = now_ms()
end
local run_expires = redis.call('PEXPIRETIME', steps)
local refresh = ttl > 0 and not (run_expires >= 0 and run_expires - now >= ttl)

if token == '' then
  redis.call('DEL', snapshot)
end
hset_pairs(snapshot, 6)
redis.call('ZADD', steps, step, step)

if keep_last > 0 then
  local excess = redis.call('ZCARD', steps) - keep_last
  if excess > 0 then
    for _, old in ipairs(redis.call('ZRANGE', steps, 0, excess - 1)) do
      redis.call('DEL', snapshot_prefix .. old)
    end
    redis.call('ZREMRANGEBYRANK', steps, 0, excess - 1)
  end
end

if refresh then
  local deadline = now + 2 * ttl
  for _, s in ipairs(redis.call('ZRANGE', steps, 0, -1)) do
    redis.call('PEXPIREAT', snapshot_prefix .. s, deadline)
  end
  redis.call('PEXPIREAT', steps, deadline)
  index_run(index, ARGV[5], deadline)
else
  if run_expires >= 0 then
    redis.call('PEXPIREAT', snapshot, run_expires)
  end
  if run_expires == -2 then
    index_run(index, ARGV[5], nil)
  end
end
return 1
