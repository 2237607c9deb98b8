-- lg_common: helpers prepended to every lg_*.lua script by atomr_redis_state/langgraph/scripts.py;
-- not a script of its own. A LangGraph thread is five keys plus its bucket's thread index. Scripts
-- declare two KEYS per thread: its cps key and its key prefix <prefix>:lg:{bucket}:t:<thread>:
-- (which never exists as a key: while the slot migrates, Redis answers TRYAGAIN rather than run
-- a script with the thread split over two nodes). The other keys are derived from the cps key
-- (see atomr_redis_state/langgraph/keys.py):
--   cps      sorted set, all scores 0: ns \0 checkpoint_id, one per checkpoint (lex order)
--   cp       hash: ns \0 checkpoint_id -> run \2 refs \2 type \0 payload
--   b        hash: ns \0 channel \0 version -> type \0 value (one blob per channel version)
--   w        sorted set, all scores 0: ns \0 checkpoint_id \0 task \0 idx \0 channel \0 path \0 type \0 value
--   rm       sorted set, all scores 0: run \0 ns \0 checkpoint_id (which checkpoints a run made)
--   threads  the bucket's thread index: sorted set of thread ids, score = deadline ms (0 = none)
-- Every part is percent-escaped by the caller, so no part contains \0, \1, \2, ':', '{' or '}'.
-- refs lists the channel \0 version of every channel of the checkpoint, separated by \1.
-- The only keys a script derives are the run-index keys <bucket>r:<run> and the thread keys of
-- another thread of the same bucket: both carry the declared keys' {bucket} hash tag, so they
-- are in the declared keys' Redis Cluster slot.

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Plain (pattern-free) split of s on the one-byte separator sep.
local function split(s, sep)
  local out, i = {}, 1
  while true do
    local j = string.find(s, sep, i, true)
    if not j then
      out[#out + 1] = string.sub(s, i)
      return out
    end
    out[#out + 1] = string.sub(s, i, j - 1)
    i = j + 1
  end
end

-- The text before the first \0 of s (a namespace, or a run).
local function head(s)
  return string.sub(s, 1, string.find(s, '\0', 1, true) - 1)
end

-- The thread keys of thread id `thread` in the bucket whose key prefix is `bucket`.
local function thread_in(bucket, thread)
  local base = bucket .. 't:' .. thread .. ':'
  return {
    cps = base .. 'cps', cp = base .. 'cp', b = base .. 'b', w = base .. 'w', rm = base .. 'rm',
    threads = bucket .. 'threads', bucket = bucket,
  }
end

-- The thread whose cps key is KEYS[i] (KEYS[i + 1] is its key prefix).
local function thread_at(i)
  local cps = KEYS[i]
  local base = string.sub(cps, 1, -4)
  local bucket = string.sub(cps, 1, string.find(cps, '}:', 1, true) + 1)
  return {
    cps = cps, cp = base .. 'cp', b = base .. 'b', w = base .. 'w', rm = base .. 'rm',
    threads = bucket .. 'threads', bucket = bucket,
  }
end

local function run_key(t, run)
  return t.bucket .. 'r:' .. run
end

-- cmd key list[first..#list] (first defaults to 1), in chunks of 1000 values (Lua's unpack
-- fails near 8,000 values).
local function chunked(cmd, key, list, first)
  for i = first or 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 999, #list)))
  end
end

-- run and refs (a list of channel \0 version) of a stored checkpoint record.
local function record_parts(rec)
  local i = string.find(rec, '\2', 1, true)
  local j = string.find(rec, '\2', i + 1, true)
  local refs = string.sub(rec, i + 1, j - 1)
  if refs == '' then
    return string.sub(rec, 1, i - 1), {}
  end
  return string.sub(rec, 1, i - 1), split(refs, '\1')
end

-- A checkpoint as returned to the client: {member, record, blob values (in refs order), writes}.
local function entry(t, member)
  local rec = redis.call('HGET', t.cp, member)
  if not rec then
    return false
  end
  local ns = head(member)
  local _, refs = record_parts(rec)
  local blobs = {}
  for i = 1, #refs, 1000 do
    local fields = {}
    for k = i, math.min(i + 999, #refs) do
      fields[#fields + 1] = ns .. '\0' .. refs[k]
    end
    for _, v in ipairs(redis.call('HMGET', t.b, unpack(fields))) do
      blobs[#blobs + 1] = v
    end
  end
  local writes = redis.call('ZRANGEBYLEX', t.w, '[' .. member .. '\0', '(' .. member .. '\1')
  return {member, rec, blobs, writes}
end

-- Call cmd on an index key (a run key or the thread index) and keep that key alive at least
-- until deadline (forever when deadline is nil); a key created here takes the deadline.
local function index_add(key, deadline, cmd, a, b)
  local expires = redis.call('PEXPIRETIME', key)
  if b == nil then
    redis.call(cmd, key, a)
  else
    redis.call(cmd, key, a, b)
  end
  if deadline == nil then
    if expires >= 0 then
      redis.call('PERSIST', key)
    end
  elseif expires == -2 or (expires >= 0 and expires < deadline) then
    redis.call('PEXPIREAT', key, deadline)
  end
end

-- fn(run) for each distinct run listed in the thread's rm set.
local function each_run(t, fn)
  local low = '-'
  while true do
    local first = redis.call('ZRANGEBYLEX', t.rm, low, '+', 'LIMIT', 0, 1)
    if #first == 0 then
      return
    end
    local run = head(first[1])
    fn(run)
    low = '[' .. run .. '\1'
  end
end

-- Before a write: the thread's deadline after it (nil = none), whether every key must move to
-- it, whether the thread is new, and the server time. With a ttl, a thread keeps its deadline
-- while at least ttl is left, else every key moves to now + 2 * ttl; without one, a thread that
-- already expires keeps its deadline.
local function begin_write(ttl, t)
  local old = redis.call('PEXPIRETIME', t.cps)
  if ttl > 0 then
    local now = now_ms()
    if old >= 0 and old - now >= ttl then
      return old, false, false, now
    end
    return now + 2 * ttl, true, old == -2, now
  end
  if old >= 0 then
    return old, false, false, 0
  end
  return nil, false, old == -2, 0
end

-- After a write: every key of the thread shares the deadline; on a move, the run-index keys of
-- every run of the thread and the thread index follow it, and expired threads leave the index.
local function finish_write(t, thread, deadline, refresh, is_new, now)
  if deadline then
    for _, key in ipairs({t.cps, t.cp, t.b, t.w, t.rm}) do
      redis.call('PEXPIREAT', key, deadline)
    end
  end
  if refresh then
    each_run(t, function(run)
      index_add(run_key(t, run), deadline, 'SADD', thread)
    end)
    redis.call('ZREMRANGEBYSCORE', t.threads, 1, now)
  end
  if refresh or is_new then
    index_add(t.threads, deadline, 'ZADD', deadline or 0, thread)
  end
end

-- Remove a thread whole: its keys, its run-index entries, its thread-index entry.
local function delete_thread(t, thread)
  each_run(t, function(run)
    redis.call('SREM', run_key(t, run), thread)
  end)
  redis.call('DEL', t.cps, t.cp, t.b, t.w, t.rm)
  redis.call('ZREM', t.threads, thread)
end

-- Remove checkpoints (members ns \0 checkpoint_id) with their writes, then the blobs no remaining
-- checkpoint uses, and the run-index entries of runs left without a checkpoint in the thread.
-- A thread left without checkpoints is removed whole. Returns how many checkpoints went.
local function drop_checkpoints(t, thread, members)
  if #members == 0 then
    return 0
  end
  local runs = {}
  local dropped = 0
  for _, member in ipairs(members) do
    local rec = redis.call('HGET', t.cp, member)
    if rec then
      local run = record_parts(rec)
      if run ~= '' then
        redis.call('ZREM', t.rm, run .. '\0' .. member)
        runs[run] = true
      end
      redis.call('HDEL', t.cp, member)
      dropped = dropped + 1
    end
    redis.call('ZREM', t.cps, member)
    redis.call('ZREMRANGEBYLEX', t.w, '[' .. member .. '\0', '(' .. member .. '\1')
  end
  if redis.call('EXISTS', t.cps) == 0 then
    delete_thread(t, thread)
    for run in pairs(runs) do
      redis.call('SREM', run_key(t, run), thread)
    end
    return dropped
  end
  for run in pairs(runs) do
    if #redis.call('ZRANGEBYLEX', t.rm, '[' .. run .. '\0', '(' .. run .. '\1', 'LIMIT', 0, 1) == 0 then
      redis.call('SREM', run_key(t, run), thread)
    end
  end
  local used = {}
  local flat = redis.call('HGETALL', t.cp)
  for i = 1, #flat, 2 do
    local ns = head(flat[i])
    local _, refs = record_parts(flat[i + 1])
    for _, ref in ipairs(refs) do
      used[ns .. '\0' .. ref] = true
    end
  end
  local stale = {}
  for _, field in ipairs(redis.call('HKEYS', t.b)) do
    if not used[field] then
      stale[#stale + 1] = field
    end
  end
  chunked('HDEL', t.b, stale)
  return dropped
end

-- Everything a thread holds, for copying: {cps members, cp fields and values, b fields and
-- values, w members, rm members}.
local function export(t)
  return {
    redis.call('ZRANGE', t.cps, 0, -1), redis.call('HGETALL', t.cp),
    redis.call('HGETALL', t.b), redis.call('ZRANGE', t.w, 0, -1), redis.call('ZRANGE', t.rm, 0, -1),
  }
end

local function scored(members)
  local out = {}
  for _, m in ipairs(members) do
    out[#out + 1] = 0
    out[#out + 1] = m
  end
  return out
end

-- Merge exported data into thread t (checkpoints with the same id are replaced). Returns how
-- many checkpoints were copied; an empty export writes nothing.
local function import(t, thread, ttl, data)
  if #data[1] == 0 then
    return 0
  end
  local deadline, refresh, is_new, now = begin_write(ttl, t)
  chunked('ZADD', t.cps, scored(data[1]))
  chunked('HSET', t.cp, data[2])
  chunked('HSET', t.b, data[3])
  chunked('ZADD', t.w, scored(data[4]))
  chunked('ZADD', t.rm, scored(data[5]))
  if not refresh then
    each_run(t, function(run)
      index_add(run_key(t, run), deadline, 'SADD', thread)
    end)
  end
  finish_write(t, thread, deadline, refresh, is_new, now)
  return #data[1]
end
