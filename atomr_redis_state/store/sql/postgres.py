"""The Postgres checkpointer: the Redis store's semantics in tables of a schema of your own.

Every operation is one round trip: a write calls one server-side function (created by
:meth:`PostgresCheckpointer.setup`, see ``postgres_functions.sql``), which checks and writes in
one transaction, row-locking the run as Redis runs one script at a time; a read is one
statement. Connections come from a psycopg ``AsyncConnectionPool`` in autocommit mode (each call
its own transaction: no ``BEGIN``/``COMMIT`` round trips). Events go out with ``NOTIFY`` from
the writing transaction, so a watcher hears of a change exactly when it commits.

Group commit: saves and ``latest`` reads that callers make while the store's earlier ones are
in flight go out together (:class:`~.batches.Batcher`), as one statement: ``atomr_save_many``
runs each save in a subtransaction of its own (a refused one is rolled back alone and raises
in its caller only), and one commit serves the batch. A call made while the store is idle goes
out alone, at once. On the agent-loop workload this halved the server's CPU per operation and
cut the client's by 60% (``python -m benchmarks.sql_peers``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import inspect
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, NoReturn, cast

import orjson

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg_pool import AsyncConnectionPool, PoolTimeout
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "PostgresCheckpointer needs psycopg 3 and psycopg-pool: "
        "pip install 'atomr-redis-state[postgres]'"
    ) from exc

from ...errors import (
    AnswerRefusedError,
    CheckpointConflictError,
    CheckpointNotFoundError,
    LeaseHeldError,
    LeaseLostError,
    QueueStateError,
    RunCancelledError,
    RunNotFoundError,
    SchemaVersionError,
    StoreDiskFullError,
    StoreLockedError,
    StoreOutOfMemoryError,
    StorePermissionError,
    StoreUnavailableError,
)
from ..checkpointer import BaseCheckpointer, Decoded, Fields, WakeUps
from ..codec import decode_event, encode_event, write_token
from ..types import (
    Answer,
    CheckpointEvent,
    CheckpointKey,
    Claim,
    Lease,
    Outcome,
    QueueDepth,
    QueueRecord,
    QueueState,
    RunRecord,
    WorkerInfo,
)
from ..validation import check_positive_int, ttl_to_ms
from .batches import Batcher
from .postgres_schema import (
    SCHEMA_VERSION,
    functions_sql,
    migration_sql,
    quote_identifier,
)
from .rows import check_no_nul, decoded_of, row_of

log = logging.getLogger(__name__)

_LIVE = "(r.deadline_ms IS NULL OR r.deadline_ms > {s}.atomr_now())"

BATCH_MAX = 32
"""The most saves (or reads) one statement carries: each save of a batch is a subtransaction,
and Postgres keeps at most 64 of a transaction's in shared memory before it slows down."""

_WAKING_KINDS = frozenset({"queued", "released", "retrying"})
"""Queue events that mean work may be ready: they wake idle workers (see :meth:`wake_ups`)."""


