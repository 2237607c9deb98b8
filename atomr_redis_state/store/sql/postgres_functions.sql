-- The Postgres store's server-side functions: one call, one round trip, one transaction each.
-- Created (or replaced) by PostgresCheckpointer.setup() in the store's schema; @schema@ is its
-- quoted name. They are the Redis store's Lua scripts, statement for statement: every check that
-- can fail comes before any write, and a failed check raises (so the whole call rolls back and
-- nothing is written), with these SQLSTATEs, read by postgres.py:
--   ARCON  an exclusive save of a step that exists (or a fork into a run that exists)
--   ARLST  a lease that is not the run's live lease
--   ARHLD  a live lease of another owner (DETAIL: its deadline in ms, HINT: its owner)
--   ARRNF  the run has no snapshot
--   ARCNF  the snapshot to fork does not exist
-- Times are the database server's clock (clock_timestamp()), in ms since the epoch: one clock
-- for every worker. A run's row in atomr_runs carries its deadline (NULL: never expires); a run
-- whose deadline passed is invisible to every read at once, and deleted by the next write that
-- touches it, or by the sweep of a save or fork that starts a run (atomr_sweep).

CREATE OR REPLACE FUNCTION @schema@.atomr_now() RETURNS bigint
LANGUAGE sql VOLATILE AS $$
  SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint
$$;

-- The run's row, locked for this transaction (FOR UPDATE): concurrent calls on one run take
-- turns, as Redis runs scripts one at a time. An expired run is deleted first. With p_create, a
-- missing run gets a fresh row (steps = 0 and fence = 0: nothing else has those), which the
-- caller fills, or which disappears with the transaction if a check fails; without, the result
-- is a row of NULLs.
CREATE OR REPLACE FUNCTION @schema@.atomr_lock_run(
  p_wf text, p_run text, p_now bigint, p_create boolean
) RETURNS @schema@.atomr_runs
LANGUAGE plpgsql AS $$
DECLARE
  r @schema@.atomr_runs;
BEGIN
  LOOP
    SELECT * INTO r FROM @schema@.atomr_runs
      WHERE workflow_id = p_wf AND run_id = p_run FOR UPDATE;
    IF FOUND THEN
      IF r.deadline_ms IS NULL OR r.deadline_ms > p_now THEN
        RETURN r;
      END IF;
      DELETE FROM @schema@.atomr_snapshots WHERE workflow_id = p_wf AND run_id = p_run;
      DELETE FROM @schema@.atomr_runs WHERE workflow_id = p_wf AND run_id = p_run;
    END IF;
    IF NOT p_create THEN
      RETURN NULL;
    END IF;
    INSERT INTO @schema@.atomr_runs (workflow_id, run_id) VALUES (p_wf, p_run)
      ON CONFLICT DO NOTHING RETURNING * INTO r;
    IF FOUND THEN
      RETURN r;
    END IF;
    -- Another transaction created the row meanwhile: lock that one.
  END LOOP;
END
$$;

