-- Helpers prepended to every script by atomr_redis_state/store/redis/scripts.py (not a script).
-- Snapshot hashes are named <snapshot prefix><super-step>: the prefix is a declared KEYS entry
-- and the super-steps come from the run's own sorted set, so every such key shares the declared
-- keys' hash tag (one Redis Cluster slot). The prefix never exists as a key, so while that slot
-- migrates between nodes Redis answers every such script with TRYAGAIN (redis-py retries) rather
-- than run it with the run's keys split across two nodes.

-- The server's clock in milliseconds: one clock for every worker, whatever their own clocks say.
-- Returns nil and an error reply naming the missing permission when the user may not call TIME
-- (it is in neither @read nor @write): scripts call it before any write and return that error.
local function server_time()
  local t = redis.pcall('TIME')
  if t.err then
    return nil, redis.error_reply('NOPERM the Redis user needs +time: the store reads the server clock')
  end
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A whole number of milliseconds as Redis takes it: Lua 5.1 would print a number of 15 or more
-- digits in exponent form, which PEXPIREAT refuses.
local function int(ms)
  return string.format('%.0f', ms)
end

-- Redis checks maxmemory only for a script's memory-using commands that come before its first
-- write. This ZADD XX of a member that never exists changes nothing, but is checked: called
-- before the first write, it makes a script over the limit fail whole, with nothing written.
local function refuse_if_out_of_memory(sorted_set)
  redis.call('ZADD', sorted_set, 'XX', 0, '')
end

-- Tell subscribers of a shard channel (same hash tag as the keys: the slot's shard only) what
-- happened. Never fails the script: with nobody listening, or no permission, it is skipped.
local function publish(channel, payload)
  if payload ~= '' then
    redis.pcall('SPUBLISH', channel, payload)
  end
end

-- HSET the (field, value) pairs ARGV[first..#ARGV] on key, in chunks: Lua's unpack fails near
-- 8,000 values, and a snapshot may have more than 10,000 channels.
local function hset_pairs(key, first)
  for i = first, #ARGV, 1000 do
    redis.call('HSET', key, unpack(ARGV, i, math.min(i + 999, #ARGV)))
  end
end

-- Expire key at the absolute deadline (ms), or never when deadline is nil.
local function expire_at(key, deadline)
  if deadline then
    redis.call('PEXPIREAT', key, int(deadline))
  else
    redis.call('PERSIST', key)
  end
end

-- Add run_id to a run-index bucket and keep the bucket alive at least as long as the run
-- (until deadline; forever when deadline is nil). A new bucket takes the run's deadline.
local function index_run(index, run_id, deadline)
  local expires = redis.call('PEXPIRETIME', index)
  redis.call('ZADD', index, 0, run_id)
  if deadline == nil then
    if expires >= 0 then
      redis.call('PERSIST', index)
    end
  elseif expires == -2 or (expires >= 0 and expires < deadline) then
    redis.call('PEXPIREAT', index, int(deadline))
  end
end

-- An id as keys.py escapes it for one ':'-separated key segment.
local function escape_id(id)
  return (string.gsub(id, '[%%:{}]', function(c)
    return string.format('%%%02X', string.byte(c))
  end))
end

-- When a run held with no expiry goes back on a ttl, its run-index bucket (kept without expiry
-- while any run in it was held) takes the latest deadline of its runs again, or stays without one
-- while any of them has none. The runs' steps keys are derived from the bucket key (it ends in
-- 'runs' after the workflow's key prefix), so they share its hash tag: one slot. O(runs in the
-- bucket), and only when a hold ends.
local function restore_index_deadline(index)
  if redis.call('PEXPIRETIME', index) ~= -1 then
    return
  end
  local workflow_prefix = string.sub(index, 1, -5)
  local latest = 0
  for _, run_id in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    local expires = redis.call('PEXPIRETIME', workflow_prefix .. escape_id(run_id) .. ':steps')
    if expires == -1 then
      return
    end
    if expires > latest then
      latest = expires
    end
  end
  if latest > 0 then
    redis.call('PEXPIREAT', index, int(latest))
  end
end

-- Give owner the run's lease at server time now, for ttl ms: extended with its token when the
-- owner already holds it live (held = HMGET record owner token until), otherwise with a new
-- fencing token, the record's counter plus one or the server's clock in microseconds if that is
-- larger (a run deleted or expired and started again loses its counter, and its new tokens must
-- still be larger than any an old worker may hold). The record of an existing run keeps the
-- run's deadline; one made for a run not saved yet (a start) lives as long as the lease. Callers
-- check everything (and call refuse_if_out_of_memory) first. Returns token, deadline.
local function grant_lease(record, steps, owner, ttl, now, held)
  local live = held[1] and tonumber(held[3]) > now
  local record_expires = redis.call('PEXPIRETIME', record)
  local token = held[2]
  if not (live and held[1] == owner) then
    local fence = tonumber(redis.call('HGET', record, 'fence') or '0')
    local clock = redis.call('TIME')
    token = int(math.max(fence + 1, tonumber(clock[1]) * 1000000 + tonumber(clock[2])))
    redis.call('HSET', record, 'fence', token)
  end
  local expires = now + ttl
  redis.call('HSET', record, 'owner', owner, 'token', token, 'until', int(expires), 'ttl', int(ttl))
  if redis.call('EXISTS', steps) == 1 then
    local run_expires = redis.call('PEXPIRETIME', steps)
    if run_expires >= 0 then
      redis.call('PEXPIREAT', record, int(run_expires))
    end
  elseif record_expires == -2 or (record_expires >= 0 and record_expires < expires) then
    redis.call('PEXPIREAT', record, int(expires))
  end
  return token, expires
end

-- A queue event (see store/types.py EventKind) as the JSON the store publishes.
local function queue_event(kind, workflow_id, run_id, label, now)
  return '{"kind":' .. cjson.encode(kind) .. ',"workflow_id":' .. cjson.encode(workflow_id)
    .. ',"run_id":' .. cjson.encode(run_id) .. ',"super_step":null,"label":'
    .. cjson.encode(label) .. ',"timestamp_ms":' .. int(now) .. ',"source_run_id":null}'
end

-- The record and steps keys of a run, from its bucket's queue key (P:{T}:W:queue): they share
-- the queue key's hash tag, so every key a queue script derives stays in the declared slot.
local function run_keys_of(queue, run_id)
  local base = string.sub(queue, 1, -6) .. escape_id(run_id) .. ':'
  return base .. 'run', base .. 'steps'
end

-- When a bucket next needs a claim: its earliest queued run, or its earliest lease deadline
-- (a takeover); false when neither exists.
local function next_attention(queue, leased)
  local first = false
  for _, key in ipairs({queue, leased}) do
    local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if head[2] and (not first or tonumber(head[2]) < first) then
      first = tonumber(head[2])
    end
  end
  return first and int(first) or false
end

-- Take run_id out of every index of its bucket (KEYS 1..5: queue, leased, paused, dead, blocked).
local function unindex(run_id)
  for i = 1, 5 do
    redis.call('ZREM', KEYS[i], run_id)
  end
end

-- A record hash just written without an expiry (made by that write) takes its run's deadline,
-- so it never outlives the run's other keys.
local function follow_run_deadline(record, steps)
  if redis.call('PEXPIRETIME', record) == -1 then
    local run_expires = redis.call('PEXPIRETIME', steps)
    if run_expires >= 0 then
      redis.call('PEXPIREAT', record, run_expires)
    end
  end
end