class PostgresCheckpointer(BaseCheckpointer):
    """Checkpoints in Postgres, shared by every worker that uses the same database and schema.

    ``conninfo`` is a DSN or URL (``postgresql://user@host/db``), for a pool this store opens on
    first use and :meth:`aclose` closes (``max_size`` connections at most); or a
    ``psycopg_pool.AsyncConnectionPool`` of your own, used and not closed (its connections are
    put in autocommit mode). The store keeps at most the pool's size of calls (or batches of
    them) in flight; more wait, up to the pool's timeout. Since calls made meanwhile are sent
    together, a pool about the size of the database server's cores is enough: on a 2-core
    machine, pools of 2 or 4 did 6,800 agent-loop operations/s to 5,700 with 10. Call
    :meth:`setup` once (it is safe to call again, also from many
    processes at once) to create or migrate the tables and functions in ``schema``; a store
    refuses a schema without them, an older one (until :meth:`setup` migrates it in place) or
    a newer one, with :class:`~...errors.SchemaVersionError`.

    ``ttl`` and ``keep_last`` behave as on :class:`~..redis.RedisCheckpointer`, on the database
    server's clock: a run expires whole, invisible from its deadline on, its rows deleted
    lazily by later writes. A lost connection raises :class:`~...errors.StoreUnavailableError`;
    every operation is safe to call again. Ids, labels and owners cannot hold the character
    U+0000 (Postgres text cannot); channel values can.

    Each snapshot's channels are kept twice: as their exact JSON text (what is read back) and
    as ``jsonb``, to query with SQL. ``jsonb=False`` skips the second copy: measured inside
    the database, a save of a 6.5 KB state took 60 us instead of 100 us of server time.
    """

    def __init__(
        self,
        conninfo: str | AsyncConnectionPool[Any],
        *,
        schema: str = "atomr",
        ttl: float | timedelta | None = None,
        keep_last: int | None = None,
        max_size: int = 10,
        jsonb: bool = True,
    ) -> None:
        if not isinstance(schema, str) or not schema or len(schema.encode()) > 63:
            raise ValueError(f"schema must be a name of 1 to 63 bytes, not {schema!r}")
        check_no_nul([schema], "schema")
        self.schema = schema
        self.ttl_ms = ttl_to_ms(ttl)
        self.keep_last = None if keep_last is None else check_positive_int(keep_last, "keep_last")
        self.jsonb = bool(jsonb)
        if isinstance(conninfo, AsyncConnectionPool):
            self.pool = conninfo
            self._owns_pool = False
        elif isinstance(conninfo, str):
            self.pool = AsyncConnectionPool(
                conninfo,
                min_size=1,
                max_size=check_positive_int(max_size, "max_size"),
                kwargs={"autocommit": True},
                open=False,
            )
            self._owns_pool = True
        else:
            raise TypeError(
                "conninfo must be a DSN (str) or a psycopg_pool.AsyncConnectionPool, "
                f"not {type(conninfo).__name__}"
            )
        self._opened = False
        self._checked = False
        self._open_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(self.pool.max_size)
        self._saves: Batcher[tuple[Any, ...], _Failed | None] = Batcher(
            self._send_saves, senders=self.pool.max_size, limit=BATCH_MAX, lost=_lost_batch
        )
        self._latests: Batcher[tuple[str, str], Any] = Batcher(
            self._send_latests, senders=self.pool.max_size, limit=BATCH_MAX, lost=_lost_batch
        )
        s = quote_identifier(schema)
        live = _LIVE.format(s=s)
        self._sql = {
            "save": f"SELECT {s}.atomr_save("
            "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            "save_many": f"SELECT * FROM {s}.atomr_save_many(%b::text[], %b::text[], "
            "%b::bigint[], %b::bigint[], %b::text[], %b::text[], %b::boolean[], %b::text[], "
            "%b::text[], %b::bigint[], %b::bigint[], %s, %s, %b::text[], %b::text[])",
            "fork": f"SELECT {s}.atomr_fork(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            "delete_run": f"SELECT {s}.atomr_delete_run(%s, %s, %s, %s)",
            "acquire_lease": f"SELECT {s}.atomr_acquire_lease(%s, %s, %s, %s, %s, %s)",
            "renew_lease": f"SELECT {s}.atomr_renew_lease(%s, %s, %s, %s, %s)",
            "release_lease": f"SELECT {s}.atomr_release_lease(%s, %s, %s, %s, %s)",
            "load": "SELECT s.channels_json, s.label, s.timestamp_ms, s.metadata "
            f"FROM {s}.atomr_snapshots s JOIN {s}.atomr_runs r "
            "ON r.workflow_id = s.workflow_id AND r.run_id = s.run_id "
            f"WHERE s.workflow_id = %s AND s.run_id = %s AND s.step = %s AND {live}",
            "latest": "SELECT s.step, s.channels_json, s.label, s.timestamp_ms, s.metadata "
            f"FROM {s}.atomr_snapshots s JOIN {s}.atomr_runs r "
            "ON r.workflow_id = s.workflow_id AND r.run_id = s.run_id "
            f"WHERE s.workflow_id = %s AND s.run_id = %s AND {live} "
            "ORDER BY s.step DESC LIMIT 1",
            "latest_many": "SELECT k.i, s.step, s.channels_json, s.label, s.timestamp_ms, "
            "s.metadata FROM unnest(%b::text[], %b::text[]) WITH ORDINALITY AS k (wf, run, i) "
            "CROSS JOIN LATERAL (SELECT s.step, s.channels_json, s.label, s.timestamp_ms, "
            f"s.metadata FROM {s}.atomr_snapshots s JOIN {s}.atomr_runs r "
            "ON r.workflow_id = s.workflow_id AND r.run_id = s.run_id "
            f"WHERE s.workflow_id = k.wf AND s.run_id = k.run AND {live} "
            "ORDER BY s.step DESC LIMIT 1) s",
            "list": "SELECT s.step, s.timestamp_ms, s.label "
            f"FROM {s}.atomr_snapshots s JOIN {s}.atomr_runs r "
            "ON r.workflow_id = s.workflow_id AND r.run_id = s.run_id "
            f"WHERE s.workflow_id = %s AND s.run_id = %s AND s.step < %s AND {live} "
            "ORDER BY s.step DESC LIMIT %s",
            "list_runs": f"SELECT r.run_id FROM {s}.atomr_runs r WHERE r.workflow_id = %s "
            f"AND r.run_id > %s AND r.steps > 0 AND {live} ORDER BY r.run_id LIMIT %s",
            "list_workflows": f"SELECT DISTINCT r.workflow_id FROM {s}.atomr_runs r "
            f"WHERE r.workflow_id > %s AND r.steps > 0 AND {live} "
            "ORDER BY r.workflow_id LIMIT %s",
            "run_record": f"SELECT n.now, r.owner, r.token, r.lease_until_ms, "
            "r.lease_ttl_ms, r.note, r.answer_step, r.answer, r.cancel_ms, r.queue_state, "
            "r.attempts, r.ready_at_ms, r.reason "
            f"FROM (SELECT {s}.atomr_now() AS now) n "
            f"LEFT JOIN {s}.atomr_runs r ON r.workflow_id = %s AND r.run_id = %s "
            "AND (r.deadline_ms IS NULL OR r.deadline_ms > n.now)",
            "record_answer": f"SELECT {s}.atomr_record_answer(%s, %s, %s, %s, %s)",
            "submit": f"SELECT {s}.atomr_submit(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            "claim": f"SELECT * FROM {s}.atomr_claim(%s, %s, %s, %s, %s)",
            "finish": f"SELECT {s}.atomr_finish(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            "requeue": f"SELECT {s}.atomr_requeue(%s, %s, %s, %s, %s)",
            "cancel": f"SELECT {s}.atomr_cancel(%s, %s, %s)",
            "queue_depth": "SELECT CASE WHEN r.queue_state = 'queued' THEN "
            f"CASE WHEN r.ready_at_ms <= {s}.atomr_now() THEN 'ready' ELSE 'delayed' END "
            f"ELSE r.queue_state END AS part, count(*) FROM {s}.atomr_runs r "
            "WHERE r.workflow_id = %s AND r.queue_state IS NOT NULL AND r.steps > 0 "
            f"AND {live} GROUP BY part",
            "next_due": "SELECT least("
            f"(SELECT min(r.ready_at_ms) FROM {s}.atomr_runs r WHERE r.workflow_id = ANY(%s) "
            f"AND r.queue_state = 'queued' AND r.steps > 0 AND {live}), "
            f"(SELECT min(r.leased_until_ms) FROM {s}.atomr_runs r "
            f"WHERE r.workflow_id = ANY(%s) AND r.leased_until_ms IS NOT NULL AND {live})"
            f") - {s}.atomr_now()",
            "heartbeat": f"WITH gone AS (DELETE FROM {s}.atomr_workers "
            f"WHERE expires_ms <= {s}.atomr_now() AND worker_id <> %s) "
            f"INSERT INTO {s}.atomr_workers (worker_id, info, expires_ms) "
            f"VALUES (%s, %s, {s}.atomr_now() + %s) ON CONFLICT (worker_id) DO UPDATE SET "
            "info = excluded.info, expires_ms = excluded.expires_ms",
            "workers": f"SELECT worker_id, info, expires_ms FROM {s}.atomr_workers "
            f"WHERE expires_ms > {s}.atomr_now() ORDER BY worker_id",
            "forget_worker": f"DELETE FROM {s}.atomr_workers WHERE worker_id = %s "
            f"OR expires_ms <= {s}.atomr_now()",
            "take_permit": f"SELECT {s}.atomr_take_permit(%s, %s, %s, %s)",
            "renew_permits": f"WITH renewed AS (UPDATE {s}.atomr_permits "
            f"SET expires_ms = {s}.atomr_now() + %s WHERE workflow_id = %s "
            f"AND holder = ANY(%s) AND expires_ms > {s}.atomr_now() RETURNING holder) "
            "SELECT count(*) FROM unnest(%s::text[]) AS given (holder) "  # each name counts
            "WHERE given.holder IN (SELECT holder FROM renewed)",
            "drop_permit": f"DELETE FROM {s}.atomr_permits WHERE workflow_id = %s AND holder = %s",
            "event": f"SELECT payload FROM {s}.atomr_events WHERE id = %s",
            "version": f"SELECT version FROM {s}.atomr_schema",
        }

    def __repr__(self) -> str:
        return (
            f"PostgresCheckpointer(schema={self.schema!r}, ttl_ms={self.ttl_ms}, "
            f"keep_last={self.keep_last})"
        )

    async def setup(self) -> None:
        """Create the schema, tables, indexes and functions, or migrate them to this version.

        One transaction, serialised across processes by an advisory lock; needs no superuser
        (``CREATE`` on the database only if the schema does not exist yet).
        """
        s = quote_identifier(self.schema)
        async with self._connection(check=False) as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))", ("atomr:" + self.schema,)
            )
            exists = await conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)
            )
            if await exists.fetchone() is None:
                await conn.execute(f"CREATE SCHEMA {s}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {s}.atomr_schema (version integer NOT NULL)"
            )
            found = await (await conn.execute(self._sql["version"])).fetchone()
            version = 0 if found is None else int(found[0])
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(version, SCHEMA_VERSION)
            for step in range(version + 1, SCHEMA_VERSION + 1):
                await conn.execute(migration_sql(step, self.schema))
            await conn.execute(functions_sql(self.schema))
            await conn.execute(f"DELETE FROM {s}.atomr_schema")
            await conn.execute(
                f"INSERT INTO {s}.atomr_schema (version) VALUES (%s)", (SCHEMA_VERSION,)
            )
        self._checked = True

    async def aclose(self) -> None:
        """Close the pool this store opened (a pool given to it is left open)."""
        if self._owns_pool and self._opened:
            await self.pool.close()
            self._opened = False

    async def __aenter__(self) -> PostgresCheckpointer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _checkout(self, *, check: bool = True) -> Any:
        """A pooled autocommit connection, to give back with :meth:`_checkin`; the pool opened
        and the schema version checked on first use. Callers past the pool's size wait on
        the store's own semaphore, not in the pool: the pool's queue of waiting clients (a
        condition and a timer per wait) cost ~20 us of client CPU per call under load."""
        if self._owns_pool and not self._opened:
            async with self._open_lock:
                if not self._opened:
                    await self.pool.open(wait=False)
                    self._opened = True
        if not self._slots.locked():
            await self._slots.acquire()
        else:
            try:
                await asyncio.wait_for(self._slots.acquire(), self.pool.timeout)
            except TimeoutError:
                raise PoolTimeout(
                    f"couldn't get a connection after {self.pool.timeout:.2f} sec"
                ) from None
        try:
            conn = await self.pool.getconn()
        except BaseException:
            self._slots.release()
            raise
        try:
            if not conn.autocommit:
                await conn.set_autocommit(True)
            if check and not self._checked:
                await self._check_schema(conn)
        except BaseException:
            await self._checkin(conn)
            raise
        return conn

    async def _checkin(self, conn: Any) -> None:
        """Give a connection of :meth:`_checkout` back to the pool."""
        try:
            await self.pool.putconn(conn)
        finally:
            self._slots.release()

    @asynccontextmanager
    async def _connection(self, *, check: bool = True) -> AsyncIterator[Any]:
        """A pooled autocommit connection for a block; the schema version checked on first
        use."""
        try:
            conn = await self._checkout(check=check)
            try:
                yield conn
            finally:
                await self._checkin(conn)
        except psycopg.Error as exc:
            _raise_typed(exc)

    async def _check_schema(self, conn: Any) -> None:
        try:
            found = await (await conn.execute(self._sql["version"])).fetchone()
        except pg_errors.UndefinedTable:
            raise SchemaVersionError(None, SCHEMA_VERSION) from None
        version = None if found is None else int(found[0])
        if version != SCHEMA_VERSION:  # an older one until setup() migrates it; a newer one
            raise SchemaVersionError(version, SCHEMA_VERSION)
        self._checked = True

    async def _statement(self, query: str, params: Sequence[Any], rows: str) -> Any:
        """Run one statement on a pooled connection and fetch its ``rows``: ``"one"`` (the
        first row, or None), ``"all"`` (a list) or ``"none"``. The hot path of every call, so
        it checks a connection out and back in itself: the two context managers of
        :meth:`_connection` and ``pool.connection()`` cost ~25 us of client CPU per call."""
        try:
            conn = await self._checkout()
            try:
                cursor = await conn.execute(self._sql[query], params)
                if rows == "one":
                    return await cursor.fetchone()
                return await cursor.fetchall() if rows == "all" else None
            finally:
                await self._checkin(conn)
        except psycopg.Error as exc:
            _raise_typed(exc)

    async def _one(self, query: str, params: Sequence[Any]) -> Any:
        """The first row of one statement's result (None if none)."""
        return await self._statement(query, params, "one")

    async def _execute(self, query: str, params: Sequence[Any]) -> None:
        """Run one statement that returns no rows."""
        await self._statement(query, params, "none")

    async def _all(self, query: str, params: Sequence[Any]) -> builtins.list[Any]:
        rows: builtins.list[Any] = await self._statement(query, params, "all")
        return rows

    def _channel(self, workflow_id: str) -> str:
        """The workflow's NOTIFY channel: an identifier of this schema and workflow."""
        digest = hashlib.blake2b(f"{self.schema}\x00{workflow_id}".encode(), digest_size=16)
        return "atomr_" + digest.hexdigest()

    async def _save(
        self,
        key: CheckpointKey,
        fields: Fields,
        *,
        exclusive: bool,
        lease: Lease | None,
        hold_ms: int | None,
        event: CheckpointEvent,
    ) -> None:
        wf, run_id, step = key.workflow_id, key.run_id, key.super_step
        row = row_of(fields)
        check_no_nul([wf, run_id, row.label], "ids and labels")
        failed = await self._saves.call(
            (
                wf,
                run_id,
                step,
                row.timestamp_ms,
                row.label,
                row.channels.decode(),
                self.jsonb and row.jsonb_safe,
                None if row.metadata is None else row.metadata.decode(),
                write_token(fields, lease) if exclusive else None,
                None if lease is None else lease.token,
                hold_ms,
                self.ttl_ms,
                self.keep_last,
                self._channel(wf),
                encode_event(event).decode(),
            )
        )
        if failed is not None:
            failed.raise_for(key, lease)

    async def _send_saves(self, saves: builtins.list[tuple[Any, ...]]) -> builtins.list[Any]:
        """Run saves made at the same time: one alone with ``atomr_save``, more at once with
        ``atomr_save_many`` (ordered by run, so batches lock runs in one order). The outcome
        of each: None, how it failed (:class:`_Failed`), or the error of the whole batch."""
        if len(saves) == 1:
            try:
                await self._one("save", saves[0])
            except psycopg.Error as exc:  # a refusal: _statement leaves those as they are
                diag = exc.diag
                return [
                    _Failed(exc.sqlstate or "", str(exc), diag.message_detail, diag.message_hint)
                ]
            return [None]
        order = sorted(range(len(saves)), key=lambda i: (saves[i][0], saves[i][1]))
        # One array per argument of atomr_save, but for ttl and keep_last (11 and 12): the
        # store's own, passed once.
        columns = [[saves[i][column] for i in order] for column in range(len(saves[0]))]
        params = (*columns[:11], self.ttl_ms, self.keep_last, *columns[13:])
        rows = await self._all("save_many", params)
        outcomes: builtins.list[Any] = [None] * len(saves)
        for position, _, code, message, detail, hint in rows:
            if code is not None:
                outcomes[order[position - 1]] = _Failed(code, message, detail, hint)
        return outcomes

    async def _load(self, key: CheckpointKey) -> Decoded | None:
        check_no_nul([key.workflow_id, key.run_id], "ids")
        found = await self._one("load", (key.workflow_id, key.run_id, key.super_step))
        return None if found is None else decoded_of(*found)

    async def _latest(self, workflow_id: str, run_id: str) -> tuple[int, Decoded] | None:
        check_no_nul([workflow_id, run_id], "ids")
        found = await self._latests.call((workflow_id, run_id))
        return None if found is None else (found[0], decoded_of(*found[1:]))

    async def _send_latests(self, runs: builtins.list[tuple[str, str]]) -> builtins.list[Any]:
        """The latest row of each run asked for at the same time: one statement for all."""
        if len(runs) == 1:
            return [await self._one("latest", runs[0])]
        rows = await self._all("latest_many", ([wf for wf, _ in runs], [run for _, run in runs]))
        found = {row[0]: row[1:] for row in rows}
        return [found.get(i) for i in range(1, len(runs) + 1)]

    async def _list(
        self, workflow_id: str, run_id: str, *, limit: int | None, before: int | None
    ) -> builtins.list[tuple[int, int, str]]:
        check_no_nul([workflow_id, run_id], "ids")
        rows = await self._all(
            "list", (workflow_id, run_id, 2**63 - 1 if before is None else before, limit)
        )
        rows.reverse()
        return rows

    async def _fork(
        self, from_key: CheckpointKey, new_run_id: str, fields: Fields, event: CheckpointEvent
    ) -> None:
        wf, step = from_key.workflow_id, from_key.super_step
        edits = row_of(fields)
        check_no_nul([wf, from_key.run_id, new_run_id, edits.label], "ids and labels")
        try:
            await self._one(
                "fork",
                (
                    wf,
                    from_key.run_id,
                    new_run_id,
                    step,
                    edits.timestamp_ms,
                    edits.label,
                    edits.channels.decode(),
                    self.jsonb and edits.jsonb_safe,
                    self.ttl_ms,
                    self._channel(wf),
                    encode_event(event).decode(),
                ),
            )
        except psycopg.Error as exc:
            if exc.sqlstate == "ARCNF":
                raise CheckpointNotFoundError(wf, from_key.run_id, step) from None
            _raise_refusal(exc, wf, new_run_id, step, None)

    async def _list_runs(
        self, workflow_id: str, *, limit: int, after: str | None
    ) -> builtins.list[str]:
        check_no_nul([workflow_id, after or ""], "ids")
        rows = await self._all("list_runs", (workflow_id, after or "", limit))
        return [run_id for (run_id,) in rows]

    async def _list_workflows(self, *, limit: int, after: str | None) -> builtins.list[str]:
        check_no_nul([after or ""], "ids")
        rows = await self._all("list_workflows", (after or "", limit))
        return [workflow_id for (workflow_id,) in rows]

    async def _delete_run(self, workflow_id: str, run_id: str, event: CheckpointEvent) -> bool:
        check_no_nul([workflow_id, run_id], "ids")
        found = await self._one(
            "delete_run",
            (workflow_id, run_id, self._channel(workflow_id), encode_event(event).decode()),
        )
        return bool(found[0])

    async def _acquire_lease(
        self, workflow_id: str, run_id: str, owner: str, ttl_ms: int, *, must_exist: bool
    ) -> Lease:
        check_no_nul([workflow_id, run_id, owner], "ids and owners")
        try:
            found = await self._one(
                "acquire_lease", (workflow_id, run_id, owner, ttl_ms, must_exist, self.ttl_ms)
            )
        except psycopg.Error as exc:
            _raise_refusal(exc, workflow_id, run_id, 0, None)
        token, until, cancelled = found[0]
        return Lease(workflow_id, run_id, owner, token, until, ttl_ms, bool(cancelled))

    async def _renew_lease(self, lease: Lease) -> Lease:
        check_no_nul([lease.workflow_id, lease.run_id], "ids")
        try:
            found = await self._one(
                "renew_lease",
                (lease.workflow_id, lease.run_id, lease.token, lease.ttl_ms, self.ttl_ms),
            )
        except psycopg.Error as exc:
            _raise_refusal(exc, lease.workflow_id, lease.run_id, 0, lease)
        until, cancelled = found[0]
        return replace(lease, expires_at_ms=until, cancel_requested=bool(cancelled))

    async def _release_lease(self, lease: Lease, note: bytes | None, *, keep_note: bool) -> bool:
        check_no_nul([lease.workflow_id, lease.run_id], "ids")
        action = _note_action(note, keep_note)
        found = await self._one(
            "release_lease",
            (
                lease.workflow_id,
                lease.run_id,
                lease.token,
                action,
                None if note is None else note.decode(),
            ),
        )
        if not found[0] and note is not None:
            raise LeaseLostError(lease.workflow_id, lease.run_id, lease.token)
        return bool(found[0])

    async def _run_record(self, workflow_id: str, run_id: str) -> RunRecord:
        check_no_nul([workflow_id, run_id], "ids")
        row = await self._one("run_record", (workflow_id, run_id))
        now, owner, token, until, ttl, note = row[:6]
        answer_step, answer, cancel_ms, state, attempts, ready_at, reason = row[6:]
        lease = None
        if owner is not None and until > now:
            lease = Lease(workflow_id, run_id, owner, token, until, ttl, cancel_ms is not None)
        queue = None
        if state is not None:
            queue = QueueRecord(
                state,
                attempts,
                ready_at if state == "queued" else None,
                None if reason is None else orjson.loads(reason),
            )
        return RunRecord(
            lease,
            None if note is None else orjson.loads(note),
            None if answer_step is None else Answer(answer_step, orjson.loads(answer)),
            cancel_ms,
            queue,
        )

    async def _record_answer(
        self, workflow_id: str, run_id: str, super_step: int, value: bytes, lease: Lease | None
    ) -> None:
        check_no_nul([workflow_id, run_id], "ids")
        try:
            await self._one(
                "record_answer",
                (workflow_id, run_id, super_step, value.decode(), lease and lease.token),
            )
        except psycopg.Error as exc:
            _raise_refusal(exc, workflow_id, run_id, super_step, lease)

    # The fleet's work queue: each operation one function call (postgres_functions.sql), with
    # the rules of InMemoryCheckpointer and lua/claim.lua, finish.lua, requeue.lua, cancel.lua.

    async def _submit(
        self, key: CheckpointKey, fields: Fields, delay_ms: int, event: CheckpointEvent
    ) -> bool:
        wf, run_id = key.workflow_id, key.run_id
        row = row_of(fields)
        check_no_nul([wf, run_id, row.label], "ids and labels")
        found = await self._one(
            "submit",
            (
                wf,
                run_id,
                row.timestamp_ms,
                row.label,
                row.channels.decode(),
                self.jsonb and row.jsonb_safe,
                None if row.metadata is None else row.metadata.decode(),
                delay_ms,
                self.ttl_ms,
                self._channel(wf),
                encode_event(event).decode(),
            ),
        )
        return bool(found[0])

    async def _claim(self, workflow_id: str, owner: str, ttl_ms: int) -> Claim | None:
        check_no_nul([workflow_id, owner], "ids and owners")
        found = await self._one(
            "claim", (workflow_id, owner, ttl_ms, self.ttl_ms, self._channel(workflow_id))
        )
        if found is None:
            return None
        run_id, token, until, cancelled, attempts, taken_over = found
        lease = Lease(workflow_id, run_id, owner, token, until, ttl_ms, cancelled)
        return Claim(lease, attempts, taken_over)

    async def _finish(
        self,
        lease: Lease,
        outcome: Outcome,
        reason: bytes | None,
        retry_ms: int,
        max_attempts: int,
        note: bytes | None,
        *,
        keep_note: bool,
    ) -> QueueState:
        wf, run_id = lease.workflow_id, lease.run_id
        check_no_nul([wf, run_id], "ids")
        action = _note_action(note, keep_note)
        try:
            found = await self._one(
                "finish",
                (
                    wf,
                    run_id,
                    lease.token,
                    lease.owner,
                    outcome,
                    None if reason is None else reason.decode(),
                    retry_ms,
                    max_attempts,
                    action,
                    None if note is None else note.decode(),
                    self._channel(wf),
                ),
            )
        except psycopg.Error as exc:
            _raise_refusal(exc, wf, run_id, 0, lease)
        return cast(QueueState, found[0])

    async def _requeue(
        self, workflow_id: str, run_id: str, answer: bytes | None, delay_ms: int
    ) -> QueueState:
        check_no_nul([workflow_id, run_id], "ids")
        try:
            found = await self._one(
                "requeue",
                (
                    workflow_id,
                    run_id,
                    None if answer is None else answer.decode(),
                    delay_ms,
                    self._channel(workflow_id),
                ),
            )
        except psycopg.Error as exc:
            _raise_refusal(exc, workflow_id, run_id, 0, None)
        return cast(QueueState, found[0])

    async def _cancel(self, workflow_id: str, run_id: str) -> QueueState:
        check_no_nul([workflow_id, run_id], "ids")
        try:
            found = await self._one("cancel", (workflow_id, run_id, self._channel(workflow_id)))
        except psycopg.Error as exc:
            _raise_refusal(exc, workflow_id, run_id, 0, None)
        return cast(QueueState, found[0])

    async def _queue_depth(self, workflow_id: str) -> QueueDepth:
        check_no_nul([workflow_id], "ids")
        counts = dict(await self._all("queue_depth", (workflow_id,)))
        return QueueDepth(
            counts.get("ready", 0),
            counts.get("delayed", 0),
            counts.get("running", 0),
            counts.get("paused", 0),
            counts.get("failed", 0),
            counts.get("blocked", 0),
        )

    @asynccontextmanager
    async def _wake_ups(self, workflow_ids: builtins.list[str]) -> AsyncIterator[WakeUps]:
        check_no_nul(workflow_ids, "ids")
        wake = _PostgresWakeUps(self, workflow_ids)
        await wake.listen()
        try:
            yield wake
        finally:
            await wake.close()

    async def _heartbeat(self, worker_id: str, info: bytes, ttl_ms: int) -> None:
        check_no_nul([worker_id], "worker ids")
        await self._execute("heartbeat", (worker_id, worker_id, info.decode(), ttl_ms))

    async def _workers(self) -> builtins.list[WorkerInfo]:
        rows = await self._all("workers", ())
        return [WorkerInfo(worker, orjson.loads(info), until) for worker, info, until in rows]

    async def _forget_worker(self, worker_id: str) -> None:
        check_no_nul([worker_id], "worker ids")
        await self._execute("forget_worker", (worker_id,))

    async def _take_permit(self, workflow_id: str, holder: str, limit: int, ttl_ms: int) -> bool:
        check_no_nul([workflow_id, holder], "ids and holders")
        found = await self._one("take_permit", (workflow_id, holder, limit, ttl_ms))
        return bool(found[0])

    async def _renew_permits(
        self, workflow_id: str, holders: builtins.list[str], ttl_ms: int
    ) -> int:
        check_no_nul([workflow_id, *holders], "ids and holders")
        found = await self._one("renew_permits", (ttl_ms, workflow_id, holders, holders))
        return int(found[0])

    async def _drop_permit(self, workflow_id: str, holder: str) -> None:
        check_no_nul([workflow_id, holder], "ids and holders")
        await self._execute("drop_permit", (workflow_id, holder))

    async def _listener(self, channels: builtins.list[str]) -> Any:
        """A connection of its own that LISTENs on ``channels`` (a pooled one cannot wait for
        notifications)."""
        async with self._connection():
            pass  # the pool open, the schema checked
        try:
            conninfo, kwargs = await _pool_params(self.pool)
            listener = await psycopg.AsyncConnection.connect(
                conninfo, **{**kwargs, "autocommit": True}
            )
            try:
                await listener.execute("; ".join(f"LISTEN {channel}" for channel in channels))
            except BaseException:
                await listener.close()
                raise
        except psycopg.Error as exc:
            _raise_typed(exc)
        return listener

    @asynccontextmanager
    async def _watch(
        self, workflow_id: str, run_id: str | None
    ) -> AsyncIterator[AsyncIterator[CheckpointEvent]]:
        check_no_nul([workflow_id, run_id or ""], "ids")
        listener = await self._listener([self._channel(workflow_id)])

        async def events() -> AsyncIterator[CheckpointEvent]:
            try:
                async for notice in listener.notifies():
                    payload = notice.payload
                    if payload.startswith("#"):
                        found = await self._one("event", (int(payload[1:]),))
                        if found is None:
                            continue  # kept for a minute only: events are not a log
                        payload = found[0]
                    event = decode_event(payload.encode())
                    if event is not None and event.is_about(workflow_id, run_id):
                        yield event
            except psycopg.Error as exc:
                _raise_typed(exc)

        try:
            yield events()
        finally:
            await listener.close()


