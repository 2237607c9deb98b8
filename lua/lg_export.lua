-- lg_export: everything one thread holds, for copy_thread across cluster slots (see lg_import).
-- KEYS[1..6] the thread: cps cp b w rm, and its bucket's thread index (see lg_common.lua).
-- ARGV none. Returns {cps members, cp fields and values, b fields and values, w members, rm members}.
-- Guarantees: read-only, one consistent view of the thread. Touches only KEYS; it has no check
-- that can fail and writes nothing.
return export(thread_at(1))
