-- lg_copy: copy every checkpoint, blob and pending write of one thread into another (copy_thread).
-- KEYS[1] the source thread's cps key, KEYS[2] its key prefix, KEYS[3] and KEYS[4] the same of
-- the target thread (see lg_common.lua). Used only when both are in one slot (standalone Redis,
-- or the same bucket on a cluster; otherwise lg_export then lg_import).
-- ARGV[1] ttl in ms ('0' = none)   ARGV[2] target thread id (escaped)
-- Guarantees, atomically: the target gets every checkpoint of the source (same ids, metadata,
-- parents, blobs, writes; same ids are replaced, others kept), its run-index entries, and a
-- deadline of its own (see begin_write); the source is unchanged; an empty or missing source
-- writes nothing. It has no check that can fail. Returns how many checkpoints were copied.
return import(thread_at(3), ARGV[2], tonumber(ARGV[1]), export(thread_at(1)))