class _PostgresWakeUps:
    """Wakes when a run of the workflows is queued, released or retried (a NOTIFY from any
    process, read by a task on a LISTEN connection of its own), or when a delayed run or a
    claim's deadline comes due (asked of the database before each wait: one statement). A lost
    LISTEN connection is opened again by the next wait, which then returns at once (work may
    have been queued meanwhile)."""

    def __init__(self, store: PostgresCheckpointer, workflow_ids: builtins.list[str]) -> None:
        self._store = store
        self._workflow_ids = workflow_ids
        self._event = asyncio.Event()
        self._listener: Any = None
        self._reader: asyncio.Future[None] | None = None

    async def listen(self) -> None:
        channels = [self._store._channel(w) for w in self._workflow_ids]
        self._listener = await self._store._listener(channels)
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for notice in self._listener.notifies():
            payload: str = notice.payload
            # A long payload ('#<id>') is no queue event's: those are short.
            event = None if payload.startswith("#") else decode_event(payload.encode())
            if event is not None and event.kind in _WAKING_KINDS:
                self._event.set()

    async def wait(self, at_most: float) -> None:
        if self._reader is None or self._reader.done():
            await self.close()
            await self.listen()
            self._event.set()
        ids = self._workflow_ids
        (due_in,) = await self._store._one("next_due", (ids, ids))
        if due_in is not None:
            at_most = min(at_most, max(0.0, due_in / 1000))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), at_most)
        self._event.clear()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, psycopg.Error):
                await self._reader
            self._reader = None
        if self._listener is not None:
            await self._listener.close()
            self._listener = None


