"""What only the SQL stores have: schema management, the rows they keep (exact JSON text beside
a queryable form), lazy sweeping of expired runs, events across processes, and typed errors for
a locked database, a full disk and a lost connection."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from atomr_redis_state import (
    JSON,
    CheckpointKey,
    Lease,
    Snapshot,
    StoreUnavailableError,
)
from atomr_redis_state.errors import (
    CheckpointConflictError,
    LeaseLostError,
    SchemaVersionError,
    StoreDiskFullError,
    StoreLockedError,
)
from atomr_redis_state.store.sql import (
    PostgresCheckpointer,
    SqliteCheckpointer,
    postgres_schema,
    sqlite_schema,
)
from atomr_redis_state.testing import PostgresServer, postgres_pool
from tests.conftest import Backend

WF = "wf-sql"
SQL_BACKENDS = ["sqlite", "postgres"]
both = pytest.mark.parametrize("backend", SQL_BACKENDS, indirect=True)

AnyStore = SqliteCheckpointer | PostgresCheckpointer


def snap(run: str, step: int, label: str = "", **values: Any) -> Snapshot:
    return Snapshot(CheckpointKey(WF, run, step), values or {"step": step}, label)


async def query(store: AnyStore, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of a raw query on the store's database (``?`` placeholders, the store's tables)."""
    if isinstance(store, SqliteCheckpointer):

        def run() -> list[tuple[Any, ...]]:
            with sqlite3.connect(store.path) as conn:
                return conn.execute(sql.replace("{s}.", ""), params).fetchall()

        return await asyncio.to_thread(run)
    async with store.pool.connection() as conn:
        text = sql.replace("?", "%s").replace("{s}", f'"{store.schema}"')
        cursor = await conn.execute(text, params)
        rows: list[tuple[Any, ...]] = await cursor.fetchall()
        return rows


def schema_version(store: AnyStore) -> int:
    """The schema version this library writes for the store's kind."""
    if isinstance(store, SqliteCheckpointer):
        return sqlite_schema.SCHEMA_VERSION
    return postgres_schema.SCHEMA_VERSION


def make(backend: Backend, **options: Any) -> AnyStore:
    store = backend.make(**options)
    assert isinstance(store, SqliteCheckpointer | PostgresCheckpointer)
    return store


@both
async def test_setup_is_safe_to_run_again(backend: Backend) -> None:
    store = make(backend)
    await store.save(snap("r", 0))
    await store.setup()
    await store.setup()
    assert (await store.latest(WF, "r")) is not None
    assert await query(store, "SELECT version FROM {s}.atomr_schema") == [(schema_version(store),)]


@both
async def test_a_store_refuses_a_newer_schema(backend: Backend) -> None:
    store = make(backend)
    await store.save(snap("r", 0))
    await raw_write(make(backend), "UPDATE {s}.atomr_schema SET version = 99")
    newer = make(backend)
    with pytest.raises(SchemaVersionError, match="99"):
        await newer.latest(WF, "r")
    with pytest.raises(SchemaVersionError, match="upgrade"):
        await newer.setup()


async def raw_write(store: AnyStore, sql: str) -> None:
    if isinstance(store, SqliteCheckpointer):

        def run() -> None:
            with sqlite3.connect(store.path) as conn:
                conn.execute(sql.replace("{s}.", ""))

        await asyncio.to_thread(run)
        return
    async with store.pool.connection() as conn:
        await conn.execute(sql.replace("{s}", f'"{store.schema}"'))


@both
async def test_values_are_kept_as_their_exact_json_text(backend: Backend) -> None:
    store = make(backend)
    values: dict[str, JSON] = {
        "zero": -0.0,
        "huge": 1e308,
        "big": 2**64 - 1,
        "nul": "a\x00b",
        "s": "é",
    }
    await store.save(Snapshot(CheckpointKey(WF, "r", 0), values))
    found = await store.latest(WF, "r")
    assert found is not None
    assert found.values == values
    assert repr(found.values["zero"]) == "-0.0"


@both
async def test_forks_keep_exact_values_and_their_edits(backend: Backend) -> None:
    store = make(backend)
    values: dict[str, JSON] = {"nul": "a\x00b", "zero": -0.0, "status": "acting", "n": 1}
    await store.save(Snapshot(CheckpointKey(WF, "r", 0), values))
    first = await store.fork(CheckpointKey(WF, "r", 0), {"status": "forked", "new": 1e308})
    second = await store.fork(CheckpointKey(WF, first, 0), {"status": "again", "nul": "\x00"})
    empty = await store.fork(CheckpointKey(WF, second, 0))
    found = [await store.latest(WF, run) for run in (first, second, empty)]
    assert [f and f.values for f in found] == [
        {"nul": "a\x00b", "zero": -0.0, "status": "forked", "n": 1, "new": 1e308},
        {"nul": "\x00", "zero": -0.0, "status": "again", "n": 1, "new": 1e308},
        {"nul": "\x00", "zero": -0.0, "status": "again", "n": 1, "new": 1e308},
    ]


