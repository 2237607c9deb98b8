"""The Postgres store's schema: tables, indexes, functions, its version, and migrations.

Everything lives in one schema of the caller's choosing (``schema=``, default ``atomr``), made
by :meth:`~.postgres.PostgresCheckpointer.setup` with the privileges of an ordinary user (it
needs ``CREATE`` on the database only when the schema does not exist yet):

- ``atomr_schema``: one row, the schema version ``setup()`` last brought the tables to.
- ``atomr_runs`` (primary key ``(workflow_id, run_id)``, ``COLLATE "C"`` so runs list in byte
  order, as on Redis): a run's deadline (NULL: never expires), its snapshot count, lease,
  fencing counter and note. Index ``atomr_runs_deadline`` (partial: runs with a deadline)
  serves the sweep of expired runs.
- ``atomr_snapshots`` (primary key ``(workflow_id, run_id, step)``, which also serves
  ``latest`` and ``list``): ``channels_json`` is the exact JSON text of the channels (stored
  uncompressed: every ``latest`` reads it, and decompressing costs more than the bytes; in a
  fork, the edited channels follow the source's, and where one is named twice the later wins,
  as in ``jsonb``);
  ``channels`` the same as ``jsonb``, to query (NULL for a snapshot holding the character
  U+0000, which ``jsonb`` cannot, and with ``jsonb=False``); label, timestamp, metadata, and
  an exclusive save's token.
- ``atomr_events``: events too long for a NOTIFY payload, kept for a minute.
- ``atomr_workers``: each fleet worker's heartbeat (what it runs), until it expires.
- ``atomr_permits``: the fleet-wide in-flight permits of each workflow, until they expire.
- The functions of ``postgres_functions.sql``, one per write operation.

Version 2 added to ``atomr_runs`` a human's answer waiting to be used, the cancel request and
the run's place in the fleet's work queue (state, attempts, ready time, the deadline of the
claim a worker holds, the last failure's reason, the settled claim, the takeover mark), with
the indexes ``atomr_runs_ready`` (a workflow's queued runs by ready time) and
``atomr_runs_claimed`` (its claims by deadline, for takeovers), and the last two tables. Its
migration drops the version-1 functions, whose signatures changed (``setup()`` creates them
anew), and adds only what is missing (``IF NOT EXISTS``), so a schema that an earlier build's
version 2 left (with the answer and cancel columns only) migrates too. Version 3 changes no
table: it adds the function ``atomr_save_many`` (many saves in one call), which a store of this
version uses, so a version-2 schema is refused until ``setup()`` has created it.
"""

from __future__ import annotations

from importlib import resources

SCHEMA_VERSION = 3
"""The version this library writes and understands."""

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE @schema@.atomr_runs (
        workflow_id text COLLATE "C" NOT NULL,
        run_id text COLLATE "C" NOT NULL,
        deadline_ms bigint,
        steps integer NOT NULL DEFAULT 0,
        fence bigint NOT NULL DEFAULT 0,
        owner text,
        token bigint NOT NULL DEFAULT 0,
        lease_until_ms bigint NOT NULL DEFAULT 0,
        lease_ttl_ms bigint NOT NULL DEFAULT 0,
        note text,
        PRIMARY KEY (workflow_id, run_id)
    );
    CREATE INDEX atomr_runs_deadline ON @schema@.atomr_runs (deadline_ms)
        WHERE deadline_ms IS NOT NULL;
    CREATE TABLE @schema@.atomr_snapshots (
        workflow_id text COLLATE "C" NOT NULL,
        run_id text COLLATE "C" NOT NULL,
        step bigint NOT NULL,
        timestamp_ms bigint NOT NULL,
        label text NOT NULL,
        channels_json text NOT NULL,
        channels jsonb,
        metadata text,
        write_token text,
        PRIMARY KEY (workflow_id, run_id, step)
    );
    ALTER TABLE @schema@.atomr_snapshots ALTER COLUMN channels_json SET STORAGE EXTERNAL;
    CREATE TABLE @schema@.atomr_events (
        id bigserial PRIMARY KEY,
        payload text NOT NULL,
        created_ms bigint NOT NULL
    );
    """,
    2: """
    DO $drop$
    DECLARE
        f regprocedure;
    BEGIN
        FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
            WHERE p.pronamespace = @schema_literal@::regnamespace AND p.proname LIKE 'atomr\\_%'
        LOOP
            EXECUTE 'DROP FUNCTION ' || f;
        END LOOP;
    END
    $drop$;
    ALTER TABLE @schema@.atomr_runs
        ADD COLUMN IF NOT EXISTS answer_step bigint,
        ADD COLUMN IF NOT EXISTS answer text,
        ADD COLUMN IF NOT EXISTS cancel_ms bigint,
        ADD COLUMN IF NOT EXISTS queue_state text,
        ADD COLUMN IF NOT EXISTS attempts integer NOT NULL DEFAULT 0,
        ADD COLUMN IF NOT EXISTS ready_at_ms bigint NOT NULL DEFAULT 0,
        ADD COLUMN IF NOT EXISTS leased_until_ms bigint,
        ADD COLUMN IF NOT EXISTS reason text,
        ADD COLUMN IF NOT EXISTS settled bigint NOT NULL DEFAULT 0,
        ADD COLUMN IF NOT EXISTS expired boolean NOT NULL DEFAULT false;
    CREATE INDEX IF NOT EXISTS atomr_runs_ready
        ON @schema@.atomr_runs (workflow_id, ready_at_ms)
        WHERE queue_state = 'queued';
    CREATE INDEX IF NOT EXISTS atomr_runs_claimed
        ON @schema@.atomr_runs (workflow_id, leased_until_ms)
        WHERE leased_until_ms IS NOT NULL;
    CREATE TABLE IF NOT EXISTS @schema@.atomr_workers (
        worker_id text COLLATE "C" PRIMARY KEY,
        info text NOT NULL,
        expires_ms bigint NOT NULL
    );
    CREATE TABLE IF NOT EXISTS @schema@.atomr_permits (
        workflow_id text COLLATE "C" NOT NULL,
        holder text COLLATE "C" NOT NULL,
        expires_ms bigint NOT NULL,
        PRIMARY KEY (workflow_id, holder)
    );
    """,
    3: "SELECT 1",  # no table changes: setup() creates version 3's new function, atomr_save_many
}
"""Version -> the statements that bring the previous version to it."""


def quote_identifier(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def functions_sql(schema: str) -> str:
    """The ``CREATE OR REPLACE FUNCTION`` statements, for ``schema``."""
    text = resources.files(__package__).joinpath("postgres_functions.sql").read_text("utf-8")
    return text.replace("@schema@", quote_identifier(schema))


def migration_sql(version: int, schema: str) -> str:
    """The statements of migration ``version``, for ``schema`` (``@schema_literal@``: its
    quoted name as a string literal)."""
    quoted = quote_identifier(schema)
    literal = "'" + quoted.replace("'", "''") + "'"
    return MIGRATIONS[version].replace("@schema_literal@", literal).replace("@schema@", quoted)