async def _pool_params(pool: AsyncConnectionPool[Any]) -> tuple[str, dict[str, Any]]:
    """The connection string and options of the pool's connections (for a LISTEN connection
    of a watcher's own: a pooled one cannot wait for notifications)."""
    conninfo: Any = pool.conninfo
    kwargs: Any = pool.kwargs
    if callable(conninfo):
        conninfo = conninfo()
    if callable(kwargs):
        kwargs = kwargs()
    if inspect.isawaitable(conninfo):
        conninfo = await conninfo
    if inspect.isawaitable(kwargs):
        kwargs = await kwargs
    return str(conninfo), dict(kwargs or {})


def _note_action(note: bytes | None, keep_note: bool) -> str:
    """What a release does to the run's note, as the functions take it: keep, clear or set."""
    return "keep" if keep_note else "clear" if note is None else "set"


def _raise_refusal(
    exc: psycopg.Error, workflow_id: str, run_id: str, step: int, lease: Lease | None
) -> NoReturn:
    """Raise the typed error for a function's own refusal (its SQLSTATE, see
    ``postgres_functions.sql``), which only the caller can name: it knows the key."""
    diag = exc.diag
    _refuse(exc.sqlstate, diag.message_detail, diag.message_hint, workflow_id, run_id, step, lease)
    raise exc