@both
async def test_channels_can_be_queried_in_sql(backend: Backend) -> None:
    store = make(backend)
    await store.save(snap("r", 0, status="acting", n=3))
    await store.save(snap("nul", 0, status="a\x00b"))
    await store.fork(CheckpointKey(WF, "r", 0), {"status": "forked"}, run_id="r~fork-1")
    if isinstance(store, SqliteCheckpointer):
        sql = "SELECT run_id, json_extract(channels, '$.status') FROM atomr_snapshots"
    else:
        sql = "SELECT run_id, channels->>'status' FROM {s}.atomr_snapshots"
    rows = dict(await query(store, sql + " ORDER BY run_id"))
    assert rows["r"] == "acting"
    assert rows["r~fork-1"] == "forked"
    if isinstance(store, PostgresCheckpointer):
        # jsonb cannot hold U+0000: there the queryable column is NULL, the exact text is kept.
        assert rows["nul"] is None
    found = await store.latest(WF, "nul")
    assert found is not None
    assert found.values["status"] == "a\x00b"


@both
async def test_an_expired_run_is_invisible_at_once_and_its_rows_go_later(
    backend: Backend,
) -> None:
    store = make(backend, ttl=0.2)
    for step in range(3):
        await store.save(snap("r", step))
    await asyncio.sleep(0.55)
    assert await store.latest(WF, "r") is None
    assert await store.list(WF, "r") == []
    assert await store.list_runs(WF) == []
    rows = "SELECT step FROM {s}.atomr_snapshots WHERE run_id = ? ORDER BY step"
    assert await query(store, rows, "r") == [(0,), (1,), (2,)]
    await store.save(snap("r", 7))
    assert await query(store, rows, "r") == [(7,)]
    assert [m.super_step for m in await store.list(WF, "r")] == [7]


@both
async def test_starting_a_run_deletes_the_rows_of_runs_that_expired(backend: Backend) -> None:
    store = make(backend, ttl=0.2)
    await store.save(snap("old", 0))
    await store.save(snap("old", 1))
    await asyncio.sleep(0.55)
    count = "SELECT count(*) FROM {s}.atomr_snapshots WHERE run_id = ?"
    await store.save(snap("other", 0))  # "other" is new: the save sweeps
    assert await query(store, count, "old") == [(0,)]
    assert await query(store, "SELECT count(*) FROM {s}.atomr_runs WHERE run_id = ?", "old") == [
        (0,)
    ]
    assert await query(store, count, "other") == [(1,)]


@both
async def test_a_watch_sees_saves_made_by_another_process(backend: Backend) -> None:
    store = make(backend)
    if isinstance(store, SqliteCheckpointer):
        opening = f"SqliteCheckpointer({store.path!r})"
    else:
        conninfo = store.pool.conninfo
        opening = f"PostgresCheckpointer({conninfo!r}, schema={store.schema!r})"
    script = (
        "import asyncio\n"
        "from atomr_redis_state import CheckpointKey, Snapshot\n"
        "from atomr_redis_state.store.sql import PostgresCheckpointer, SqliteCheckpointer\n"
        "async def main():\n"
        f"    async with {opening} as store:\n"
        "        for step in range(3):\n"
        f"            await store.save(Snapshot(CheckpointKey({WF!r}, 'far', step), {{}}))\n"
        "asyncio.run(main())\n"
    )
    async with store.watch(WF) as events:
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
        seen = await take(events, 3)
    assert [(e.kind, e.run_id, e.super_step) for e in seen] == [
        ("saved", "far", 0),
        ("saved", "far", 1),
        ("saved", "far", 2),
    ]


@both
async def test_an_event_too_long_to_notify_still_arrives(backend: Backend) -> None:
    store = make(backend)
    label = "x" * 20_000  # a Postgres NOTIFY payload holds 8,000 bytes at most
    async with store.watch(WF, "r") as events:
        await store.save(snap("r", 0, label))
        (event,) = await take(events, 1)
    assert (event.run_id, event.super_step, event.label) == ("r", 0, label)


async def take(events: AsyncIterator[Any], count: int) -> list[Any]:
    async def collect() -> list[Any]:
        return [await anext(events) for _ in range(count)]

    return await asyncio.wait_for(collect(), timeout=15)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_locked_sqlite_file_is_a_typed_error_and_nothing_is_written(
    backend: Backend, tmp_path: Path
) -> None:
    path = tmp_path / "locked.db"
    store = SqliteCheckpointer(path, busy_timeout=0.1)
    await store.setup()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreLockedError, match="locked"):
            await store.save(snap("r", 0))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert await store.latest(WF, "r") is None
    await store.save(snap("r", 0))
    assert await store.latest(WF, "r") is not None
    await store.aclose()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_full_sqlite_disk_is_a_typed_error_and_nothing_is_written(
    backend: Backend, tmp_path: Path
) -> None:
    store = SqliteCheckpointer(tmp_path / "full.db")
    await store.setup()
    await store.save(snap("r", 0))
    # The file may not grow past its size now: as a full disk does, SQLite answers SQLITE_FULL.
    await store._run(lambda conn: conn.execute("PRAGMA max_page_count = 1").fetchall())
    with pytest.raises(StoreDiskFullError, match="full"):
        await store.save(snap("r", 1, blob="x" * 100_000))
    assert [m.super_step for m in await store.list(WF, "r")] == [0]
    await store.aclose()


