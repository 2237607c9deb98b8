-- lg_list: checkpoints of a thread, in one namespace or every one, with their blobs and pending
-- writes (list).
-- KEYS[1] the thread's cps key, KEYS[2] its key prefix (see lg_common.lua).
-- ARGV[1] the namespace (escaped; ignored when ARGV[2] is '1')   ARGV[2] '1' = every namespace
-- ARGV[3] '' or a bound: '(' or '[' then a checkpoint id (escaped): only ids below it, or up to it
-- ARGV[4] per namespace, at most this many ('0' = all)   ARGV[5] only this checkpoint id ('' = any)
-- Returns a flat list of entries {member, record, blob values, write members} (see lg_get.lua),
-- namespace by namespace, each namespace newest (highest checkpoint id) first: the caller merges
-- them by checkpoint id. Ids are compared by Redis's lex ranges only (byte order), never in Lua.
-- Guarantees: read-only, one consistent view of the thread. Touches the thread keys derived from
-- KEYS[1] (same {bucket} tag, so the same slot); it has no check that can fail and writes nothing,
-- so no write happens before every check that can fail.
local t = thread_at(1)
local every, bound, limit, only = ARGV[2] == '1', ARGV[3], tonumber(ARGV[4]), ARGV[5]
local out = {}

local function from(ns)
  local upper = '(' .. ns .. '\1'
  if bound ~= '' then
    upper = string.sub(bound, 1, 1) .. ns .. '\0' .. string.sub(bound, 2)
  end
  local members
  if only ~= '' then
    local member = ns .. '\0' .. only
    members = redis.call('ZRANGEBYLEX', t.cps, '[' .. member, upper, 'LIMIT', 0, 1)
    if members[1] ~= member then
      return
    end
  elseif limit > 0 then
    members = redis.call('ZREVRANGEBYLEX', t.cps, upper, '[' .. ns .. '\0', 'LIMIT', 0, limit)
  else
    members = redis.call('ZREVRANGEBYLEX', t.cps, upper, '[' .. ns .. '\0')
  end
  for _, member in ipairs(members) do
    local e = entry(t, member)
    if e then
      out[#out + 1] = e
    end
  end
end

if every then
  local low = '-'
  while true do
    local first = redis.call('ZRANGEBYLEX', t.cps, low, '+', 'LIMIT', 0, 1)
    if #first == 0 then
      break
    end
    local ns = head(first[1])
    from(ns)
    low = '[' .. ns .. '\1'
  end
else
  from(ARGV[1])
end
return out
