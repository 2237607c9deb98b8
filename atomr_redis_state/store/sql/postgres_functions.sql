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
--   ARCAN  a cancel was requested for the run (a leased save, an answer)
--   ARANS  an answer refused (DETAIL: why)
--   ARQST  the run's queue state forbids the call (DETAIL: the state, HINT: the action)
-- Helpers that write are plpgsql, not sql: plpgsql keeps a statement's plan for the session,
-- where a sql function called from another function plans its statement again on every call.
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
LANGUAGE plpgsql AS $$
BEGIN
  WITH gone AS (
    DELETE FROM @schema@.atomr_runs WHERE (workflow_id, run_id) IN (
      SELECT workflow_id, run_id FROM @schema@.atomr_runs
      WHERE deadline_ms <= p_now LIMIT 100 FOR UPDATE SKIP LOCKED
    ) RETURNING workflow_id, run_id
  )
  DELETE FROM @schema@.atomr_snapshots s USING gone
    WHERE s.workflow_id = gone.workflow_id AND s.run_id = gone.run_id;
END
$$;

-- Write a run's row back whole (the functions below change a copy, then store it).
CREATE OR REPLACE FUNCTION @schema@.atomr_put_run(r @schema@.atomr_runs) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  UPDATE @schema@.atomr_runs SET deadline_ms = r.deadline_ms, steps = r.steps,
    fence = r.fence, owner = r.owner, token = r.token, lease_until_ms = r.lease_until_ms,
    lease_ttl_ms = r.lease_ttl_ms, note = r.note, answer_step = r.answer_step,
    answer = r.answer, cancel_ms = r.cancel_ms, queue_state = r.queue_state,
    attempts = r.attempts, ready_at_ms = r.ready_at_ms, leased_until_ms = r.leased_until_ms,
    reason = r.reason, settled = r.settled, expired = r.expired
  WHERE workflow_id = r.workflow_id AND run_id = r.run_id;
END
$$;

-- A write carrying the lease p_lease needs it to be the run's live lease (and, past super-step
-- 0, the run to have a snapshot); one without a lease (NULL) is refused while someone holds it.
CREATE OR REPLACE FUNCTION @schema@.atomr_check_lease(
  r @schema@.atomr_runs, p_lease bigint, p_step bigint, p_now bigint
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF p_lease IS NOT NULL THEN
    IF r.owner IS NULL OR r.lease_until_ms <= p_now OR r.token <> p_lease THEN
      RAISE EXCEPTION USING ERRCODE = 'ARLST', MESSAGE = 'the lease on this run was lost';
    END IF;
    IF p_step <> 0 AND r.steps = 0 THEN
      RAISE EXCEPTION USING ERRCODE = 'ARRNF', MESSAGE = 'the run has no checkpoint';
    END IF;
  ELSIF r.owner IS NOT NULL AND r.lease_until_ms > p_now THEN
    RAISE EXCEPTION USING ERRCODE = 'ARHLD', MESSAGE = 'the run is leased',
      DETAIL = r.lease_until_ms::text, HINT = r.owner;
  END IF;
END
$$;

-- A live lease keeps its run (keep_for_lease in lua/_common.lua): a deadline before the
-- lease's, or less than the store's ttl (p_ttl, NULL: none) from now, moves to the later of
-- now + 2 * ttl and the lease's deadline plus its ttl. A run not saved yet lives as long as
-- its lease.
CREATE OR REPLACE FUNCTION @schema@.atomr_keep_for_lease(
  r @schema@.atomr_runs, p_now bigint, p_ttl bigint
) RETURNS @schema@.atomr_runs
LANGUAGE plpgsql AS $$
DECLARE
  ttl bigint := coalesce(p_ttl, 0);
BEGIN
  IF r.deadline_ms IS NULL THEN
    RETURN r;
  END IF;
  IF r.steps = 0 THEN
    r.deadline_ms := greatest(r.deadline_ms, r.lease_until_ms);
  ELSIF r.deadline_ms < greatest(p_now + ttl, r.lease_until_ms) THEN
    r.deadline_ms := greatest(p_now + 2 * ttl, r.lease_until_ms + r.lease_ttl_ms);
  END IF;
  RETURN r;
END
$$;

-- Give p_owner the run's lease for p_lease_ttl ms (extended, with its token, if it holds it
-- already): the token is the run's fencing counter plus one, or the server's clock in
-- microseconds if that is larger (so tokens keep growing across a run deleted and started
-- again). Returns the changed row; the caller stores it.
CREATE OR REPLACE FUNCTION @schema@.atomr_grant(
  r @schema@.atomr_runs, p_owner text, p_lease_ttl bigint, p_now bigint, p_ttl bigint
) RETURNS @schema@.atomr_runs
LANGUAGE plpgsql AS $$
BEGIN
  IF r.owner IS NULL OR r.lease_until_ms <= p_now THEN
    r.fence := greatest(r.fence + 1,
      floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint);
    r.owner := p_owner;
    r.token := r.fence;
  END IF;
  r.lease_until_ms := p_now + p_lease_ttl;
  r.lease_ttl_ms := p_lease_ttl;
  RETURN @schema@.atomr_keep_for_lease(r, p_now, p_ttl);