async def released_lease(store: AnyStore, run_id: str) -> Lease:
    """A lease on ``run_id`` (saved at step 0 first) that its owner released: no longer held."""
    await store.save(snap(run_id, 0))
    lease = await store.acquire_lease(WF, run_id, "w1", 30)
    await store.release_lease(lease)
    return lease


async def gathered(store: SqliteCheckpointer, *calls: Any) -> list[Any]:
    """The outcomes (results or errors) of ``calls`` sent at once, held back until all are
    queued, so that the store's thread takes them as one batch; and how many commits it made."""
    gate = threading.Event()
    commits: list[str] = []
    await store._run(
        lambda conn: conn.set_trace_callback(
            lambda sql: commits.append(sql) if sql == "COMMIT" else None
        )
    )
    blocker = asyncio.ensure_future(store._run(lambda conn: gate.wait(10)))
    await asyncio.sleep(0.05)  # the thread is inside the blocker now
    tasks = [asyncio.ensure_future(call) for call in calls]
    await asyncio.sleep(0)  # every call queued
    gate.set()
    await blocker
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    await store._run(lambda conn: conn.set_trace_callback(None))
    return [*outcomes, len(commits)]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_sqlite_writes_sent_together_share_one_commit_and_each_is_all_or_nothing(
    backend: Backend, tmp_path: Path
) -> None:
    async with SqliteCheckpointer(tmp_path / "batch.db") as store:
        await store.setup()
        lease = await released_lease(store, "leased")
        *outcomes, commits = await gathered(
            store,
            store.save(snap("a", 0, value="first"), exclusive=True),
            store.save(snap("a", 0, value="second"), exclusive=True),
            store.save(snap("leased", 1), lease=lease),  # a lease no longer held
            store.save(snap("b", 0)),
            store.latest(WF, "a"),
        )
    first, second, stale, other, read = outcomes
    assert commits == 1
    assert first is None
    assert isinstance(second, CheckpointConflictError)
    assert isinstance(stale, LeaseLostError)
    assert other is None
    assert read is None  # reads go first: none sees a write before its commit
    async with SqliteCheckpointer(tmp_path / "batch.db") as reopened:
        found = await reopened.load(CheckpointKey(WF, "a", 0))
        assert found is not None
        assert found.values == {"value": "first"}
        assert await reopened.load(CheckpointKey(WF, "b", 0)) is not None
        assert [m.super_step for m in await reopened.list(WF, "leased")] == [0]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_closing_a_sqlite_store_runs_the_calls_made_before_and_refuses_the_ones_after(
    backend: Backend, tmp_path: Path
) -> None:
    store = SqliteCheckpointer(tmp_path / "close.db")
    await store.setup()
    gate = threading.Event()
    blocker = asyncio.ensure_future(store._run(lambda conn: gate.wait(10)))
    await asyncio.sleep(0.05)  # the thread is inside the blocker now
    save = asyncio.ensure_future(store.save(snap("r", 0)))
    await asyncio.sleep(0)  # the save is queued
    closing = asyncio.ensure_future(store.aclose())
    await asyncio.sleep(0)
    with pytest.raises(StoreUnavailableError, match="closed"):
        await store.latest(WF, "r")
    gate.set()
    await blocker
    await save
    await closing
    with pytest.raises(StoreUnavailableError, match="closed"):
        await store.save(snap("r", 1))
    async with SqliteCheckpointer(tmp_path / "close.db") as reopened:
        assert [m.super_step for m in await reopened.list(WF, "r")] == [0]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_sqlite_writes_sent_together_to_a_locked_file_all_fail_and_none_is_written(
    backend: Backend, tmp_path: Path
) -> None:
    path = tmp_path / "locked.db"
    async with SqliteCheckpointer(path, busy_timeout=0.1) as store:
        await store.setup()
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            *outcomes, _ = await gathered(store, *(store.save(snap(f"r{n}", 0)) for n in range(5)))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert all(isinstance(outcome, StoreLockedError) for outcome in outcomes)
        assert await store.list_runs(WF) == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_write_that_fills_the_disk_fails_alone_and_the_rest_of_its_batch_commits(
    backend: Backend, tmp_path: Path
) -> None:
    """SQLite rolls the whole transaction back on a full disk: the batch's other writes run
    again in a new one."""
    async with SqliteCheckpointer(tmp_path / "full.db") as store:
        await store.setup()
        await store.save(snap("r", 0))
        await store._run(lambda conn: conn.execute("PRAGMA max_page_count = 1").fetchall())
        *outcomes, _ = await gathered(
            store,
            store.save(snap("small", 0)),
            store.save(snap("r", 1, blob="x" * 100_000)),
            store.save(snap("small2", 0)),
        )
        assert outcomes[0] is None
        assert isinstance(outcomes[1], StoreDiskFullError)
        assert outcomes[2] is None
        assert await store.load(CheckpointKey(WF, "small", 0)) is not None
        assert await store.load(CheckpointKey(WF, "r", 1)) is None
        assert await store.load(CheckpointKey(WF, "small2", 0)) is not None


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_sqlite_store_without_its_tables_says_to_run_setup(
    backend: Backend, tmp_path: Path
) -> None:
    async with SqliteCheckpointer(tmp_path / "empty.db") as store:
        with pytest.raises(SchemaVersionError, match="setup"):
            await store.latest(WF, "r")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_an_in_memory_sqlite_store_works_and_watches(backend: Backend) -> None:
    async with SqliteCheckpointer(":memory:") as store:
        await store.setup()
        async with store.watch(WF) as events:
            await store.save(snap("r", 0))
            (event,) = await take(events, 1)
        assert (event.kind, event.run_id) == ("saved", "r")
        assert (await store.latest(WF, "r")) is not None