def _refuse(
    code: str | None,
    detail: str | None,
    hint: str | None,
    workflow_id: str,
    run_id: str,
    step: int,
    lease: Lease | None,
) -> None:
    """Raise the typed error of refusal ``code``; return for any other code."""
    if code == "ARCON":
        log.info(
            "workflow %s run %s: super-step %s already checkpointed", workflow_id, run_id, step
        )
        raise CheckpointConflictError(workflow_id, run_id, step) from None
    if code == "ARHLD":
        raise LeaseHeldError(workflow_id, run_id, hint or "", int(detail or 0)) from None
    if code == "ARLST":
        raise LeaseLostError(workflow_id, run_id, 0 if lease is None else lease.token) from None
    if code == "ARRNF":
        raise RunNotFoundError(workflow_id, run_id) from None
    if code == "ARCAN":
        raise RunCancelledError(workflow_id, run_id) from None
    if code == "ARANS":
        raise AnswerRefusedError(workflow_id, run_id, step, detail or "") from None
    if code == "ARQST":
        raise QueueStateError(workflow_id, run_id, detail or "", hint or "") from None


def _lost_batch() -> StoreUnavailableError:
    return StoreUnavailableError(
        "the call's batch was cancelled before Postgres answered: it may or may not have "
        "taken effect, and is safe to call again"
    )


