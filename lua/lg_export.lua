-- lg_export: everything one thread holds, for copy_thread across cluster slots (see lg_import).
-- KEYS[1] the thread's cps key, KEYS[2] its key prefix (see lg_common.lua).
-- ARGV none. Returns {cps members, cp fields and values, b fields and values, w members, rm members}.
-- Guarantees: read-only, one consistent view of the thread. Touches the thread keys derived from
-- KEYS[1] (same {bucket} tag, so the same slot); it has no check that can fail and writes nothing.
-- It checks nothing that can fail, so no write happens before every check that can fail.
return export(thread_at(1))
