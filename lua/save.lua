-- save: write (upsert) one snapshot of a run.
-- KEYS[1] the run's steps sorted set   KEYS[2] the snapshot hash
-- KEYS[3] the run-index bucket         KEYS[4] the run's snapshot-key prefix
-- KEYS[5] the run's record hash (lease, fencing counter)
-- KEYS[6] the run's meta hash (super-step -> "<timestamp> <label>", what list reads)
-- ARGV[1] super-step   ARGV[2] exclusive-save token ('' = not exclusive)
-- ARGV[3] ttl in ms ('0' = none)   ARGV[4] keep_last ('0' = keep all)   ARGV[5] run id
-- ARGV[6] lease fencing token ('' = no lease)
-- ARGV[7] hold ('' = follow the ttl, '-1' = keep the run forever, N = keep it N ms from now)
-- ARGV[8] the workflow's event channel (a shard channel with the same hash tag)
-- ARGV[9] the event to publish there (JSON; '' = none)
-- ARGV[10] this snapshot's "<timestamp> <label>" (its field in the meta hash)
-- ARGV[11..] field, value, ... (with ':w' = the exclusive-save token, if any)
-- Every key is declared or derived from KEYS[4] and the run's own sorted set, or is the
-- workflow registry bucket derived from KEYS[3] by index_run (same hash tag): one slot.
-- Checks first, in this order, and no write happens before every check that can fail has passed:
--   an exclusive save whose step already holds this very save's token is a retry after a lost
--   reply: it returns 0 and writes nothing (the token names the snapshot and the lease);
--   a save carrying a lease fails with LEASELOST unless that lease is the run's live lease, and
--   with RUNNOTFOUND when the run has no snapshot (except at super-step 0, which creates it);
--   a save without a lease fails with LEASEHELD <until> <owner> while someone holds a live lease;
--   a save carrying a lease on a run someone asked to cancel (cancel.lua) fails with CANCELLED;
--   then an exclusive save of an existing step fails with CONFLICT (so a stale worker whose
--   step was saved by the new owner always learns that its lease is lost);
--   a user without +time fails with NOPERM; over maxmemory (noeviction) it fails with OOM.
-- The checks hold: nothing is written before every one of them has passed.
-- Then, atomically: the hash is replaced whole, the step listed once, and its timestamp and label
-- kept in the meta hash (a run that is new starts a new meta hash). With keep_last, only the
-- highest keep_last steps remain. With a ttl, every key of the run shares one deadline between
-- ttl and 2*ttl from now: when less than ttl is left, all keys move to now + 2*ttl together
-- (O(steps), at most once per ttl; otherwise O(1)); a save carrying a lease moves them no earlier
-- than the lease's deadline (see keep_for_lease in _common.lua). Without a ttl, a run that already expires
-- keeps its deadline, so its keys still expire together. A hold moves every key of the run to
-- now + hold (or removes their expiry). The run is added to its run-index bucket when it is new,
-- and the bucket's deadline follows the run's whenever that moves; when a hold with no expiry
-- ends, the bucket gets back the latest deadline of its runs (see restore_index_deadline).
local steps, snapshot, index, snapshot_prefix, record = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local meta = KEYS[6]
local step, token = ARGV[1], ARGV[2]
local ttl, keep_last = tonumber(ARGV[3]), tonumber(ARGV[4])
local lease, hold = ARGV[6], ARGV[7]

local taken = token ~= '' and redis.call('ZSCORE', steps, step)
if taken and redis.call('HGET', snapshot, ':w') == token then
  return 0
end

local held = redis.call('HMGET', record, 'owner', 'token', 'until', 'cancel')
local now = 0
if ttl > 0 or hold ~= '' or held[3] then
  local err
  now, err = server_time()
  if err then
    return err
  end
end
local refused = lease_refusal(held, lease, now)
if refused then
  return refused
end
if lease ~= '' then
  if step ~= '0' and redis.call('EXISTS', steps) == 0 then
    return redis.error_reply('RUNNOTFOUND the run has no checkpoint')
  end
  if held[4] then
    return redis.error_reply('CANCELLED the run was cancelled')
  end
end
if taken then
  return redis.error_reply('CONFLICT super-step ' .. step .. ' is already checkpointed')
end

local run_expires = redis.call('PEXPIRETIME', steps)
local refresh = ttl > 0 and not (run_expires >= 0 and run_expires - now >= ttl)

refuse_if_out_of_memory(steps)
if token == '' then
  redis.call('DEL', snapshot)
end
if run_expires == -2 then
  redis.call('DEL', meta)
end
hset_pairs(snapshot, 11)
redis.call('ZADD', steps, step, step)
redis.call('HSET', meta, step, ARGV[10])

if keep_last > 0 then
  local excess = redis.call('ZCARD', steps) - keep_last
  if excess > 0 then
    for _, old in ipairs(redis.call('ZRANGE', steps, 0, excess - 1)) do
      redis.call('DEL', snapshot_prefix .. old)
      redis.call('HDEL', meta, old)
    end
    redis.call('ZREMRANGEBYRANK', steps, 0, excess - 1)
  end
end

if hold ~= '' or refresh then
  local deadline = nil
  if hold == '' then
    deadline = now + 2 * ttl
    if lease ~= '' then
      deadline = math.max(deadline, tonumber(held[3]))
    end
  elseif hold ~= '-1' then
    deadline = now + tonumber(hold)
  end
  expire_run(steps, snapshot_prefix, meta, record, index, ARGV[5], deadline)
  if hold == '' and run_expires == -1 then
    restore_index_deadline(index)
  end
else
  if run_expires >= 0 then
    redis.call('PEXPIREAT', snapshot, int(run_expires))
    redis.call('PEXPIREAT', meta, int(run_expires))
  end
  if run_expires == -2 then
    redis.call('PERSIST', record)
    index_run(index, ARGV[5], nil)
  end
end
publish(ARGV[8], ARGV[9])
return 1