@dataclass(frozen=True, slots=True)
class _Failed:
    """How one save of a batch failed: what its block in ``atomr_save_many`` caught."""

    code: str
    message: str
    detail: str | None
    hint: str | None

    def raise_for(self, key: CheckpointKey, lease: Lease | None) -> NoReturn:
        """Raise the error this save would have raised sent alone."""
        _refuse(
            self.code, self.detail, self.hint, key.workflow_id, key.run_id, key.super_step, lease
        )
        try:
            kind = pg_errors.lookup(self.code)
        except KeyError:
            kind = psycopg.DatabaseError
        _raise_typed(kind(self.message))


def _raise_typed(exc: psycopg.Error) -> NoReturn:
    """Raise the library's error for a database failure (the original kept as its cause)."""
    if (exc.sqlstate or "").startswith("AR"):
        raise exc  # a function's refusal: the caller names it (_raise_refusal)
    if isinstance(exc, pg_errors.UndefinedTable | pg_errors.UndefinedFunction):
        raise SchemaVersionError(None, SCHEMA_VERSION) from exc
    if isinstance(exc, pg_errors.DiskFull):
        raise StoreDiskFullError(f"the Postgres database's disk is full: {exc}") from exc
    if isinstance(exc, pg_errors.OutOfMemory):
        raise StoreOutOfMemoryError(f"the Postgres server is out of memory: {exc}") from exc
    if isinstance(exc, pg_errors.LockNotAvailable | pg_errors.QueryCanceled):
        raise StoreLockedError(f"the run stayed locked past the lock timeout: {exc}") from exc
    if isinstance(exc, pg_errors.DeadlockDetected):  # waits for runs' locks formed a cycle
        raise StoreLockedError(f"the run's lock was in a deadlock: {exc}") from exc
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        raise StorePermissionError(f"the Postgres user lacks a privilege: {exc}") from exc
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        raise StoreUnavailableError(f"Postgres could not be reached: {exc}") from exc
    raise exc