-- Announce an event to the workflow's LISTEN channel (sent when the transaction commits). A
-- payload too long for NOTIFY (8,000 bytes) is kept in atomr_events for a minute and announced
-- as '#<id>', which a watcher reads from there.
CREATE OR REPLACE FUNCTION @schema@.atomr_publish(p_channel text, p_event text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  event_id bigint;
BEGIN
  IF octet_length(p_event) < 8000 THEN
    PERFORM pg_notify(p_channel, p_event);
  ELSE
    DELETE FROM @schema@.atomr_events WHERE created_ms < @schema@.atomr_now() - 60000;
    INSERT INTO @schema@.atomr_events (payload, created_ms)
      VALUES (p_event, @schema@.atomr_now()) RETURNING id INTO event_id;
    PERFORM pg_notify(p_channel, '#' || event_id);
  END IF;
END
$$;

-- Delete up to 100 runs whose deadline passed (already invisible); runs others have locked are
-- left for later. Called by every save or fork that starts a run: the sweep keeps pace with the
-- runs being started, at the cost of one index probe when nothing expired.
CREATE OR REPLACE FUNCTION @schema@.atomr_sweep(p_now bigint) RETURNS void
LANGUAGE sql AS $$
  WITH gone AS (
    DELETE FROM @schema@.atomr_runs WHERE (workflow_id, run_id) IN (
      SELECT workflow_id, run_id FROM @schema@.atomr_runs
      WHERE deadline_ms <= p_now LIMIT 100 FOR UPDATE SKIP LOCKED
    ) RETURNING workflow_id, run_id
  )
  DELETE FROM @schema@.atomr_snapshots s USING gone
    WHERE s.workflow_id = gone.workflow_id AND s.run_id = gone.run_id
$$;

-- save (save.lua): upsert one snapshot. p_token: the exclusive save's write token (NULL: not
-- exclusive); p_lease: the lease's fencing token (NULL: none); p_hold: ms to keep the run (-1:
-- forever; NULL: follow p_ttl); p_ttl: the store's ttl in ms (NULL: none); p_keep: keep_last
-- (NULL: all). Returns 1, or 0 for an exclusive save that finds its own write (a retry after a
-- lost reply), which writes nothing.
CREATE OR REPLACE FUNCTION @schema@.atomr_save(
  p_wf text, p_run text, p_step bigint, p_ts bigint, p_label text, p_channels text,
  p_jsonb boolean, p_metadata text, p_token text, p_lease bigint, p_hold bigint, p_ttl bigint,
  p_keep bigint, p_channel text, p_event text
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := @schema@.atomr_now();
  r @schema@.atomr_runs;
  found_token text;
  has_step boolean := false;
  trimmed bigint;
  is_new boolean;
BEGIN
  r := @schema@.atomr_lock_run(p_wf, p_run, now_ms, true);
  is_new := r.steps = 0 AND r.fence = 0;
  IF r.steps > 0 THEN
    SELECT write_token INTO found_token FROM @schema@.atomr_snapshots
      WHERE workflow_id = p_wf AND run_id = p_run AND step = p_step;
    has_step := FOUND;
  END IF;
  IF p_token IS NOT NULL AND has_step THEN
    IF found_token = p_token THEN
      RETURN 0;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'ARCON', MESSAGE = 'the super-step is already checkpointed';
  END IF;
  IF p_lease IS NOT NULL THEN
    IF r.owner IS NULL OR r.lease_until_ms <= now_ms OR r.token <> p_lease THEN
      RAISE EXCEPTION USING ERRCODE = 'ARLST', MESSAGE = 'the lease on this run was lost';
    END IF;
    IF p_step <> 0 AND r.steps = 0 THEN
      RAISE EXCEPTION USING ERRCODE = 'ARRNF', MESSAGE = 'the run has no checkpoint';
    END IF;
  ELSIF r.owner IS NOT NULL AND r.lease_until_ms > now_ms THEN
    RAISE EXCEPTION USING ERRCODE = 'ARHLD', MESSAGE = 'the run is leased',
      DETAIL = r.lease_until_ms::text, HINT = r.owner;
  END IF;

  IF p_hold IS NOT NULL THEN
    r.deadline_ms := CASE WHEN p_hold = -1 THEN NULL ELSE now_ms + p_hold END;
  ELSIF r.steps = 0 THEN
    r.deadline_ms := now_ms + 2 * p_ttl;
  ELSIF p_ttl IS NOT NULL AND (r.deadline_ms IS NULL OR r.deadline_ms < now_ms + p_ttl) THEN
    r.deadline_ms := now_ms + 2 * p_ttl;
  END IF;

  INSERT INTO @schema@.atomr_snapshots AS s (
    workflow_id, run_id, step, timestamp_ms, label, channels_json, channels, metadata, write_token
  ) VALUES (
    p_wf, p_run, p_step, p_ts, p_label, p_channels,
    CASE WHEN p_jsonb THEN p_channels::jsonb END, p_metadata, p_token
  ) ON CONFLICT (workflow_id, run_id, step) DO UPDATE SET
    timestamp_ms = excluded.timestamp_ms, label = excluded.label,
    channels_json = excluded.channels_json, channels = excluded.channels,
    metadata = excluded.metadata, write_token = excluded.write_token;
  IF NOT has_step THEN
    r.steps := r.steps + 1;
  END IF;
  IF p_keep IS NOT NULL AND r.steps > p_keep THEN
    DELETE FROM @schema@.atomr_snapshots WHERE workflow_id = p_wf AND run_id = p_run
      AND step IN (
        SELECT step FROM @schema@.atomr_snapshots WHERE workflow_id = p_wf AND run_id = p_run
        ORDER BY step LIMIT r.steps - p_keep
      );
    GET DIAGNOSTICS trimmed = ROW_COUNT;
    r.steps := r.steps - trimmed;
  END IF;
  UPDATE @schema@.atomr_runs SET deadline_ms = r.deadline_ms, steps = r.steps
    WHERE workflow_id = p_wf AND run_id = p_run;
  PERFORM @schema@.atomr_publish(p_channel, p_event);
  IF is_new THEN
    PERFORM @schema@.atomr_sweep(now_ms);
  END IF;
  RETURN 1;
END
$$;

-- fork (fork.lua): copy one snapshot into a new run, with edits (p_edits: a JSON object of
-- channels set over the source's, as the codec wrote it: no whitespace around its braces). The
-- source is never changed. A target run that exists is a conflict, unless its snapshot was
-- written by this very fork (write token = its run id: a retry), which returns 0 and writes
-- nothing.
CREATE OR REPLACE FUNCTION @schema@.atomr_fork(
  p_wf text, p_source text, p_target text, p_step bigint, p_ts bigint, p_label text,
  p_edits text, p_jsonb boolean, p_ttl bigint, p_channel text, p_event text
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := @schema@.atomr_now();
  t @schema@.atomr_runs;
  found_token text;
  src record;
  merged text;
BEGIN
  t := @schema@.atomr_lock_run(p_wf, p_target, now_ms, true);
  IF t.steps > 0 THEN
    SELECT write_token INTO found_token FROM @schema@.atomr_snapshots
      WHERE workflow_id = p_wf AND run_id = p_target AND step = p_step;
    IF FOUND AND found_token = p_target THEN
      RETURN 0;
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'ARCON', MESSAGE = 'the fork target already exists';
  END IF;
  SELECT s.channels_json, s.channels, s.metadata INTO src
    FROM @schema@.atomr_snapshots s JOIN @schema@.atomr_runs r
      ON r.workflow_id = s.workflow_id AND r.run_id = s.run_id
    WHERE s.workflow_id = p_wf AND s.run_id = p_source AND s.step = p_step
      AND (r.deadline_ms IS NULL OR r.deadline_ms > now_ms);
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'ARCNF', MESSAGE = 'no snapshot to fork';
  END IF;
  -- The edits' members appended to the source's, as text: every value keeps its exact text
  -- (parsing would refuse U+0000), and where a channel is edited the later member wins when
  -- read, as in jsonb.
  merged := CASE
    WHEN p_edits = '{}' THEN src.channels_json
    WHEN src.channels_json = '{}' THEN p_edits
    ELSE left(src.channels_json, -1) || ',' || substr(p_edits, 2)
  END;
  INSERT INTO @schema@.atomr_snapshots (
    workflow_id, run_id, step, timestamp_ms, label, channels_json, channels, metadata, write_token
  ) VALUES (
    p_wf, p_target, p_step, p_ts, p_label, merged,
    CASE WHEN p_jsonb AND src.channels IS NOT NULL THEN src.channels || p_edits::jsonb END,
    src.metadata, p_target
  );
  UPDATE @schema@.atomr_runs SET steps = 1, deadline_ms = now_ms + 2 * p_ttl
    WHERE workflow_id = p_wf AND run_id = p_target;
  PERFORM @schema@.atomr_publish(p_channel, p_event);
  IF t.fence = 0 THEN
    PERFORM @schema@.atomr_sweep(now_ms);
  END IF;
  RETURN 1;
END
$$;

-- delete_run (delete_run.lua): every snapshot of the run, and its record (so its lease), go
-- together. Returns how many snapshots there were.
CREATE OR REPLACE FUNCTION @schema@.atomr_delete_run(
  p_wf text, p_run text, p_channel text, p_event text
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  r @schema@.atomr_runs;
BEGIN
  r := @schema@.atomr_lock_run(p_wf, p_run, @schema@.atomr_now(), false);
  IF r.workflow_id IS NULL THEN
    RETURN 0;
  END IF;
  DELETE FROM @schema@.atomr_snapshots WHERE workflow_id = p_wf AND run_id = p_run;
  DELETE FROM @schema@.atomr_runs WHERE workflow_id = p_wf AND run_id = p_run;
  IF r.steps > 0 THEN
    PERFORM @schema@.atomr_publish(p_channel, p_event);
  END IF;
  RETURN r.steps;
END
$$;

-- acquire_lease (acquire_lease.lua): returns {token, deadline}. The same owner holding a live
-- lease extends it and keeps its token; otherwise the token is the run's fencing counter plus
-- one, or the server's clock in microseconds if that is larger (so tokens keep growing across a
-- run deleted and started again). A run not saved yet lives as long as its lease.
CREATE OR REPLACE FUNCTION @schema@.atomr_acquire_lease(
  p_wf text, p_run text, p_owner text, p_ttl bigint, p_must_exist boolean
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := @schema@.atomr_now();
  r @schema@.atomr_runs;
BEGIN
  r := @schema@.atomr_lock_run(p_wf, p_run, now_ms, NOT p_must_exist);
  IF p_must_exist AND (r.workflow_id IS NULL OR r.steps = 0) THEN
    RAISE EXCEPTION USING ERRCODE = 'ARRNF', MESSAGE = 'the run has no checkpoint';
  END IF;
  IF r.owner IS NOT NULL AND r.lease_until_ms > now_ms THEN
    IF r.owner <> p_owner THEN
      RAISE EXCEPTION USING ERRCODE = 'ARHLD', MESSAGE = 'the run is leased',
        DETAIL = r.lease_until_ms::text, HINT = r.owner;
    END IF;
  ELSE
    IF r.steps = 0 AND r.fence = 0 THEN
      r.deadline_ms := now_ms + p_ttl;
    END IF;
    r.fence := greatest(r.fence + 1,
      floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
    r.owner := p_owner;
    r.token := r.fence;
  END IF;
  r.lease_until_ms := now_ms + p_ttl;
  r.lease_ttl_ms := p_ttl;
  IF r.steps = 0 AND r.deadline_ms IS NOT NULL THEN
    r.deadline_ms := greatest(r.deadline_ms, r.lease_until_ms);
  END IF;
  UPDATE @schema@.atomr_runs SET deadline_ms = r.deadline_ms, fence = r.fence,
    owner = r.owner, token = r.token, lease_until_ms = r.lease_until_ms,
    lease_ttl_ms = r.lease_ttl_ms
    WHERE workflow_id = p_wf AND run_id = p_run;
  RETURN ARRAY[r.token, r.lease_until_ms];
END
$$;

-- renew_lease (renew_lease.lua): extend a live lease by its ttl from now; returns the deadline.
CREATE OR REPLACE FUNCTION @schema@.atomr_renew_lease(
  p_wf text, p_run text, p_token bigint, p_ttl bigint
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := @schema@.atomr_now();
  r @schema@.atomr_runs;
BEGIN
  r := @schema@.atomr_lock_run(p_wf, p_run, now_ms, false);
  IF r.owner IS NULL OR r.lease_until_ms <= now_ms OR r.token <> p_token THEN
    RAISE EXCEPTION USING ERRCODE = 'ARLST', MESSAGE = 'the lease on this run was lost';
  END IF;
  r.lease_until_ms := now_ms + p_ttl;
  IF r.steps = 0 AND r.deadline_ms IS NOT NULL THEN
    r.deadline_ms := greatest(r.deadline_ms, r.lease_until_ms);
  END IF;
  UPDATE @schema@.atomr_runs SET lease_until_ms = r.lease_until_ms, deadline_ms = r.deadline_ms
    WHERE workflow_id = p_wf AND run_id = p_run;
  RETURN r.lease_until_ms;
END
$$;

-- release_lease (release_lease.lua): p_action 'set' stores p_note, 'clear' clears the note,
-- 'keep' leaves it. Returns 1 when released (or released before by this very lease: a retry
-- answers the same), 0 when the run's lease is no longer this one (nothing written).
CREATE OR REPLACE FUNCTION @schema@.atomr_release_lease(
  p_wf text, p_run text, p_token bigint, p_action text, p_note text
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  r @schema@.atomr_runs;
BEGIN
  r := @schema@.atomr_lock_run(p_wf, p_run, @schema@.atomr_now(), false);
  IF r.workflow_id IS NULL OR r.token <> p_token THEN
    RETURN 0;
  END IF;
  UPDATE @schema@.atomr_runs SET owner = NULL, lease_until_ms = 0,
    note = CASE p_action WHEN 'set' THEN p_note WHEN 'clear' THEN NULL ELSE note END
    WHERE workflow_id = p_wf AND run_id = p_run;
  RETURN 1;
END
$$;