async def lock_run(conn: Any, schema: str, run_id: str) -> None:
    """Lock a run's row for the rest of ``conn``'s transaction, as a store's call does."""
    await conn.execute(
        f'SELECT 1 FROM "{schema}".atomr_runs WHERE run_id = %s FOR UPDATE', (run_id,)
    )


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgres_schemas_keep_stores_apart(
    backend: Backend, postgres_server: PostgresServer
) -> None:
    pool = await postgres_pool(postgres_server.url)
    stores = [PostgresCheckpointer(pool, schema=f"s{uuid.uuid4().hex[:8]}") for _ in range(2)]
    for store in stores:
        await store.setup()
    await stores[0].save(snap("r", 0))
    assert await stores[1].latest(WF, "r") is None
    assert await stores[1].list_runs(WF) == []
    with pytest.raises(SchemaVersionError, match="setup"):
        await PostgresCheckpointer(pool, schema="never_set_up").latest(WF, "r")
    await pool.close()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgres_setup_needs_no_superuser(
    backend: Backend, postgres_server: PostgresServer
) -> None:
    user = f"app{uuid.uuid4().hex[:8]}"
    admin = await postgres_pool(postgres_server.url)
    async with admin.connection() as conn:
        await conn.execute(f"CREATE ROLE {user} LOGIN NOSUPERUSER")
        await conn.execute(f"GRANT CREATE ON DATABASE postgres TO {user}")
    await admin.close()
    url = postgres_server.url.replace("postgres@", f"{user}@", 1)
    async with PostgresCheckpointer(url, schema=f"own_{user}") as store:
        await store.setup()
        await store.save(snap("r", 0))
        assert (await store.latest(WF, "r")) is not None


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_lost_postgres_connection_is_a_typed_error_and_the_next_call_works(
    backend: Backend, postgres_server: PostgresServer
) -> None:
    store = make(backend)
    await store.save(snap("r", 0))
    admin = await postgres_pool(postgres_server.url)
    async with admin.connection() as conn:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
    await admin.close()
    with pytest.raises(StoreUnavailableError):
        await store.save(snap("r", 1))
    for _ in range(20):  # the pool drops the broken connections as it meets them
        try:
            await store.save(snap("r", 1))
            break
        except StoreUnavailableError:
            await asyncio.sleep(0.05)
    assert [m.super_step for m in await store.list(WF, "r")] == [0, 1]


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgres_refuses_nul_in_ids_before_writing(backend: Backend) -> None:
    store = make(backend)
    with pytest.raises(ValueError, match="U\\+0000"):
        await store.save(snap("r\x00", 0))
    with pytest.raises(ValueError, match="U\\+0000"):
        await store.save(snap("r", 0, "lab\x00el"))
    assert await store.list_runs(WF) == []


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_version_2_postgres_schema_is_refused_until_setup_adds_the_batch_function(
    backend: Backend, postgres_server: PostgresServer
) -> None:
    schema = f"v2_{uuid.uuid4().hex[:8]}"
    pool = await postgres_pool(postgres_server.url)
    await PostgresCheckpointer(pool, schema=schema).setup()
    await PostgresCheckpointer(pool, schema=schema).save(snap("old", 0))
    async with pool.connection() as conn:  # as version 2 of this library left it
        await conn.execute(f'UPDATE "{schema}".atomr_schema SET version = 2')
        await conn.execute(f'DROP FUNCTION "{schema}".atomr_save_many')
    store = PostgresCheckpointer(pool, schema=schema)
    with pytest.raises(SchemaVersionError, match="version 2"):
        await store.latest(WF, "old")
    await store.setup()
    await asyncio.gather(*(store.save(snap("old", step)) for step in range(1, 6)))
    assert [m.super_step for m in await store.list(WF, "old")] == [0, 1, 2, 3, 4, 5]
    assert await query(store, "SELECT version FROM {s}.atomr_schema") == [(3,)]
    await pool.close()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_setup_migrates_a_version_1_postgres_schema_in_place(
    backend: Backend, postgres_server: PostgresServer
) -> None:
    from atomr_redis_state.store.sql.postgres_schema import migration_sql, quote_identifier

    schema = f"v1_{uuid.uuid4().hex[:8]}"
    s = quote_identifier(schema)
    pool = await postgres_pool(postgres_server.url)
    async with pool.connection() as conn:  # a schema as version 1 of this library left it
        await conn.execute(f"CREATE SCHEMA {s}")
        await conn.execute(f"CREATE TABLE {s}.atomr_schema (version integer NOT NULL)")
        await conn.execute(migration_sql(1, schema))
        await conn.execute(f"INSERT INTO {s}.atomr_schema (version) VALUES (1)")
        await conn.execute(
            f"INSERT INTO {s}.atomr_runs (workflow_id, run_id, steps, note) "
            "VALUES (%s, 'old', 1, '\"kept\"')",
            (WF,),
        )
        await conn.execute(
            f"INSERT INTO {s}.atomr_snapshots (workflow_id, run_id, step, timestamp_ms, label, "
            "channels_json, channels) VALUES (%s, 'old', 0, 1, 'init', '{\"a\":1}', '{\"a\":1}')",
            (WF,),
        )
        await conn.execute(  # a version-1 function whose signature version 2 changed
            f"CREATE FUNCTION {s}.atomr_renew_lease(text, text, bigint, bigint) RETURNS bigint "
            "LANGUAGE sql AS 'SELECT 0::bigint'"
        )
    store = PostgresCheckpointer(pool, schema=schema)
    with pytest.raises(SchemaVersionError, match="version 1"):
        await store.latest(WF, "old")
    await store.setup()
    old = await store.latest(WF, "old")
    assert old is not None
    assert old.values == {"a": 1}
    assert (await store.run_record(WF, "old")).note == "kept"
    lease = await store.acquire_lease(WF, "old", "w", 30)
    assert (await store.renew_lease(lease)).token == lease.token
    assert await store.submit(snap("new", 0))
    assert (await store.queue_depth(WF)).ready == 1
    assert await query(store, "SELECT version FROM {s}.atomr_schema") == [(3,)]
    renew_functions = await query(
        store,
        "SELECT count(*) FROM pg_proc WHERE proname = 'atomr_renew_lease' "
        "AND pronamespace = ?::regnamespace",
        s,
    )
    assert renew_functions == [(1,)]
    await pool.close()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_every_postgres_operation_is_one_round_trip(
    backend: Backend, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """Counted in libpq's protocol trace of the store's one connection: one Sync (one
    pipeline of Parse, Bind, Execute sent at once, one answer), or one simple Query, per call."""
    from psycopg_pool import AsyncConnectionPool

    trace = (tmp_path / "trace").open("w")

    async def traced(conn: Any) -> None:
        conn.pgconn.trace(trace.fileno())

    pool: Any = AsyncConnectionPool(
        postgres_server.url,
        min_size=1,
        max_size=1,
        kwargs={"autocommit": True},
        open=False,
        configure=traced,
    )
    await pool.open(wait=True)
    store = PostgresCheckpointer(pool, schema=f"rt_{uuid.uuid4().hex[:8]}")
    await store.setup()

    def round_trips() -> int:
        lines = (tmp_path / "trace").read_text().splitlines()
        sent = [line.split("\t")[3] for line in lines if "\tF\t" in line]
        return sent.count("Sync") + sent.count("Query")  # extended, or simple protocol

    async def one(call: Any) -> Any:
        before = round_trips()
        result = await call
        assert round_trips() - before == 1, call
        return result

    await one(store.submit(snap("q", 0)))
    claim = await one(store.claim(WF, "w", 30))
    assert claim is not None
    lease = claim.lease
    await one(store.save(snap("q", 1), lease=lease))
    await one(store.renew_lease(lease))
    await one(store.record_answer(WF, "q", "yes", super_step=1, lease=lease))
    await one(store.run_record(WF, "q"))
    await one(store.finish(lease, "paused"))
    await one(store.resume_run(WF, "q", "yes"))
    await one(store.cancel(WF, "q"))
    await one(store.submit(snap("f", 0)))
    failed = await one(store.claim(WF, "w", 30))
    await one(store.finish(failed.lease, "failed", reason="boom"))
    await one(store.requeue(WF, "f"))
    await one(store.queue_depth(WF))
    await one(store.heartbeat("w", {"runs": 1}, 30))
    await one(store.workers())
    await one(store.forget_worker("w"))
    await one(store.take_permit(WF, "h", 2, 30))
    await one(store.renew_permits(WF, ["h", "gone"], 30))
    await one(store.drop_permit(WF, "h"))
    await one(store.list_workflows())
    lease = await one(store.acquire_lease(WF, "f", "w", 30))
    await one(store.release_lease(lease, note="done"))
    async with store.wake_ups([WF, "other"]) as wake:
        await one(wake.wait(at_most=0))
    await pool.close()
    trace.close()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_postgres_wake_up_comes_from_another_stores_submit(
    backend: Backend, postgres_server: PostgresServer
) -> None:
    waiter = make(backend)
    assert isinstance(waiter, PostgresCheckpointer)
    other = PostgresCheckpointer(postgres_server.url, schema=waiter.schema)
    async with other, waiter.wake_ups([WF]) as wake:
        await wake.wait(at_most=0)
        started = asyncio.get_running_loop().time()
        waiting = asyncio.ensure_future(wake.wait(at_most=20))
        await asyncio.sleep(0.1)
        await other.submit(snap("r", 0))  # a NOTIFY from another pool (as from a process)
        await asyncio.wait_for(waiting, 10)
        assert asyncio.get_running_loop().time() - started < 10


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_postgres_wake_up_comes_when_a_delayed_run_is_due(backend: Backend) -> None:
    store = make(backend)
    await store.submit(snap("later", 0), not_before=timedelta(seconds=1))
    async with store.wake_ups([WF]) as wake:
        await wake.wait(at_most=0)
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(wake.wait(at_most=30), 20)
        assert 0.5 < asyncio.get_running_loop().time() - started < 20
    assert await store.claim(WF, "w", 30) is not None


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_postgres_wake_up_listens_again_after_a_lost_connection(
    backend: Backend, postgres_server: PostgresServer
) -> None:
    store = make(backend)
    async with store.wake_ups([WF]) as wake:
        await wake.wait(at_most=0)
        admin = await postgres_pool(postgres_server.url)
        async with admin.connection() as conn:
            killed = await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND query LIKE 'LISTEN %'"
            )
            assert await killed.fetchall() == [(True,)]  # the wake-ups' LISTEN connection
        await admin.close()
        await asyncio.sleep(0.2)
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(wake.wait(at_most=20), 10)  # at once: a gap, work may be ready
        assert asyncio.get_running_loop().time() - started < 10
        waiting = asyncio.ensure_future(wake.wait(at_most=20))
        await asyncio.sleep(0.1)
        await store.submit(snap("after", 0))  # heard on the new LISTEN connection
        await asyncio.wait_for(waiting, 10)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgres_claims_racing_from_many_connections_take_each_run_once(
    backend: Backend, postgres_server: PostgresServer
) -> None:
    first = make(backend)
    assert isinstance(first, PostgresCheckpointer)
    runs = [f"r{i:03}" for i in range(60)]
    for run_id in runs:
        await first.submit(snap(run_id, 0))
    stores = [PostgresCheckpointer(postgres_server.url, schema=first.schema) for _ in range(4)]

    async def claimer(store: PostgresCheckpointer, owner: str) -> list[str]:
        taken = []
        while (claim := await store.claim(WF, owner, 30)) is not None:
            taken.append(claim.lease.run_id)
        return taken

    claimers = [claimer(store, f"w{i}-{j}") for i, store in enumerate(stores) for j in range(4)]
    taken = [run_id for found in await asyncio.gather(*claimers) for run_id in found]
    for store in stores:
        await store.aclose()
    assert sorted(taken) == runs
    assert (await first.queue_depth(WF)).running == len(runs)


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgres_permits_racing_from_many_connections_never_pass_the_cap(
    backend: Backend, postgres_server: PostgresServer
) -> None:
    first = make(backend)
    assert isinstance(first, PostgresCheckpointer)
    stores = [PostgresCheckpointer(postgres_server.url, schema=first.schema) for _ in range(6)]
    for store in stores:  # each with connections enough for its takers at once
        await asyncio.gather(*(store.workers() for _ in range(5)))
    for round_ in range(8):  # a fresh workflow each round: 30 takers race for 3 permits
        takers = [
            store.take_permit(f"{WF}-{round_}", f"h{i}-{j}", 3, 30)
            for i, store in enumerate(stores)
            for j in range(5)
        ]
        taken = await asyncio.gather(*takers)
        assert taken.count(True) == 3
    for store in stores:
        await store.aclose()