END
$$;

-- A queue event (no super-step), in the JSON the Python codec writes (codec.encode_event).
CREATE OR REPLACE FUNCTION @schema@.atomr_announce(
  p_channel text, p_kind text, p_wf text, p_run text, p_label text, p_now bigint
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM @schema@.atomr_publish(p_channel, json_build_object(
    'kind', p_kind, 'workflow_id', p_wf, 'run_id', p_run, 'super_step', NULL,
    'label', p_label, 'timestamp_ms', p_now, 'source_run_id', NULL)::text);
END
$$;

-- save (save.lua): upsert one snapshot. p_token: the exclusive save's write token (NULL: not
-- exclusive); p_lease: the lease's fencing token (NULL: none); p_hold: ms to keep the run (-1:
-- forever; NULL: follow p_ttl); p_ttl: the store's ttl in ms (NULL: none); p_keep: keep_last
-- (NULL: all). Returns 1, or 0 for an exclusive save that finds its own write (a retry after a
-- lost reply), which writes nothing. The lease is checked before the conflict (a stale worker
-- always learns its lease is lost), and a leased save of a run asked to cancel is refused.
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
  IF p_token IS NOT NULL AND has_step AND found_token = p_token THEN
    RETURN 0;
  END IF;
  PERFORM @schema@.atomr_check_lease(r, p_lease, p_step, now_ms);
  IF p_lease IS NOT NULL AND r.cancel_ms IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'ARCAN', MESSAGE = 'the run was cancelled';
  END IF;
  IF p_token IS NOT NULL AND has_step THEN
    RAISE EXCEPTION USING ERRCODE = 'ARCON', MESSAGE = 'the super-step is already checkpointed';
  END IF;

  IF p_hold IS NOT NULL THEN
    r.deadline_ms := CASE WHEN p_hold = -1 THEN NULL ELSE now_ms + p_hold END;
  ELSIF r.steps = 0 THEN
    r.deadline_ms := now_ms + 2 * p_ttl;
  ELSIF p_ttl IS NOT NULL AND (r.deadline_ms IS NULL OR r.deadline_ms < now_ms + p_ttl) THEN
    r.deadline_ms := now_ms + 2 * p_ttl;
    IF p_lease IS NOT NULL THEN  -- never before the lease's deadline, as on Redis
      r.deadline_ms := greatest(r.deadline_ms, r.lease_until_ms);
    END IF;
  END IF;

  PERFORM @schema@.atomr_put_snapshot(p_wf, p_run, p_step, p_ts, p_label, p_channels, p_jsonb,
    p_metadata, p_token);
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

