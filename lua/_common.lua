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

-- The refusal of a call on a run whose record holds held = {owner, token, until} (HMGET), at
-- now: with a lease (fencing token, '' = none), LEASELOST unless it is the run's live lease;
-- without one, LEASEHELD <until> <owner> while someone holds a live lease. nil: go on.
local function lease_refusal(held, lease, now)
  local leased = held[1] and tonumber(held[3]) > now
  if lease ~= '' then
    if not leased or held[2] ~= lease then
      return redis.error_reply('LEASELOST the lease on this run was lost')
    end
  elseif leased then
    return redis.error_reply('LEASEHELD ' .. held[3] .. ' ' .. held[1])
  end
  return nil
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

-- Add member to a sorted set (scores 0, read by lex range) and keep the set alive at least as
-- long as the run that needs it (until deadline; forever when deadline is nil). A new set takes
-- the run's deadline.
local function add_kept_alive(key, member, deadline)
  local expires = redis.call('PEXPIRETIME', key)
  redis.call('ZADD', key, 0, member)
  if deadline == nil then
    if expires >= 0 then
      redis.call('PERSIST', key)
    end
  elseif expires == -2 or (expires >= 0 and expires < deadline) then
    redis.call('PEXPIREAT', key, int(deadline))
  end
end

-- An id as keys.py escapes it for one ':'-separated key segment.
local function escape_id(id)
  return (string.gsub(id, '[%%:{}]', function(c)
    return string.format('%%%02X', string.byte(c))
  end))
end

-- An escaped key segment back to the id.
local function unescape_id(segment)
  return (string.gsub(segment, '%%(%x%x)', function(hex)
    return string.char(tonumber(hex, 16))
  end))
end

-- Add run_id to a run-index bucket (P:{T}:W:runs), and workflow W to the prefix's workflow
-- registry bucket of the same tag (P:{T}:workflows, derived from the index key: same hash tag,
-- so the same slot), each kept alive at least as long as the run.
local function index_run(index, run_id, deadline)
  add_kept_alive(index, run_id, deadline)
  local tagged, workflow = string.match(index, '^(.-}:)(.*):runs$')
  add_kept_alive(tagged .. 'workflows', unescape_id(workflow), deadline)
end

-- Remove run_id from its run-index bucket; when that empties the bucket (Redis deletes it),
-- remove the workflow from the registry bucket of the same tag (derived as in index_run).
local function unindex_run(index, run_id)
  local removed = redis.call('ZREM', index, run_id)
  if removed == 1 and redis.call('EXISTS', index) == 0 then
    local tagged, workflow = string.match(index, '^(.-}:)(.*):runs$')
    redis.call('ZREM', tagged .. 'workflows', unescape_id(workflow))
  end
  return removed
end

-- Move every key of a run (its snapshots, steps set, meta hash and record) to one deadline (ms;
-- nil: no expiry), and keep its run-index bucket alive at least as long. O(steps).
local function expire_run(steps, snapshot_prefix, meta, record, index, run_id, deadline)
  for _, s in ipairs(redis.call('ZRANGE', steps, 0, -1)) do
    expire_at(snapshot_prefix .. s, deadline)
  end
  expire_at(steps, deadline)
  expire_at(meta, deadline)
  if redis.call('EXISTS', record) == 1 then
    expire_at(record, deadline)
  end
  index_run(index, run_id, deadline)
end

-- A live lease (deadline lease_until, ttl lease_ttl, ms) keeps its run: when the run's shared
-- deadline comes before the lease's, or (with a store ttl, 0 = none) less than ttl from now,
-- every key of the run moves to the later of now + 2 * ttl and lease_until + lease_ttl, so
-- renewals every third of the lease move it at most once per lease_ttl. O(1) unless it moves; a
-- run with no expiry (or no keys) is left alone.
local function keep_for_lease(steps, snapshot_prefix, meta, record, index, run_id, now, ttl,
                              lease_until, lease_ttl)
  local expires = redis.call('PEXPIRETIME', steps)
  if expires < 0 or expires >= math.max(now + ttl, lease_until) then
    return
  end
  local deadline = math.max(now + 2 * ttl, lease_until + lease_ttl)
  expire_run(steps, snapshot_prefix, meta, record, index, run_id, deadline)
end

-- When a run held with no expiry goes back on a ttl, its run-index bucket (kept without expiry
-- while any run in it was held) takes the latest deadline of its runs again, or stays without one
-- while any of them has none; and so does the workflow registry bucket of the same tag, from its
-- workflows' run-index buckets. The keys read are derived from the bucket key (the runs' steps
-- keys, the registry and its workflows' index buckets), so they share its hash tag: one slot.
-- O(runs in the bucket + workflows in the registry bucket), and only when a hold ends.
local function restore_latest_deadline(key, members, suffix)
  if redis.call('PEXPIRETIME', key) ~= -1 then
    return
  end
  local latest = 0
  for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    local expires = redis.call('PEXPIRETIME', members .. escape_id(member) .. suffix)
    if expires == -1 then
      return
    end
    if expires > latest then
      latest = expires
    end
  end
  if latest > 0 then
    redis.call('PEXPIREAT', key, int(latest))
  end
end

local function restore_index_deadline(index)
  restore_latest_deadline(index, string.sub(index, 1, -5), ':steps')
  local tagged = string.match(index, '^(.-}:)')
  restore_latest_deadline(tagged .. 'workflows', tagged, ':runs')
end

-- Give owner the run's lease at server time now, for ttl ms: extended with its token when the
-- owner already holds it live (held = HMGET record owner token until), otherwise with a new
-- fencing token, the record's counter plus one or the server's clock in microseconds if that is
-- larger (a run deleted or expired and started again loses its counter, and its new tokens must
-- still be larger than any an old worker may hold). The record of an existing run keeps the
-- run's deadline, and the run's keys are kept at least as long as the lease (keep_for_lease,
-- with keep = {snapshot_prefix, meta, index, run_id, store ttl}); a record made for a run not
-- saved yet (a start) lives as long as the lease. Callers check everything (and call
-- refuse_if_out_of_memory) first. Returns token, deadline.
local function grant_lease(record, steps, owner, ttl, now, held, keep)
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
    keep_for_lease(steps, keep[1], keep[2], record, keep[3], keep[4], now, keep[5], expires, ttl)
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

-- The record and steps keys of a run, from its bucket's queue key (P:{T}:W:queue), and what
-- grant_lease keeps alive with the lease (its snapshot prefix, meta hash, run-index bucket, id and
-- the store's ttl): they share the queue key's hash tag, so every key a queue script derives
-- stays in the declared slot.
local function run_keys_of(queue, run_id, store_ttl)
  local workflow = string.sub(queue, 1, -6)
  local base = workflow .. escape_id(run_id) .. ':'
  local keep = {base .. 'snap:', base .. 'meta', workflow .. 'runs', run_id, store_ttl or 0}
  return base .. 'run', base .. 'steps', keep
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