def test_the_readme_sqlite_example_runs_as_written(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## SQLite and Postgres stores") :]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None
    script = tmp_path / "example.py"
    script.write_text(found.group(1))
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "{'step': 0}\n"
    assert (tmp_path / "runs.db").exists()


@both
async def test_a_closed_store_says_so(backend: Backend) -> None:
    store = make(backend)
    await store.save(snap("r", 0))
    await store.aclose()
    await store.aclose()  # closing twice is fine
    if isinstance(store, SqliteCheckpointer):
        with pytest.raises(StoreUnavailableError, match="closed"):
            await store.latest(WF, "r")


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgres_without_jsonb_keeps_only_the_exact_text(
    backend: Backend, postgres_server: PostgresServer
) -> None:
    pool = await postgres_pool(postgres_server.url)
    store = PostgresCheckpointer(pool, schema=f"j{uuid.uuid4().hex[:8]}", jsonb=False)
    await store.setup()
    await store.save(snap("r", 0, status="acting"))
    await store.fork(CheckpointKey(WF, "r", 0), {"status": "forked"}, run_id="r~fork-1")
    rows = await query(store, "SELECT run_id, channels FROM {s}.atomr_snapshots ORDER BY run_id")
    assert rows == [("r", None), ("r~fork-1", None)]
    found = await store.latest(WF, "r~fork-1")
    assert found is not None
    assert found.values == {"status": "forked"}
    await pool.close()


async def test_setup_migrates_a_version_1_sqlite_file_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript(sqlite_schema.MIGRATIONS[1])
    conn.execute("CREATE TABLE atomr_schema (id INTEGER PRIMARY KEY, version INTEGER NOT NULL)")
    conn.execute("INSERT INTO atomr_schema VALUES (1, 1)")
    conn.execute(
        "INSERT INTO atomr_runs (workflow_id, run_id, steps) VALUES (?, ?, 1)", (WF, "old")
    )
    conn.execute(
        "INSERT INTO atomr_snapshots (workflow_id, run_id, step, timestamp_ms, label, channels) "
        "VALUES (?, ?, 0, 1, 'init', '{\"a\":1}')",
        (WF, "old"),
    )
    conn.commit()
    conn.close()
    store = SqliteCheckpointer(path)
    with pytest.raises(SchemaVersionError):
        await store.latest(WF, "old")
    await store.setup()
    old = await store.latest(WF, "old")
    assert old is not None
    assert old.values == {"a": 1}
    assert await store.submit(snap("new", 0))
    assert (await store.queue_depth(WF)).ready == 1
    await store.aclose()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_postgres_run_locked_past_lock_timeout_is_a_typed_error(
    backend: Backend, postgres_server: PostgresServer
) -> None:
    schema = f"l{uuid.uuid4().hex[:8]}"
    url = f"{postgres_server.url}?options=-c%20lock_timeout%3D100"
    async with PostgresCheckpointer(url, schema=schema) as store:
        await store.setup()
        await store.save(snap("r", 0))
        admin = await postgres_pool(postgres_server.url)
        async with admin.connection() as conn, conn.transaction():
            await lock_run(conn, schema, "r")
            with pytest.raises(StoreLockedError, match="lock"):
                await store.save(snap("r", 1))
        await admin.close()
        assert [m.super_step for m in await store.list(WF, "r")] == [0]


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_call_kept_waiting_for_a_connection_past_the_pool_timeout_is_a_typed_error(
    backend: Backend, postgres_server: PostgresServer
) -> None:
    from psycopg_pool import AsyncConnectionPool

    schema = f"t{uuid.uuid4().hex[:8]}"
    pool: Any = AsyncConnectionPool(
        postgres_server.url,
        min_size=1,
        max_size=1,
        timeout=0.3,
        kwargs={"autocommit": True},
        open=False,
    )
    await pool.open(wait=True)
    store = PostgresCheckpointer(pool, schema=schema)
    await store.setup()
    await store.save(snap("r", 0))
    admin = await postgres_pool(postgres_server.url)
    async with admin.connection() as conn, conn.transaction():
        await lock_run(conn, schema, "r")
        stuck = asyncio.ensure_future(store.save(snap("r", 1)))  # holds the only connection
        await asyncio.sleep(0.1)
        with pytest.raises(StoreUnavailableError, match="connection"):
            await store.latest(WF, "r")
    await stuck
    assert [m.super_step for m in await store.list(WF, "r")] == [0, 1]
    await admin.close()
    await pool.close()


@asynccontextmanager
async def traced_postgres_store(
    url: str, trace_path: Path, **options: Any
) -> AsyncIterator[tuple[PostgresCheckpointer, Callable[[], int]]]:
    """A store on a pool of one connection whose protocol libpq traces to ``trace_path``, and
    a count of the statements sent so far (a Sync or a simple Query each)."""
    from psycopg_pool import AsyncConnectionPool

    trace = trace_path.open("w")

    async def traced(conn: Any) -> None:
        conn.pgconn.trace(trace.fileno())

    pool: Any = AsyncConnectionPool(
        url, min_size=1, max_size=1, kwargs={"autocommit": True}, open=False, configure=traced
    )
    await pool.open(wait=True)
    store = PostgresCheckpointer(pool, schema=f"b_{uuid.uuid4().hex[:8]}", **options)
    await store.setup()

    def statements() -> int:
        sent = [
            line.split("\t")[3] for line in trace_path.read_text().splitlines() if "\tF\t" in line
        ]
        return sent.count("Sync") + sent.count("Query")

    try:
        yield store, statements
    finally:
        await pool.close()
        trace.close()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgres_saves_made_at_once_share_one_statement_and_each_keeps_its_outcome(
    backend: Backend, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    async with traced_postgres_store(postgres_server.url, tmp_path / "trace") as (
        store,
        statements,
    ):
        lease = await released_lease(store, "leased")
        await store.save(snap("a", 0, value="kept"))
        before = statements()
        first, second, stale, other, retried = await asyncio.gather(
            store.save(snap("b", 0, value="first"), exclusive=True),
            store.save(snap("b", 0, value="second"), exclusive=True),
            store.save(snap("leased", 1), lease=lease),  # a lease no longer held
            store.save(snap("c", 0)),
            store.save(snap("a", 0, value="kept"), exclusive=True),  # the step exists
            return_exceptions=True,
        )
        assert statements() - before == 1
        assert first is None
        assert isinstance(second, CheckpointConflictError)
        assert isinstance(stale, LeaseLostError)
        assert other is None
        assert isinstance(retried, CheckpointConflictError)
        found = await store.load(CheckpointKey(WF, "b", 0))
        assert found is not None
        assert found.values == {"value": "first"}
        assert [m.super_step for m in await store.list(WF, "leased")] == [0]
        assert await store.load(CheckpointKey(WF, "c", 0)) is not None


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_postgres_reads_made_at_once_share_one_statement(
    backend: Backend, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    async with traced_postgres_store(postgres_server.url, tmp_path / "trace") as (
        store,
        statements,
    ):
        for run_id in ("a", "b"):
            for step in range(3):
                await store.save(snap(run_id, step, value=f"{run_id}{step}"))
        before = statements()
        a, missing, b = await asyncio.gather(
            store.latest(WF, "a"), store.latest(WF, "missing"), store.latest(WF, "b")
        )
        assert statements() - before == 1
        assert a is not None
        assert b is not None
        assert (a.key.super_step, a.values) == (2, {"value": "a2"})
        assert (b.key.super_step, b.values) == (2, {"value": "b2"})
        assert missing is None


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_locked_run_fails_only_its_own_save_in_a_batch(
    backend: Backend, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = f"{postgres_server.url}?options=-c%20lock_timeout%3D100"
    async with traced_postgres_store(url, tmp_path / "trace") as (store, statements):
        await store.save(snap("r", 0))
        admin = await postgres_pool(postgres_server.url)
        async with admin.connection() as conn, conn.transaction():
            await lock_run(conn, store.schema, "r")
            before = statements()
            locked, free = await asyncio.gather(
                store.save(snap("r", 1)), store.save(snap("s", 0)), return_exceptions=True
            )
            assert statements() - before == 1
        await admin.close()
        assert isinstance(locked, StoreLockedError)
        assert free is None
        assert [m.super_step for m in await store.list(WF, "r")] == [0]
        assert [m.super_step for m in await store.list(WF, "s")] == [0]


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_save_caught_in_a_deadlock_is_a_typed_error_and_the_rest_of_its_batch_commits(
    backend: Backend, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    async with traced_postgres_store(postgres_server.url, tmp_path / "trace") as (store, _):
        await store.save(snap("a", 0))
        await store.save(snap("b", 0))
        admin = await postgres_pool(postgres_server.url)
        async with admin.connection() as conn:
            await conn.execute("BEGIN")
            await lock_run(conn, store.schema, "b")
            saves = asyncio.gather(
                store.save(snap("a", 1)), store.save(snap("b", 1)), return_exceptions=True
            )
            await asyncio.sleep(0.3)  # the batch holds "a" and waits for "b"
            await lock_run(conn, store.schema, "a")  # a cycle: the batch, waiting longer, gives way
            await conn.execute("ROLLBACK")
            first, second = await saves
        await admin.close()
        assert first is None
        assert isinstance(second, StoreLockedError)
        assert [m.super_step for m in await store.list(WF, "a")] == [0, 1]
        assert [m.super_step for m in await store.list(WF, "b")] == [0]


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_batch_cut_off_by_a_lost_connection_fails_every_caller_and_writes_nothing(
    backend: Backend, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    async with traced_postgres_store(postgres_server.url, tmp_path / "trace") as (store, _):
        await store.save(snap("r", 0))
        admin = await postgres_pool(postgres_server.url)
        async with admin.connection() as conn:
            await conn.execute("BEGIN")
            await lock_run(conn, store.schema, "r")
            saves = asyncio.gather(
                store.save(snap("a", 0)), store.save(snap("r", 1)), return_exceptions=True
            )
            await asyncio.sleep(0.3)  # "a" saved (uncommitted), the batch waits for "r"'s lock
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks "
                "WHERE locktype = 'transactionid' AND NOT granted"
            )
            outcomes = await saves
            await conn.execute("ROLLBACK")
        await admin.close()
        assert all(isinstance(outcome, StoreUnavailableError) for outcome in outcomes), outcomes
        assert await store.latest(WF, "a") is None
        assert [m.super_step for m in await store.list(WF, "r")] == [0]


def test_without_psycopg_the_postgres_store_says_which_extra_to_install() -> None:
    script = (
        "import sys\n"
        "sys.modules['psycopg'] = None\n"
        "try:\n"
        "    from atomr_redis_state.store.sql import PostgresCheckpointer\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    assert "atomr-redis-state[postgres]" in done.stdout


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_watching_a_sqlite_file_without_tables_says_to_run_setup(
    backend: Backend, tmp_path: Path
) -> None:
    async with SqliteCheckpointer(tmp_path / "empty.db") as store:
        with pytest.raises(SchemaVersionError, match="setup"):
            async with store.watch(WF):
                pass