-- Upsert one snapshot row (its channels also as jsonb when p_jsonb).
CREATE OR REPLACE FUNCTION @schema@.atomr_put_snapshot(
  p_wf text, p_run text, p_step bigint, p_ts bigint, p_label text, p_channels text,
  p_jsonb boolean, p_metadata text, p_token text
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO @schema@.atomr_snapshots AS s (
    workflow_id, run_id, step, timestamp_ms, label, channels_json, channels, metadata, write_token
  ) VALUES (
    p_wf, p_run, p_step, p_ts, p_label, p_channels,
    CASE WHEN p_jsonb THEN p_channels::jsonb END, p_metadata, p_token
  ) ON CONFLICT (workflow_id, run_id, step) DO UPDATE SET
    timestamp_ms = excluded.timestamp_ms, label = excluded.label,
    channels_json = excluded.channels_json, channels = excluded.channels,
    metadata = excluded.metadata, write_token = excluded.write_token;
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

-- acquire_lease (acquire_lease.lua): returns {token, deadline, 1 if a cancel was requested}.
-- The same owner holding a live lease extends it and keeps its token (atomr_grant). A run not
-- saved yet lives as long as its lease. p_ttl: the store's ttl (a live lease keeps the run).
CREATE OR REPLACE FUNCTION @schema@.atomr_acquire_lease(
  p_wf text, p_run text, p_owner text, p_lease_ttl bigint, p_must_exist boolean, p_ttl bigint
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
  IF r.owner IS NOT NULL AND r.lease_until_ms > now_ms AND r.owner <> p_owner THEN
    RAISE EXCEPTION USING ERRCODE = 'ARHLD', MESSAGE = 'the run is leased',
      DETAIL = r.lease_until_ms::text, HINT = r.owner;
  END IF;
  IF r.steps = 0 AND r.fence = 0 THEN  -- a row made by this call: a run being started
    r.deadline_ms := now_ms + p_lease_ttl;
  END IF;
  r := @schema@.atomr_grant(r, p_owner, p_lease_ttl, now_ms, p_ttl);
  PERFORM @schema@.atomr_put_run(r);
  RETURN ARRAY[r.token, r.lease_until_ms, (r.cancel_ms IS NOT NULL)::integer];
END
$$;

-- renew_lease (renew_lease.lua): extend a live lease by its ttl from now (a live lease keeps
-- its run); returns {deadline, 1 if a cancel was requested}.
CREATE OR REPLACE FUNCTION @schema@.atomr_renew_lease(
  p_wf text, p_run text, p_token bigint, p_lease_ttl bigint, p_ttl bigint
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := @schema@.atomr_now();
  r @schema@.atomr_runs;
BEGIN
  r := @schema@.atomr_lock_run(p_wf, p_run, now_ms, false);
  IF r.owner IS NULL OR r.lease_until_ms <= now_ms OR r.token <> p_token THEN
    RAISE EXCEPTION USING ERRCODE = 'ARLST', MESSAGE = 'the lease on this run was lost';
  END IF;
  r.lease_until_ms := now_ms + p_lease_ttl;
  r := @schema@.atomr_keep_for_lease(r, now_ms, p_ttl);
  PERFORM @schema@.atomr_put_run(r);
  RETURN ARRAY[r.lease_until_ms, (r.cancel_ms IS NOT NULL)::integer];
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

-- record_answer (record_answer.lua): keep a human's answer (p_answer, JSON text) to the run
-- paused at p_step. Checks as save's, then ARCAN, then ARANS (DETAIL: why) when the run moved
-- past p_step or, without a lease, that pause already has a different answer.
CREATE OR REPLACE FUNCTION @schema@.atomr_record_answer(
  p_wf text, p_run text, p_step bigint, p_answer text, p_lease bigint
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := @schema@.atomr_now();
  r @schema@.atomr_runs;
  latest bigint;
BEGIN
  r := @schema@.atomr_lock_run(p_wf, p_run, now_ms, false);
  IF r.workflow_id IS NULL OR r.steps = 0 THEN
    RAISE EXCEPTION USING ERRCODE = 'ARRNF', MESSAGE = 'the run has no checkpoint';
  END IF;
  PERFORM @schema@.atomr_check_lease(r, p_lease, p_step, now_ms);
  IF r.cancel_ms IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'ARCAN', MESSAGE = 'the run was cancelled';
  END IF;
  SELECT max(step) INTO latest FROM @schema@.atomr_snapshots
    WHERE workflow_id = p_wf AND run_id = p_run;
  IF latest <> p_step THEN
    RAISE EXCEPTION USING ERRCODE = 'ARANS', MESSAGE = 'the answer was refused',
      DETAIL = 'the run is at super-step ' || latest;
  END IF;
  IF p_lease IS NULL AND r.answer_step = p_step AND r.answer <> p_answer THEN
    RAISE EXCEPTION USING ERRCODE = 'ARANS', MESSAGE = 'the answer was refused',
      DETAIL = 'that pause already has a different answer';
  END IF;
  UPDATE @schema@.atomr_runs SET answer_step = p_step, answer = p_answer
    WHERE workflow_id = p_wf AND run_id = p_run;
END
$$;

-- submit (submit.lua): create the run at super-step 0 and queue it, ready p_delay ms from now.
-- Returns 1, or 0 (nothing written) when the run exists or an inline runner holds its lease.
CREATE OR REPLACE FUNCTION @schema@.atomr_submit(
  p_wf text, p_run text, p_ts bigint, p_label text, p_channels text, p_jsonb boolean,
  p_metadata text, p_delay bigint, p_ttl bigint, p_channel text, p_event text
) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := @schema@.atomr_now();
  r @schema@.atomr_runs;
BEGIN
  r := @schema@.atomr_lock_run(p_wf, p_run, now_ms, true);
  IF r.steps > 0 OR (r.owner IS NOT NULL AND r.lease_until_ms > now_ms) THEN
    RETURN 0;
  END IF;
  PERFORM @schema@.atomr_put_snapshot(p_wf, p_run, 0, p_ts, p_label, p_channels, p_jsonb,
    p_metadata, NULL);
  UPDATE @schema@.atomr_runs SET deadline_ms = now_ms + 2 * p_ttl, steps = 1,
    queue_state = 'queued', attempts = 0, ready_at_ms = now_ms + p_delay, reason = NULL,
    cancel_ms = NULL, answer = NULL, answer_step = NULL, expired = false
    WHERE workflow_id = p_wf AND run_id = p_run;
  PERFORM @schema@.atomr_publish(p_channel, p_event);
  PERFORM @schema@.atomr_announce(p_channel, 'queued', p_wf, p_run, '', now_ms);
  RETURN 1;
END
$$;

-- A claimed run whose claim deadline passed (claim.lua): the deadline follows a renewed lease;
-- otherwise its worker is gone, and it is queued again, marked as a takeover (event
-- lease_expired), or ends cancelled if a cancel was requested.
CREATE OR REPLACE FUNCTION @schema@.atomr_expire_claim(
  r @schema@.atomr_runs, p_now bigint, p_channel text
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF r.owner IS NOT NULL AND r.lease_until_ms > p_now THEN
    r.leased_until_ms := r.lease_until_ms;
  ELSE
    r.leased_until_ms := NULL;
    IF r.queue_state = 'running' AND r.cancel_ms IS NOT NULL THEN
      r.queue_state := 'cancelled';
      PERFORM @schema@.atomr_announce(p_channel, 'cancelled', r.workflow_id, r.run_id, '', p_now);
    ELSIF r.queue_state = 'running' THEN
      r.queue_state := 'queued';
      r.ready_at_ms := p_now;
      r.expired := true;
      PERFORM @schema@.atomr_announce(p_channel, 'lease_expired', r.workflow_id, r.run_id,
        coalesce(r.owner, ''), p_now);
    END IF;
  END IF;
  PERFORM @schema@.atomr_put_run(r);
END
$$;

-- claim (claim.lua): first the workflow's claims whose deadline passed (atomr_expire_claim,
-- found by the claim-deadline index), then the earliest ready run whose lease is free gets
-- p_owner's lease and becomes 'running' (event claimed). A ready run an inline runner holds
-- is looked at again when that lease ends. Runs another transaction has locked are skipped
-- (SKIP LOCKED): concurrent claims take different runs. No row: nothing is ready.
CREATE OR REPLACE FUNCTION @schema@.atomr_claim(
  p_wf text, p_owner text, p_lease_ttl bigint, p_ttl bigint, p_channel text
) RETURNS TABLE (
  o_run text, o_token bigint, o_until bigint, o_cancelled boolean, o_attempts integer,
  o_taken_over boolean
)
LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := @schema@.atomr_now();
  r @schema@.atomr_runs;
  taken_over boolean;
BEGIN
  FOR r IN SELECT * FROM @schema@.atomr_runs AS q
    WHERE q.workflow_id = p_wf AND q.leased_until_ms <= now_ms
      AND (q.deadline_ms IS NULL OR q.deadline_ms > now_ms)
    ORDER BY q.leased_until_ms LIMIT 64 FOR UPDATE SKIP LOCKED
  LOOP
    PERFORM @schema@.atomr_expire_claim(r, now_ms, p_channel);
  END LOOP;
  FOR r IN SELECT * FROM @schema@.atomr_runs AS q
    WHERE q.workflow_id = p_wf AND q.queue_state = 'queued' AND q.ready_at_ms <= now_ms
      AND q.steps > 0 AND (q.deadline_ms IS NULL OR q.deadline_ms > now_ms)
    ORDER BY q.ready_at_ms, q.run_id FOR UPDATE SKIP LOCKED
  LOOP
    IF r.owner IS NOT NULL AND r.lease_until_ms > now_ms THEN
      UPDATE @schema@.atomr_runs AS q SET ready_at_ms = r.lease_until_ms
        WHERE q.workflow_id = p_wf AND q.run_id = r.run_id;
      CONTINUE;
    END IF;
    r := @schema@.atomr_grant(r, p_owner, p_lease_ttl, now_ms, p_ttl);
    taken_over := r.expired;
    r.queue_state := 'running';
    r.leased_until_ms := r.lease_until_ms;
    r.expired := false;
    PERFORM @schema@.atomr_put_run(r);
    PERFORM @schema@.atomr_announce(p_channel, 'claimed', p_wf, r.run_id, p_owner, now_ms);
    RETURN QUERY SELECT r.run_id::text, r.token, r.lease_until_ms, r.cancel_ms IS NOT NULL,
      r.attempts, taken_over;
    RETURN;
  END LOOP;
END
$$;

-- finish (finish.lua): settle the claim of the lease p_token, releasing the lease as
-- atomr_release_lease does (p_action 'set' stores p_note, 'clear' clears the note, 'keep' leaves
-- it), and move the run by p_outcome; returns its queue state. ARLST when the run's lease is
-- another one; a finish sent again (the claim already settled) returns the state and writes
-- nothing.
CREATE OR REPLACE FUNCTION @schema@.atomr_finish(
  p_wf text, p_run text, p_token bigint, p_owner text, p_outcome text, p_reason text,
  p_retry bigint, p_max_attempts integer, p_action text, p_note text, p_channel text
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := @schema@.atomr_now();
  r @schema@.atomr_runs;
BEGIN
  r := @schema@.atomr_lock_run(p_wf, p_run, now_ms, false);
  IF r.workflow_id IS NULL OR r.token <> p_token THEN
    RAISE EXCEPTION USING ERRCODE = 'ARLST', MESSAGE = 'the lease on this run was lost';
  END IF;
  IF r.settled = p_token AND r.queue_state IS NOT NULL THEN
    RETURN r.queue_state;
  END IF;
  r.owner := NULL;
  r.lease_until_ms := 0;
  r.leased_until_ms := NULL;
  r.settled := p_token;
  IF p_action <> 'keep' THEN
    r.note := CASE WHEN p_action = 'set' THEN p_note END;
  END IF;
  IF r.cancel_ms IS NOT NULL AND p_outcome <> 'completed' THEN
    r.queue_state := 'cancelled';
    r.answer := NULL;
    r.answer_step := NULL;
    PERFORM @schema@.atomr_announce(p_channel, 'cancelled', p_wf, p_run, '', now_ms);
  ELSE
    IF p_reason IS NOT NULL THEN
      r.reason := p_reason;
    END IF;
    IF p_outcome = 'completed' THEN
      r.queue_state := 'completed';
      r.answer := NULL;
      r.answer_step := NULL;
      r.reason := NULL;
      PERFORM @schema@.atomr_announce(p_channel, 'completed', p_wf, p_run, '', now_ms);
    ELSIF p_outcome = 'paused' THEN
      r.queue_state := 'paused';
      r.answer := NULL;
      r.answer_step := NULL;
    ELSIF p_outcome = 'released' THEN
      r.queue_state := 'queued';
      r.ready_at_ms := now_ms;
      PERFORM @schema@.atomr_announce(p_channel, 'released', p_wf, p_run, p_owner, now_ms);
    ELSIF p_outcome = 'blocked' THEN
      r.queue_state := 'blocked';
      PERFORM @schema@.atomr_announce(p_channel, 'blocked', p_wf, p_run, '', now_ms);
    ELSE
      r.attempts := r.attempts + 1;
      IF p_outcome = 'failed' OR (p_max_attempts > 0 AND r.attempts >= p_max_attempts) THEN
        r.queue_state := 'failed';
        PERFORM @schema@.atomr_announce(p_channel, 'failed', p_wf, p_run,
          'attempts ' || r.attempts, now_ms);
      ELSE
        r.queue_state := 'queued';
        r.ready_at_ms := now_ms + p_retry;
        PERFORM @schema@.atomr_announce(p_channel, 'retrying', p_wf, p_run,
          'attempts ' || r.attempts, now_ms);
      END IF;
    END IF;
  END IF;
  PERFORM @schema@.atomr_put_run(r);
  RETURN r.queue_state;
END
$$;

-- requeue (requeue.lua): with p_answer (JSON text), record a human's answer for a paused (or
-- never queued) run and queue it; without, queue a failed, blocked or never-queued run again
-- with its attempts reset. Returns the queue state. ARRNF: no run; ARQST (DETAIL: the state,
-- HINT: what it cannot do) for a run in another state; ARCAN: an answer for a cancelled run.
-- The same answer sent again while the run waits in the queue, or a requeue of a queued or
-- running run, changes nothing.
CREATE OR REPLACE FUNCTION @schema@.atomr_requeue(
  p_wf text, p_run text, p_answer text, p_delay bigint, p_channel text
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := @schema@.atomr_now();
  r @schema@.atomr_runs;
  paused_at bigint;
BEGIN
  r := @schema@.atomr_lock_run(p_wf, p_run, now_ms, false);
  IF r.workflow_id IS NULL OR r.steps = 0 THEN
    RAISE EXCEPTION USING ERRCODE = 'ARRNF', MESSAGE = 'the run has no checkpoint';
  END IF;
  IF p_answer IS NOT NULL THEN
    SELECT max(step) INTO paused_at FROM @schema@.atomr_snapshots
      WHERE workflow_id = p_wf AND run_id = p_run;
    IF r.queue_state = 'queued' AND r.answer_step = paused_at AND r.answer = p_answer THEN
      RETURN 'queued';
    END IF;
    IF r.queue_state IS NOT NULL AND r.queue_state <> 'paused' THEN
      RAISE EXCEPTION USING ERRCODE = 'ARQST', MESSAGE = 'the run is not paused',
        DETAIL = r.queue_state, HINT = 'take an answer';
    END IF;
    IF r.cancel_ms IS NOT NULL THEN
      RAISE EXCEPTION USING ERRCODE = 'ARCAN', MESSAGE = 'the run was cancelled';
    END IF;
    r.answer_step := paused_at;
    r.answer := p_answer;
  ELSE
    IF r.queue_state IN ('queued', 'running') THEN
      RETURN r.queue_state;
    END IF;
    IF r.queue_state IS NOT NULL AND r.queue_state NOT IN ('failed', 'blocked') THEN
      RAISE EXCEPTION USING ERRCODE = 'ARQST', MESSAGE = 'the run cannot be requeued',
        DETAIL = r.queue_state, HINT = 'be requeued';
    END IF;
    r.attempts := 0;
    r.reason := NULL;
  END IF;
  r.queue_state := 'queued';
  r.ready_at_ms := now_ms + p_delay;
  PERFORM @schema@.atomr_put_run(r);
  PERFORM @schema@.atomr_announce(p_channel, 'queued', p_wf, p_run, '', now_ms);
  RETURN 'queued';
END
$$;

-- cancel (cancel.lua): a waiting run ends 'cancelled' at once (event cancelled); a running
-- one (claimed, or held by an inline runner) is flagged and 'running' returned; a completed or
-- cancelled one is left as it is. The flag keeps the first request's time. ARRNF: no run.
CREATE OR REPLACE FUNCTION @schema@.atomr_cancel(
  p_wf text, p_run text, p_channel text
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := @schema@.atomr_now();
  r @schema@.atomr_runs;
BEGIN
  r := @schema@.atomr_lock_run(p_wf, p_run, now_ms, false);
  IF r.workflow_id IS NULL OR r.steps = 0 THEN
    RAISE EXCEPTION USING ERRCODE = 'ARRNF', MESSAGE = 'the run has no checkpoint';
  END IF;
  IF r.queue_state IN ('completed', 'cancelled') THEN
    RETURN r.queue_state;
  END IF;
  r.cancel_ms := coalesce(r.cancel_ms, now_ms);
  IF r.queue_state = 'running' OR (r.owner IS NOT NULL AND r.lease_until_ms > now_ms) THEN
    PERFORM @schema@.atomr_put_run(r);
    RETURN 'running';
  END IF;
  r.queue_state := 'cancelled';
  r.answer := NULL;
  r.answer_step := NULL;
  PERFORM @schema@.atomr_put_run(r);
  PERFORM @schema@.atomr_announce(p_channel, 'cancelled', p_wf, p_run, '', now_ms);
  RETURN 'cancelled';
END
$$;

-- take_permit: one of the workflow's fleet-wide in-flight permits for p_holder (or its own
-- extended), if fewer than p_limit live ones are held by others. Takers of one workflow take
-- turns (a transaction-scoped advisory lock), so the count they read stays true.
CREATE OR REPLACE FUNCTION @schema@.atomr_take_permit(
  p_wf text, p_holder text, p_limit integer, p_ttl bigint
) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
  now_ms bigint := @schema@.atomr_now();
  held integer;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext('atomr_permits'), hashtext(p_wf));
  DELETE FROM @schema@.atomr_permits WHERE workflow_id = p_wf AND expires_ms <= now_ms;
  SELECT count(*) INTO held FROM @schema@.atomr_permits WHERE workflow_id = p_wf;
  IF held >= p_limit AND NOT EXISTS (
    SELECT 1 FROM @schema@.atomr_permits WHERE workflow_id = p_wf AND holder = p_holder
  ) THEN
    RETURN false;
  END IF;
  INSERT INTO @schema@.atomr_permits (workflow_id, holder, expires_ms)
    VALUES (p_wf, p_holder, now_ms + p_ttl)
    ON CONFLICT (workflow_id, holder) DO UPDATE SET expires_ms = excluded.expires_ms;
  RETURN true;
END
$$;

-- Many saves in one call (the store sends the saves its callers make at the same time this
-- way: one statement, one commit for all). Element k of every array is one save's arguments,
-- as atomr_save takes them (p_ttl and p_keep are the store's, the same for all). Each save runs
-- in a block of its own (a subtransaction): a refused or failed one is rolled back alone and
-- reported in its row (the SQLSTATE, message, detail and hint it raised; result NULL), the
-- others commit together. A cancel (statement_timeout) is not caught: it rolls them all back.
-- The caller sends the saves ordered by run, so two batches lock the runs they share in one
-- order; a deadlock with other work (a sweep, another transaction) fails only the save caught
-- in it. r_index is the save's position in the arrays (from 1).
CREATE OR REPLACE FUNCTION @schema@.atomr_save_many(
  p_wf text[], p_run text[], p_step bigint[], p_ts bigint[], p_label text[], p_channels text[],
  p_jsonb boolean[], p_metadata text[], p_token text[], p_lease bigint[], p_hold bigint[],
  p_ttl bigint, p_keep bigint, p_channel text[], p_event text[]
) RETURNS TABLE (
  r_index integer, r_result integer, r_state text, r_message text, r_detail text, r_hint text
)
LANGUAGE plpgsql AS $$
BEGIN
  FOR k IN 1..coalesce(array_length(p_wf, 1), 0) LOOP
    r_index := k; r_state := NULL; r_message := NULL; r_detail := NULL; r_hint := NULL;
    BEGIN
      r_result := @schema@.atomr_save(p_wf[k], p_run[k], p_step[k], p_ts[k], p_label[k],
        p_channels[k], p_jsonb[k], p_metadata[k], p_token[k], p_lease[k], p_hold[k], p_ttl,
        p_keep, p_channel[k], p_event[k]);
    EXCEPTION WHEN OTHERS THEN
      r_result := NULL;
      GET STACKED DIAGNOSTICS r_state = RETURNED_SQLSTATE, r_message = MESSAGE_TEXT,
        r_detail = PG_EXCEPTION_DETAIL, r_hint = PG_EXCEPTION_HINT;
    END;
    RETURN NEXT;
  END LOOP;
END
$$;
