-- queue_peek: when one workflow's slot bucket next needs a claim (for the hint sweep).
-- KEYS[1] the bucket's queue   KEYS[2] its lease-deadline index (same tag)
-- Returns {now, next}: the server clock, and the bucket's earliest ready time or lease deadline
-- (false: neither). Writes nothing.
local now, err = server_time()
if err then
  return err
end
return {int(now), next_attention(KEYS[1], KEYS[2])}
