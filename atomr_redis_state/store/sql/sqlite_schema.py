"""The SQLite store's schema: its tables, its version, and the migrations to it.

Tables (every name starts with ``atomr_``):

- ``atomr_schema``: one row, the schema version :func:`setup` last brought the file to.
- ``atomr_runs``: one row per run (or per run being started under a lease): its deadline (NULL:
  never expires), how many snapshots it has, its lease, fencing counter and note, a human's
  answer waiting to be used, a cancel request, and its place in the fleet's work queue (state,
  attempts, ready time, the deadline of the claim a worker holds, the last failure's reason).
  Index ``atomr_runs_deadline`` finds expired runs for the lazy sweep, ``atomr_runs_ready`` a
  workflow's queued runs by ready time, ``atomr_runs_claimed`` its claims by deadline (takeover).
- ``atomr_snapshots``: one row per snapshot, keyed by (workflow, run, super-step): the channels
  as the exact JSON text the codec wrote (query them with SQLite's ``json_extract``), the
  label, timestamp, metadata and the write token of an exclusive save.
- ``atomr_events``: recent checkpoint events (the last 10,000), for :meth:`watch` across
  processes. Index ``atomr_events_workflow`` serves a watcher's poll.
- ``atomr_fence``: the last fencing token issued, so that tokens keep growing across runs
  deleted and started again within one clock tick.
- ``atomr_workers``: each fleet worker's heartbeat (what it runs), until it expires.
- ``atomr_permits``: the fleet-wide in-flight permits of each workflow, until they expire.

Version 2 added the answer, cancel and queue columns and the last two tables.
"""

from __future__ import annotations

import sqlite3

from ...errors import SchemaVersionError

SCHEMA_VERSION = 2
"""The version this library writes and understands."""

MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE atomr_runs (
        workflow_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        deadline_ms INTEGER,
        steps INTEGER NOT NULL DEFAULT 0,
        fence INTEGER NOT NULL DEFAULT 0,
        owner TEXT,
        token INTEGER NOT NULL DEFAULT 0,
        lease_until_ms INTEGER NOT NULL DEFAULT 0,
        lease_ttl_ms INTEGER NOT NULL DEFAULT 0,
        note TEXT,
        PRIMARY KEY (workflow_id, run_id)
    ) WITHOUT ROWID;
    CREATE INDEX atomr_runs_deadline ON atomr_runs (deadline_ms) WHERE deadline_ms IS NOT NULL;
    CREATE TABLE atomr_snapshots (
        workflow_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        step INTEGER NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        label TEXT NOT NULL,
        channels TEXT NOT NULL,
        metadata TEXT,
        write_token TEXT,
        PRIMARY KEY (workflow_id, run_id, step)
    );
    CREATE TABLE atomr_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        workflow_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        payload BLOB NOT NULL
    );
    CREATE INDEX atomr_events_workflow ON atomr_events (workflow_id, id);
    CREATE TABLE atomr_fence (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL);
    INSERT INTO atomr_fence (id, last) VALUES (1, 0);
    """,
    2: """
    ALTER TABLE atomr_runs ADD COLUMN answer_step INTEGER;
    ALTER TABLE atomr_runs ADD COLUMN answer TEXT;
    ALTER TABLE atomr_runs ADD COLUMN cancel_ms INTEGER;
    ALTER TABLE atomr_runs ADD COLUMN queue_state TEXT;
    ALTER TABLE atomr_runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE atomr_runs ADD COLUMN ready_at_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE atomr_runs ADD COLUMN leased_until_ms INTEGER;
    ALTER TABLE atomr_runs ADD COLUMN reason TEXT;
    ALTER TABLE atomr_runs ADD COLUMN settled INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE atomr_runs ADD COLUMN expired INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX atomr_runs_ready ON atomr_runs (workflow_id, ready_at_ms)
        WHERE queue_state = 'queued';
    CREATE INDEX atomr_runs_claimed ON atomr_runs (workflow_id, leased_until_ms)
        WHERE leased_until_ms IS NOT NULL;
    CREATE TABLE atomr_workers (
        worker_id TEXT PRIMARY KEY,
        info TEXT NOT NULL,
        expires_ms INTEGER NOT NULL
    );
    CREATE TABLE atomr_permits (
        workflow_id TEXT NOT NULL,
        holder TEXT NOT NULL,
        expires_ms INTEGER NOT NULL,
        PRIMARY KEY (workflow_id, holder)
    ) WITHOUT ROWID;
    """,
}
"""Version -> the statements that bring the previous version to it."""


def schema_version(conn: sqlite3.Connection) -> int | None:
    """The version recorded in the file, or None when the store's tables are not there."""
    try:
        row = conn.execute("SELECT version FROM atomr_schema").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    return None if row is None else int(row[0])


def check_schema(conn: sqlite3.Connection) -> None:
    """Refuse a file without the tables, or with a schema other than this library's (an older
    one until :func:`migrate` brings it up to date, a newer one always)."""
    found = schema_version(conn)
    if found != SCHEMA_VERSION:
        raise SchemaVersionError(found, SCHEMA_VERSION)


def migrate(conn: sqlite3.Connection) -> None:
    """Create the tables, or bring older ones to :data:`SCHEMA_VERSION`, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS atomr_schema "
            "(id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
        )
        found = schema_version(conn) or 0
        if found > SCHEMA_VERSION:
            raise SchemaVersionError(found, SCHEMA_VERSION)
        for version in range(found + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
        conn.execute(
            "INSERT INTO atomr_schema (id, version) VALUES (1, ?) "
            "ON CONFLICT (id) DO UPDATE SET version = excluded.version",
            (SCHEMA_VERSION,),
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
