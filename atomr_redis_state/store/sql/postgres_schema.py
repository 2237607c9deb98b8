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
- The functions of ``postgres_functions.sql``, one per write operation.
"""

from __future__ import annotations

from importlib import resources

SCHEMA_VERSION = 1
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
    return MIGRATIONS[version].replace("@schema@", quote_identifier(schema))
