"""The SQLite checkpointer: a durable file with no server, the Redis store's semantics.

Driver: the standard library's ``sqlite3``, on one worker thread per store. Calls queue for
that thread, which takes what has queued as one batch: the reads, then the writes in one
transaction (group commit: one write lock, one commit, one WAL append for the batch; each write
in a savepoint of its own, so each is still all or nothing). Measured against aiosqlite on the
agent-loop workload (``python -m benchmarks.sqlite_driver``: 100 runs, 32 in flight, 3
alternating rounds on a loaded 2-core machine, 2026-12-06), a hop per call already did 7,500
operations/s to aiosqlite's 4,200 (1.8x), although the aiosqlite contender skipped the lease,
deadline and token checks: aiosqlite hops to its thread once per statement, and a save is
seven statements; group commit then took the store from 4,500 to 10,300 operations/s beside
langgraph-checkpoint-sqlite (``python -m benchmarks.sql_peers``).

Writes take the file's write lock up front (``BEGIN IMMEDIATE``) and wait for it up to
``busy_timeout``, then raise :class:`~...errors.StoreLockedError`; the file is in WAL mode, so
readers never wait for a writer. Every check and write of an operation is atomic (its
savepoint, inside its batch's transaction), as the Redis store's scripts are, also across
processes sharing the file.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import logging
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import astuple, dataclass, fields, replace
from datetime import timedelta
from typing import Any, NoReturn, TypeVar, cast

import orjson

from ...errors import (
    AnswerRefusedError,
    CheckpointConflictError,
    CheckpointNotFoundError,
    LeaseHeldError,
    LeaseLostError,
    QueueStateError,
    RunCancelledError,
    RunNotFoundError,
    StoreDiskFullError,
    StoreLockedError,
    StorePermissionError,
    StoreUnavailableError,
)
from ..checkpointer import HOLD_FOREVER, BaseCheckpointer, Decoded, Fields, WakeUps
from ..codec import decode_event, encode_event, write_token
from ..types import (
    Answer,
    CheckpointEvent,
    CheckpointKey,
    Claim,
    EventKind,
    Lease,
    Outcome,
    QueueDepth,
    QueueRecord,
    QueueState,
    RunRecord,
    WorkerInfo,
    now_ms,
)
from ..validation import check_positive_int, duration_to_ms, ttl_to_ms
from .rows import Row, decoded_of, merged_channels, row_of
from .sqlite_schema import check_schema, migrate

log = logging.getLogger(__name__)

T = TypeVar("T")

EVENTS_KEPT = 10_000
"""How many recent events the file keeps for watchers (pruned every 1,000 events)."""

SWEEP_BATCH = 100
"""How many expired runs a write that creates a run deletes at most (the lazy sweep)."""

BATCH_MAX = 64
"""How many pending calls the worker thread takes at once: its writes share one transaction."""

_LIVE = "(deadline_ms IS NULL OR deadline_ms > ?)"


@dataclass(slots=True)
class _Call:
    """A call waiting for the store's thread: a ``read`` (run outside any transaction) or a
    ``write`` (run in the batch's transaction, in a savepoint of its own)."""

    read: Callable[[sqlite3.Connection], Any] | None
    write: Callable[[int, sqlite3.Connection], Any] | None
    check: bool
    """Whether the schema's version must be checked first."""
    close: bool = False
    """The store's last call (neither read nor write): close the connection."""
    future: asyncio.Future[Any] | None = None


def _typed(exc: Exception) -> Exception:
    """The library's error for ``exc`` (SQLite's errors typed, others as they are)."""
    if not isinstance(exc, sqlite3.Error):
        return exc
    try:
        raise_typed(exc)
    except Exception as typed:
        return typed


def _attempt(work: Callable[[], Any]) -> tuple[bool, Any]:
    """``(True, result)`` of ``work()``, or ``(False, the typed error)`` it raised."""
    try:
        return True, work()
    except Exception as exc:
        return False, _typed(exc)


def _settle(outcomes: builtins.list[tuple[_Call, bool, Any]]) -> None:
    """Hand each call's outcome to its caller's event loop (from the store's thread)."""
    for call, ok, value in outcomes:
        future = call.future
        if future is None:
            continue
        with contextlib.suppress(RuntimeError):  # a closed event loop: nobody is waiting
            future.get_loop().call_soon_threadsafe(_resolve, future, ok, value)


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # the caller was cancelled
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


@dataclass(slots=True)
class _Run:
    """A run's row in ``atomr_runs`` (fields in the order of ``_RUN_FIELDS``), read and
    written within one transaction: as the in-memory store's record (see :mod:`..memory`),
    field for field."""

    deadline_ms: int | None = None
    steps: int = 0
    fence: int = 0
    owner: str | None = None
    token: int = 0
    lease_until_ms: int = 0
    lease_ttl_ms: int = 0
    note: str | None = None
    answer_step: int | None = None
    answer: str | None = None
    cancel_ms: int | None = None
    queue_state: QueueState | None = None
    attempts: int = 0
    ready_at_ms: int = 0
    leased_until_ms: int | None = None
    """The run's place in the claim-deadline index while a worker holds it."""
    reason: str | None = None
    settled: int = 0
    """The lease token whose claim ``finish`` settled: a retried finish changes nothing."""
    expired: int = 0
    """1 when queued again because its worker's lease expired: the next claim is a takeover."""

    def values(self) -> tuple[Any, ...]:
        return astuple(self)

    def holder(self, now: int) -> str | None:
        """The owner of the live lease, or None."""
        return self.owner if self.lease_until_ms > now else None


_RUN_FIELDS = tuple(field.name for field in fields(_Run))
_RUN_COLUMNS = ", ".join(_RUN_FIELDS)


class SqliteCheckpointer(BaseCheckpointer):
    """Checkpoints in a SQLite file (or ``":memory:"``), shared by every process on the machine.

    Call :meth:`setup` once to create (or migrate) the tables; a store refuses a file without
    them, or with a newer schema, with :class:`~...errors.SchemaVersionError`. ``ttl`` and
    ``keep_last`` behave as on :class:`~..redis.RedisCheckpointer`: a run expires whole (its
    rows are invisible from its deadline on, and deleted by the next write to it, or by the
    next save or fork that starts a run, which deletes up to 100 expired runs). Leases and
    deadlines use the machine's clock, which every process sharing the file shares.
    ``busy_timeout`` is how long a write waits for another writer's lock; ``synchronous`` is
    SQLite's setting (``"NORMAL"``: a commit survives the process crashing, and may be lost to a
    power cut; ``"FULL"``: survives both, slower). ``poll_interval`` is how often a watcher
    checks the file for events of other processes. ``clock`` (milliseconds since the epoch) can
    be replaced to test expiry without sleeping; every process sharing a file must use the
    same clock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        ttl: float | timedelta | None = None,
        keep_last: int | None = None,
        busy_timeout: float | timedelta = 5.0,
        synchronous: str = "NORMAL",
        poll_interval: float | timedelta = 0.05,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.path = os.fspath(path)
        self.ttl_ms = ttl_to_ms(ttl)
        self.keep_last = None if keep_last is None else check_positive_int(keep_last, "keep_last")
        self.busy_timeout_ms = int(duration_to_ms(busy_timeout, "busy_timeout") or 0)
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.synchronous = synchronous.upper()
        self.poll_interval = (duration_to_ms(poll_interval, "poll_interval") or 50) / 1000
        self._clock = clock
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="atomr-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._checked = False
        self._closed = False
        self._pending: list[_Call] = []
        self._pending_lock = threading.Lock()
        self._draining = False
        self._shut = False
        """Set by the thread when it closed the connection: no call opens another."""

    @property
    def in_memory(self) -> bool:
        return self.path == ":memory:" or self.path.startswith("file::memory:")

    def __repr__(self) -> str:
        return (
            f"SqliteCheckpointer({self.path!r}, ttl_ms={self.ttl_ms}, keep_last={self.keep_last})"
        )

    async def setup(self) -> None:
        """Create the tables, or migrate them to this library's schema version."""
        await self._run(lambda conn: migrate(conn), check=False)
        self._checked = True

    async def aclose(self) -> None:
        """Close the connection and stop the worker thread, once every call made before has
        run; calls made after raise :class:`~...errors.StoreUnavailableError`."""
        if self._closed:
            return
        self._closed = True
        await self._enqueue(_Call(None, None, False, close=True))
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> SqliteCheckpointer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # The worker thread.

    def _connect(self) -> sqlite3.Connection:
        conn = connect(self.path, self.busy_timeout_ms)
        if not self.in_memory:
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        return conn

    async def _run(self, work: Callable[[sqlite3.Connection], T], *, check: bool = True) -> T:
        """Run ``work`` on the store's connection, in its thread, outside any transaction (a
        read, or work that opens its own); SQLite's errors typed."""
        return cast(T, await self._enqueue(_Call(work, None, check)))

    async def _transact(self, work: Callable[[int, sqlite3.Connection], T]) -> T:
        """Run ``work(now_ms, conn)`` atomically in a write transaction: all of it or, if it
        raises, none of it (SQLite's errors typed)."""
        return cast(T, await self._enqueue(_Call(None, work, True)))

    async def _enqueue(self, call: _Call) -> Any:
        if self._closed and not call.close:
            raise StoreUnavailableError(f"the SQLite store on {self.path!r} is closed")
        call.future = asyncio.get_running_loop().create_future()
        with self._pending_lock:
            self._pending.append(call)
            start = not self._draining
            self._draining = True
        if start:
            self._executor.submit(self._drain)
        return await call.future

    def _drain(self) -> None:
        """The worker thread: run what is pending, in batches, until nothing is.

        Group commit: the writes of a batch share one transaction (one write lock, one commit,
        one WAL append), each inside a savepoint of its own, so each is still all or nothing
        and a failed one leaves the others; a caller hears of its write only once the commit
        that holds it succeeded. Reads run first, outside the transaction, so none sees a write
        that is not committed yet."""
        while True:
            with self._pending_lock:
                batch = self._pending[:BATCH_MAX]
                del self._pending[:BATCH_MAX]
                if not batch:
                    self._draining = False
                    return
            outcomes: builtins.list[tuple[_Call, bool, Any]] = []
            try:
                self._run_batch(batch, outcomes)
            except BaseException as exc:  # a fault of this module's own: fail, never hang
                answered = {id(call) for call, _, _ in outcomes}
                error = StoreUnavailableError(f"the SQLite store's thread failed: {exc!r}")
                outcomes += [(call, False, error) for call in batch if id(call) not in answered]
                if not isinstance(exc, Exception):  # the thread itself is going away
                    with self._pending_lock:
                        stranded, self._pending[:] = self._pending[:], []
                        self._draining = False
                    _settle(outcomes + [(call, False, error) for call in stranded])
                    raise
            _settle(outcomes)

    def _run_batch(
        self, batch: builtins.list[_Call], outcomes: builtins.list[tuple[_Call, bool, Any]]
    ) -> None:
        """Run ``batch``, adding each call's outcome to ``outcomes``: reads, then writes, then
        the close."""
        writes: builtins.list[tuple[_Call, Callable[[int, sqlite3.Connection], Any]]] = []
        for call in batch:
            if call.write is not None:
                writes.append((call, call.write))
            elif call.read is not None:
                read = functools.partial(self._read, call.read, call.check)
                outcomes.append((call, *_attempt(read)))
        if writes:
            try:
                conn = self._connection(True)
            except Exception as exc:
                outcomes += [(call, False, _typed(exc)) for call, _ in writes]
            else:
                outcomes += self._write_batch(conn, writes)
        for call in batch:
            if call.close:
                outcomes.append((call, *_attempt(self._close_connection)))

    def _read(self, work: Callable[[sqlite3.Connection], Any], check: bool) -> Any:
        return work(self._connection(check))

    def _connection(self, check: bool) -> sqlite3.Connection:
        if self._shut:
            raise StoreUnavailableError(f"the SQLite store on {self.path!r} is closed")
        if self._conn is None:
            self._conn = self._connect()
        if check and not self._checked:
            check_schema(self._conn)
            self._checked = True
        return self._conn

    def _close_connection(self) -> None:
        self._shut = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _write_batch(
        self,
        conn: sqlite3.Connection,
        writes: builtins.list[tuple[_Call, Callable[[int, sqlite3.Connection], Any]]],
    ) -> builtins.list[tuple[_Call, bool, Any]]:
        """Run ``writes`` in one transaction, each in a savepoint (a write alone needs none:
        its failure rolls the transaction back); commit once. A write that makes SQLite roll
        the whole transaction back (a full disk) fails alone: the others run again in a new
        one (nothing of them was written)."""
        if not writes:
            return []
        done: builtins.list[tuple[_Call, bool, Any]] = []
        alone = len(writes) == 1
        try:
            conn.execute("BEGIN IMMEDIATE")
            for index, (call, write) in enumerate(writes):
                if not alone:
                    conn.execute("SAVEPOINT atomr_call")
                ok, value = _attempt(functools.partial(write, self._clock(), conn))
                if not conn.in_transaction:  # SQLite rolled the whole transaction back
                    if ok:  # the write ended the transaction itself: not one of ours
                        value = StoreUnavailableError("a write ended its transaction")
                    others = writes[:index] + writes[index + 1 :]
                    return [(call, False, value), *self._write_batch(conn, others)]
                if alone and not ok:
                    conn.execute("ROLLBACK")
                    return [(call, ok, value)]
                if not ok:
                    conn.execute("ROLLBACK TO atomr_call")
                if not alone:
                    conn.execute("RELEASE atomr_call")
                done.append((call, ok, value))
            conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            return [(each, False, _typed(exc)) for each, _ in writes]
        return done

    # The store's operations, each one transaction.

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
        row = row_of(fields)
        token = write_token(fields, lease) if exclusive else None
        payload = encode_event(event)
        wf, run_id, step = key.workflow_id, key.run_id, key.super_step

        def save(now: int, conn: sqlite3.Connection) -> None:
            run = _live_record(conn, wf, run_id, now)
            found = None
            if run is not None and run.steps:
                found = conn.execute(
                    "SELECT write_token FROM atomr_snapshots "
                    "WHERE workflow_id = ? AND run_id = ? AND step = ?",
                    (wf, run_id, step),
                ).fetchone()
            if token is not None and found is not None and found[0] == token:
                return  # this very save, sent again: not a conflict
            # The lease before the conflict: a stale worker always learns its lease is lost.
            _check_lease(run, wf, run_id, step, lease, now)
            if lease is not None and run is not None and run.cancel_ms is not None:
                raise RunCancelledError(wf, run_id)
            if token is not None and found is not None:
                raise CheckpointConflictError(wf, run_id, step)
            is_new = run is None
            if run is None:
                run = _Run()
                run.deadline_ms = self._fresh_deadline(now)
            elif hold_ms is None and not run.steps:
                run.deadline_ms = self._fresh_deadline(now)
            elif (
                hold_ms is None
                and self.ttl_ms is not None
                and (run.deadline_ms is None or run.deadline_ms < now + self.ttl_ms)
            ):
                run.deadline_ms = now + 2 * self.ttl_ms
                if lease is not None:  # never before the lease's deadline, as on Redis
                    run.deadline_ms = max(run.deadline_ms, run.lease_until_ms)
            if hold_ms is not None:
                run.deadline_ms = None if hold_ms == HOLD_FOREVER else now + hold_ms
            _insert_snapshot(conn, wf, run_id, step, row, token)
            run.steps += 0 if found is not None else 1
            if self.keep_last is not None and run.steps > self.keep_last:
                trimmed = conn.execute(
                    "DELETE FROM atomr_snapshots WHERE workflow_id = ? AND run_id = ? AND step IN "
                    "(SELECT step FROM atomr_snapshots WHERE workflow_id = ? AND run_id = ? "
                    "ORDER BY step LIMIT ?)",
                    (wf, run_id, wf, run_id, run.steps - self.keep_last),
                ).rowcount
                run.steps -= trimmed
            _store_record(conn, wf, run_id, run, is_new)
            _publish(conn, wf, run_id, payload)
            if is_new:
                _sweep(conn, now)

        await self._transact(save)

    def _fresh_deadline(self, now: int) -> int | None:
        return None if self.ttl_ms is None else now + 2 * self.ttl_ms

    def _grant(
        self,
        conn: sqlite3.Connection,
        run: _Run,
        workflow_id: str,
        run_id: str,
        owner: str,
        ttl_ms: int,
        now: int,
    ) -> Lease:
        """Give ``owner`` the run's lease (extended, with its token, if it holds it already),
        keeping the run alive as long (the caller stores the record)."""
        if run.holder(now) is None:
            # Larger than any token before, even across a run deleted and started again.
            (last,) = conn.execute(
                "UPDATE atomr_fence SET last = max(last + 1, ?, ?) WHERE id = 1 RETURNING last",
                (run.fence + 1, now * 1000),
            ).fetchone()
            run.fence = last
            run.owner, run.token = owner, run.fence
        run.lease_until_ms, run.lease_ttl_ms = now + ttl_ms, ttl_ms
        self._keep_for_lease(run, now)
        return Lease(
            workflow_id,
            run_id,
            owner,
            run.token,
            run.lease_until_ms,
            ttl_ms,
            run.cancel_ms is not None,
        )

    def _keep_for_lease(self, run: _Run, now: int) -> None:
        """A live lease keeps its run, by the Redis store's rule (``keep_for_lease`` in
        ``lua/_common.lua``): a run whose deadline comes before the lease's, or less than ``ttl``
        from now, moves to the later of ``now + 2 * ttl`` and the lease's deadline plus its ttl.
        A run not saved yet lives as long as its lease."""
        if run.deadline_ms is None:
            return
        until, ttl = run.lease_until_ms, self.ttl_ms or 0
        if not run.steps:
            run.deadline_ms = max(run.deadline_ms, until)
        elif run.deadline_ms < max(now + ttl, until):
            run.deadline_ms = max(now + 2 * ttl, until + run.lease_ttl_ms)

    async def _list_workflows(self, *, limit: int, after: str | None) -> builtins.list[str]:
        def list_workflows(conn: sqlite3.Connection) -> builtins.list[str]:
            rows = conn.execute(
                "SELECT DISTINCT workflow_id FROM atomr_runs WHERE workflow_id > ? "
                f"AND steps > 0 AND {_LIVE} ORDER BY workflow_id LIMIT ?",
                ("" if after is None else after, self._clock(), limit),
            ).fetchall()
            return [workflow_id for (workflow_id,) in rows]

        return await self._run(list_workflows)

    async def _record_answer(
        self, workflow_id: str, run_id: str, super_step: int, value: bytes, lease: Lease | None
    ) -> None:
        answer = value.decode()

        def record(now: int, conn: sqlite3.Connection) -> None:
            run = _live_record(conn, workflow_id, run_id, now)
            if run is None or not run.steps:
                raise RunNotFoundError(workflow_id, run_id)
            _check_lease(run, workflow_id, run_id, super_step, lease, now)
            if run.cancel_ms is not None:
                raise RunCancelledError(workflow_id, run_id)
            latest = _latest_step(conn, workflow_id, run_id)
            if latest != super_step:
                reason = f"the run is at super-step {latest}"
                raise AnswerRefusedError(workflow_id, run_id, super_step, reason)
            # Without a lease, the first answer to a pause wins (a retry sends the same one).
            answered = run.answer_step == super_step
            if lease is None and answered and run.answer != answer:
                reason = "that pause already has a different answer"
                raise AnswerRefusedError(workflow_id, run_id, super_step, reason)
            run.answer_step, run.answer = super_step, answer
            _store_record(conn, workflow_id, run_id, run, False)

        await self._transact(record)

    # The fleet's work queue: the rules of InMemoryCheckpointer and lua/claim.lua, finish.lua,
    # requeue.lua and cancel.lua, each operation one transaction.

    async def _submit(
        self, key: CheckpointKey, fields: Fields, delay_ms: int, event: CheckpointEvent
    ) -> bool:
        row = row_of(fields)
        payload = encode_event(event)
        wf, run_id = key.workflow_id, key.run_id

        def submit(now: int, conn: sqlite3.Connection) -> bool:
            run = _live_record(conn, wf, run_id, now)
            if run is not None and (run.steps or run.holder(now) is not None):
                return False  # the run exists (or is being started inline): a no-op
            is_new = run is None
            run = run or _Run()
            run.deadline_ms = self._fresh_deadline(now)
            _insert_snapshot(conn, wf, run_id, 0, row, None)
            run.steps = 1
            run.queue_state, run.attempts, run.ready_at_ms = "queued", 0, now + delay_ms
            run.reason = run.answer = run.answer_step = run.cancel_ms = None
            run.expired = 0
            _store_record(conn, wf, run_id, run, is_new)
            _publish(conn, wf, run_id, payload)
            _announce(conn, "queued", wf, run_id, now)
            return True

        return await self._transact(submit)

    async def _claim(self, workflow_id: str, owner: str, ttl_ms: int) -> Claim | None:
        wf = workflow_id

        def claim(now: int, conn: sqlite3.Connection) -> Claim | None:
            expired = conn.execute(
                "SELECT run_id FROM atomr_runs WHERE workflow_id = ? AND leased_until_ms <= ? "
                f"AND {_LIVE} ORDER BY leased_until_ms LIMIT 64",
                (wf, now, now),
            ).fetchall()
            for (run_id,) in expired:
                run = _live_record(conn, wf, run_id, now)
                if run is not None:
                    _expire_claim(conn, wf, run_id, run, now)
            ready = conn.execute(
                "SELECT run_id FROM atomr_runs WHERE workflow_id = ? AND queue_state = 'queued' "
                f"AND ready_at_ms <= ? AND steps > 0 AND {_LIVE} "
                "ORDER BY ready_at_ms, run_id LIMIT 16",
                (wf, now, now),
            ).fetchall()
            for (run_id,) in ready:
                run = _live_record(conn, wf, run_id, now)
                if run is None:
                    continue
                if run.holder(now) is not None:  # an inline runner holds it: look again later
                    run.ready_at_ms = run.lease_until_ms
                    _store_record(conn, wf, run_id, run, False)
                    continue
                lease = self._grant(conn, run, wf, run_id, owner, ttl_ms, now)
                run.queue_state, run.leased_until_ms = "running", lease.expires_at_ms
                taken_over, run.expired = bool(run.expired), 0
                _store_record(conn, wf, run_id, run, False)
                _announce(conn, "claimed", wf, run_id, now, owner)
                return Claim(lease, run.attempts, taken_over)
            return None

        return await self._transact(claim)

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

        def finish(now: int, conn: sqlite3.Connection) -> QueueState:
            run = _live_record(conn, wf, run_id, now)
            if run is None or run.token != lease.token:
                raise LeaseLostError(wf, run_id, lease.token)
            if run.settled == lease.token and run.queue_state is not None:
                return run.queue_state  # this very finish, sent again
            run.owner, run.lease_until_ms, run.leased_until_ms = None, 0, None
            run.settled = lease.token
            if not keep_note:  # as release_lease: a failed layer's note, or cleared
                run.note = None if note is None else note.decode()
            state: QueueState
            if run.cancel_ms is not None and outcome != "completed":
                state, run.answer, run.answer_step = "cancelled", None, None
                _announce(conn, "cancelled", wf, run_id, now)
            else:
                if reason is not None:
                    run.reason = reason.decode()
                if outcome == "completed":
                    state, run.answer, run.answer_step, run.reason = "completed", None, None, None
                    _announce(conn, "completed", wf, run_id, now)
                elif outcome == "paused":
                    state, run.answer, run.answer_step = "paused", None, None
                elif outcome == "released":
                    state, run.ready_at_ms = "queued", now
                    _announce(conn, "released", wf, run_id, now, lease.owner)
                elif outcome == "blocked":
                    state = "blocked"
                    _announce(conn, "blocked", wf, run_id, now)
                else:
                    run.attempts += 1
                    label = f"attempts {run.attempts}"
                    if outcome == "failed" or (max_attempts and run.attempts >= max_attempts):
                        state = "failed"
                        _announce(conn, "failed", wf, run_id, now, label)
                    else:
                        state, run.ready_at_ms = "queued", now + retry_ms
                        _announce(conn, "retrying", wf, run_id, now, label)
            run.queue_state = state
            _store_record(conn, wf, run_id, run, False)
            return state

        return await self._transact(finish)

    async def _requeue(
        self, workflow_id: str, run_id: str, answer: bytes | None, delay_ms: int
    ) -> QueueState:
        wf = workflow_id
        text = None if answer is None else answer.decode()

        def requeue(now: int, conn: sqlite3.Connection) -> QueueState:
            run = _live_record(conn, wf, run_id, now)
            if run is None or not run.steps:
                raise RunNotFoundError(wf, run_id)
            state = run.queue_state
            if text is not None:
                paused_at = _latest_step(conn, wf, run_id)
                answered = (run.answer_step, run.answer) == (paused_at, text)
                if state == "queued" and answered:
                    return "queued"  # this very answer, sent again
                if state not in (None, "paused"):
                    raise QueueStateError(wf, run_id, str(state), "take an answer")
                if run.cancel_ms is not None:
                    raise RunCancelledError(wf, run_id)
                run.answer_step, run.answer = paused_at, text
            else:
                if state in ("queued", "running"):
                    return cast(QueueState, state)
                if state not in (None, "failed", "blocked"):
                    raise QueueStateError(wf, run_id, str(state), "be requeued")
                run.attempts, run.reason = 0, None
            run.queue_state, run.ready_at_ms = "queued", now + delay_ms
            _store_record(conn, wf, run_id, run, False)
            _announce(conn, "queued", wf, run_id, now)
            return "queued"

        return await self._transact(requeue)

    async def _cancel(self, workflow_id: str, run_id: str) -> QueueState:
        wf = workflow_id

        def cancel(now: int, conn: sqlite3.Connection) -> QueueState:
            run = _live_record(conn, wf, run_id, now)
            if run is None or not run.steps:
                raise RunNotFoundError(wf, run_id)
            state = run.queue_state
            if state in ("completed", "cancelled"):
                return cast(QueueState, state)
            if run.cancel_ms is None:
                run.cancel_ms = now
            if state == "running" or run.holder(now) is not None:
                _store_record(conn, wf, run_id, run, False)
                return "running"
            run.queue_state, run.answer, run.answer_step = "cancelled", None, None
            _store_record(conn, wf, run_id, run, False)
            _announce(conn, "cancelled", wf, run_id, now)
            return "cancelled"

        return await self._transact(cancel)

    async def _queue_depth(self, workflow_id: str) -> QueueDepth:
        def depth(conn: sqlite3.Connection) -> QueueDepth:
            now = self._clock()
            rows = conn.execute(
                "SELECT CASE WHEN queue_state = 'queued' THEN "
                "CASE WHEN ready_at_ms <= ? THEN 'ready' ELSE 'delayed' END "
                "ELSE queue_state END AS part, count(*) FROM atomr_runs "
                f"WHERE workflow_id = ? AND queue_state IS NOT NULL AND steps > 0 AND {_LIVE} "
                "GROUP BY part",
                (now, workflow_id, now),
            ).fetchall()
            counts = dict(rows)
            return QueueDepth(
                counts.get("ready", 0),
                counts.get("delayed", 0),
                counts.get("running", 0),
                counts.get("paused", 0),
                counts.get("failed", 0),
                counts.get("blocked", 0),
            )

        return await self._run(depth)

    @asynccontextmanager
    async def _wake_ups(self, workflow_ids: builtins.list[str]) -> AsyncIterator[WakeUps]:
        yield _SqliteWakeUps(self, workflow_ids)

    async def _next_due_ms(self, workflow_ids: builtins.list[str]) -> tuple[int | None, int]:
        """The earliest ready time or claim deadline of the workflows' runs, and the newest
        queue event's id (a change there is work that may be ready)."""
        marks = ", ".join("?" for _ in workflow_ids)

        def due(conn: sqlite3.Connection) -> tuple[int | None, int]:
            (moment,) = conn.execute(
                "SELECT min(min(CASE WHEN queue_state = 'queued' THEN ready_at_ms END), "
                f"min(leased_until_ms)) FROM atomr_runs WHERE workflow_id IN ({marks})",
                workflow_ids,
            ).fetchone()
            (last,) = conn.execute(
                f"SELECT coalesce(max(id), 0) FROM atomr_events WHERE workflow_id IN ({marks})",
                workflow_ids,
            ).fetchone()
            return moment, int(last)

        return await self._run(due)

    async def _heartbeat(self, worker_id: str, info: bytes, ttl_ms: int) -> None:
        def beat(now: int, conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO atomr_workers (worker_id, info, expires_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (worker_id) DO UPDATE SET info = excluded.info, "
                "expires_ms = excluded.expires_ms",
                (worker_id, info.decode(), now + ttl_ms),
            )

        await self._transact(beat)

    async def _workers(self) -> builtins.list[WorkerInfo]:
        def workers(conn: sqlite3.Connection) -> builtins.list[WorkerInfo]:
            rows = conn.execute(
                "SELECT worker_id, info, expires_ms FROM atomr_workers WHERE expires_ms > ? "
                "ORDER BY worker_id",
                (self._clock(),),
            ).fetchall()
            return [WorkerInfo(worker, orjson.loads(info), until) for worker, info, until in rows]

        return await self._run(workers)

    async def _forget_worker(self, worker_id: str) -> None:
        def forget(now: int, conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM atomr_workers WHERE worker_id = ? OR expires_ms <= ?", (worker_id, now)
            )

        await self._transact(forget)

    async def _take_permit(self, workflow_id: str, holder: str, limit: int, ttl_ms: int) -> bool:
        def take(now: int, conn: sqlite3.Connection) -> bool:
            conn.execute(
                "DELETE FROM atomr_permits WHERE workflow_id = ? AND expires_ms <= ?",
                (workflow_id, now),
            )
            (held,) = conn.execute(
                "SELECT count(*) FROM atomr_permits WHERE workflow_id = ? AND holder != ?",
                (workflow_id, holder),
            ).fetchone()
            if held >= limit:
                return False
            conn.execute(
                "INSERT INTO atomr_permits (workflow_id, holder, expires_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (workflow_id, holder) DO UPDATE SET expires_ms = excluded.expires_ms",
                (workflow_id, holder, now + ttl_ms),
            )
            return True

        return await self._transact(take)

    async def _renew_permits(
        self, workflow_id: str, holders: builtins.list[str], ttl_ms: int
    ) -> int:
        def renew(now: int, conn: sqlite3.Connection) -> int:
            renewed = 0
            for holder in holders:
                renewed += conn.execute(
                    "UPDATE atomr_permits SET expires_ms = ? WHERE workflow_id = ? AND holder = ? "
                    "AND expires_ms > ?",
                    (now + ttl_ms, workflow_id, holder, now),
                ).rowcount
            return renewed

        return await self._transact(renew)

    async def _drop_permit(self, workflow_id: str, holder: str) -> None:
        def drop(now: int, conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM atomr_permits WHERE workflow_id = ? AND holder = ?",
                (workflow_id, holder),
            )

        await self._transact(drop)

    async def _load(self, key: CheckpointKey) -> Decoded | None:
        def load(conn: sqlite3.Connection) -> Decoded | None:
            found = conn.execute(
                "SELECT s.channels, s.label, s.timestamp_ms, s.metadata "
                "FROM atomr_snapshots s JOIN atomr_runs r "
                "ON r.workflow_id = s.workflow_id AND r.run_id = s.run_id "
                "WHERE s.workflow_id = ? AND s.run_id = ? AND s.step = ? "
                "AND (r.deadline_ms IS NULL OR r.deadline_ms > ?)",
                (key.workflow_id, key.run_id, key.super_step, self._clock()),
            ).fetchone()
            return None if found is None else decoded_of(*found)

        return await self._run(load)

    async def _latest(self, workflow_id: str, run_id: str) -> tuple[int, Decoded] | None:
        def latest(conn: sqlite3.Connection) -> tuple[int, Decoded] | None:
            found = conn.execute(
                "SELECT s.step, s.channels, s.label, s.timestamp_ms, s.metadata "
                "FROM atomr_snapshots s JOIN atomr_runs r "
                "ON r.workflow_id = s.workflow_id AND r.run_id = s.run_id "
                "WHERE s.workflow_id = ? AND s.run_id = ? "
                "AND (r.deadline_ms IS NULL OR r.deadline_ms > ?) "
                "ORDER BY s.step DESC LIMIT 1",
                (workflow_id, run_id, self._clock()),
            ).fetchone()
            return None if found is None else (found[0], decoded_of(*found[1:]))

        return await self._run(latest)

    async def _list(
        self, workflow_id: str, run_id: str, *, limit: int | None, before: int | None
    ) -> builtins.list[tuple[int, int, str]]:
        def list_(conn: sqlite3.Connection) -> builtins.list[tuple[int, int, str]]:
            rows = conn.execute(
                "SELECT s.step, s.timestamp_ms, s.label "
                "FROM atomr_snapshots s JOIN atomr_runs r "
                "ON r.workflow_id = s.workflow_id AND r.run_id = s.run_id "
                "WHERE s.workflow_id = ? AND s.run_id = ? AND s.step < ? "
                "AND (r.deadline_ms IS NULL OR r.deadline_ms > ?) "
                "ORDER BY s.step DESC LIMIT ?",
                (
                    workflow_id,
                    run_id,
                    2**63 - 1 if before is None else before,
                    self._clock(),
                    -1 if limit is None else limit,
                ),
            ).fetchall()
            rows.reverse()
            return rows

        return await self._run(list_)

    async def _fork(
        self, from_key: CheckpointKey, new_run_id: str, fields: Fields, event: CheckpointEvent
    ) -> None:
        edits = row_of(fields)
        payload = encode_event(event)
        wf, step = from_key.workflow_id, from_key.super_step

        def fork(now: int, conn: sqlite3.Connection) -> None:
            target = _live_record(conn, wf, new_run_id, now)
            if target is not None and target.steps:
                found = conn.execute(
                    "SELECT write_token FROM atomr_snapshots "
                    "WHERE workflow_id = ? AND run_id = ? AND step = ?",
                    (wf, new_run_id, step),
                ).fetchone()
                if found is not None and found[0] == new_run_id:
                    return  # this very fork, asked for again with the same run id
                raise CheckpointConflictError(wf, new_run_id, step)
            source = None
            if _live_record(conn, wf, from_key.run_id, now) is not None:
                source = conn.execute(
                    "SELECT channels, metadata FROM atomr_snapshots "
                    "WHERE workflow_id = ? AND run_id = ? AND step = ?",
                    (wf, from_key.run_id, step),
                ).fetchone()
            if source is None:
                raise CheckpointNotFoundError(wf, from_key.run_id, step)
            run = target or _Run()
            run.deadline_ms, run.steps = self._fresh_deadline(now), 1
            conn.execute(
                "INSERT INTO atomr_snapshots (workflow_id, run_id, step, timestamp_ms, label, "
                "channels, metadata, write_token) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    wf,
                    new_run_id,
                    step,
                    edits.timestamp_ms,
                    edits.label,
                    merged_channels(source[0], edits.channels).decode(),
                    source[1],
                    new_run_id,
                ),
            )
            _store_record(conn, wf, new_run_id, run, target is None)
            _publish(conn, wf, new_run_id, payload)
            if target is None:
                _sweep(conn, now)

        await self._transact(fork)

    async def _list_runs(
        self, workflow_id: str, *, limit: int, after: str | None
    ) -> builtins.list[str]:
        def list_runs(conn: sqlite3.Connection) -> builtins.list[str]:
            rows = conn.execute(
                "SELECT run_id FROM atomr_runs WHERE workflow_id = ? AND run_id > ? "
                f"AND steps > 0 AND {_LIVE} ORDER BY run_id LIMIT ?",
                (workflow_id, "" if after is None else after, self._clock(), limit),
            ).fetchall()
            return [run_id for (run_id,) in rows]

        return await self._run(list_runs)

    async def _delete_run(self, workflow_id: str, run_id: str, event: CheckpointEvent) -> bool:
        payload = encode_event(event)

        def delete(now: int, conn: sqlite3.Connection) -> bool:
            run = _live_record(conn, workflow_id, run_id, now)
            if run is None:
                return False
            _drop(conn, workflow_id, run_id)
            if run.steps:
                _publish(conn, workflow_id, run_id, payload)
            return bool(run.steps)

        return await self._transact(delete)

    async def _acquire_lease(
        self, workflow_id: str, run_id: str, owner: str, ttl_ms: int, *, must_exist: bool
    ) -> Lease:
        def acquire(now: int, conn: sqlite3.Connection) -> Lease:
            run = _live_record(conn, workflow_id, run_id, now)
            if must_exist and (run is None or not run.steps):
                raise RunNotFoundError(workflow_id, run_id)
            holder = None if run is None else run.holder(now)
            if run is not None and holder is not None and holder != owner:
                raise LeaseHeldError(workflow_id, run_id, holder, run.lease_until_ms)
            is_new = run is None
            if run is None:
                # A run being started lives as long as its lease, until its first save.
                run = _Run()
                run.deadline_ms = now + ttl_ms
            lease = self._grant(conn, run, workflow_id, run_id, owner, ttl_ms, now)
            _store_record(conn, workflow_id, run_id, run, is_new)
            return lease

        return await self._transact(acquire)

    async def _renew_lease(self, lease: Lease) -> Lease:
        wf, run_id = lease.workflow_id, lease.run_id

        def renew(now: int, conn: sqlite3.Connection) -> Lease:
            run = _live_record(conn, wf, run_id, now)
            if run is None or run.holder(now) is None or run.token != lease.token:
                raise LeaseLostError(wf, run_id, lease.token)
            run.lease_until_ms = now + lease.ttl_ms
            self._keep_for_lease(run, now)
            _store_record(conn, wf, run_id, run, False)
            cancelled = run.cancel_ms is not None
            return replace(lease, expires_at_ms=run.lease_until_ms, cancel_requested=cancelled)

        return await self._transact(renew)

    async def _release_lease(self, lease: Lease, note: bytes | None, *, keep_note: bool) -> bool:
        wf, run_id = lease.workflow_id, lease.run_id

        def release(now: int, conn: sqlite3.Connection) -> bool:
            run = _live_record(conn, wf, run_id, now)
            # Still this lease's token: held, expired but not taken over, or released by this
            # very call before (a retry), which releases again and answers the same.
            if run is None or run.token != lease.token:
                if note is not None:
                    raise LeaseLostError(wf, run_id, lease.token)
                return False
            run.owner, run.lease_until_ms = None, 0
            if not keep_note:
                run.note = None if note is None else note.decode()
            _store_record(conn, wf, run_id, run, False)
            return True

        return await self._transact(release)

    async def _run_record(self, workflow_id: str, run_id: str) -> RunRecord:
        def record(conn: sqlite3.Connection) -> RunRecord:
            now = self._clock()
            run = _live_record(conn, workflow_id, run_id, now, drop=False)
            if run is None:
                return RunRecord(None, None)
            holder = run.holder(now)
            lease = None
            if holder is not None:
                lease = Lease(
                    workflow_id,
                    run_id,
                    holder,
                    run.token,
                    run.lease_until_ms,
                    run.lease_ttl_ms,
                    run.cancel_ms is not None,
                )
            answer = None
            if run.answer_step is not None and run.answer is not None:
                answer = Answer(run.answer_step, orjson.loads(run.answer))
            note = None if run.note is None else orjson.loads(run.note)
            return RunRecord(lease, note, answer, run.cancel_ms, _queue_record(run))

        return await self._run(record)

    @asynccontextmanager
    async def _watch(
        self, workflow_id: str, run_id: str | None
    ) -> AsyncIterator[AsyncIterator[CheckpointEvent]]:
        if self.in_memory:
            # Nobody else can write to this database: poll it on the store's own connection.
            async def poll(query: Callable[[sqlite3.Connection], T]) -> T:
                return await self._run(query)

            yield await _subscribe(poll, workflow_id, run_id, self.poll_interval, None)
            return
        await self._run(lambda conn: None)  # the schema checked
        watcher = ThreadPoolExecutor(1, thread_name_prefix="atomr-sqlite-watch")
        loop = asyncio.get_running_loop()
        conn = await loop.run_in_executor(watcher, lambda: connect(self.path, self.busy_timeout_ms))

        async def poll_own(query: Callable[[sqlite3.Connection], T]) -> T:
            def call() -> T:
                try:
                    return query(conn)
                except sqlite3.Error as exc:
                    raise_typed(exc)

            return await loop.run_in_executor(watcher, call)

        try:
            yield await _subscribe(poll_own, workflow_id, run_id, self.poll_interval, conn)
        finally:
            await loop.run_in_executor(watcher, conn.close)
            watcher.shutdown(wait=True)


def connect(path: str, busy_timeout_ms: int) -> sqlite3.Connection:
    """A connection in autocommit mode (the store opens its transactions itself)."""
    conn = sqlite3.connect(
        path,
        timeout=busy_timeout_ms / 1000,
        isolation_level=None,
        check_same_thread=False,
        uri=path.startswith("file:"),
    )
    conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    return conn


async def _subscribe(
    poll: Callable[[Callable[[sqlite3.Connection], Any]], Any],
    workflow_id: str,
    run_id: str | None,
    interval: float,
    own: sqlite3.Connection | None,
) -> AsyncIterator[CheckpointEvent]:
    """Subscribe from now on: the workflow's events, read from ``atomr_events`` as they come.

    On a connection of its own (``own``), a poll first reads ``PRAGMA data_version``, which
    changes only when another connection committed: a quiet file costs one pragma per poll.
    """

    def start(conn: sqlite3.Connection) -> tuple[int, int]:
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        last = conn.execute("SELECT coalesce(max(id), 0) FROM atomr_events").fetchone()[0]
        return int(version), int(last)

    def new_rows(
        after: int, version: int
    ) -> Callable[[sqlite3.Connection], tuple[int, builtins.list[tuple[int, bytes]]]]:
        def read(conn: sqlite3.Connection) -> tuple[int, builtins.list[tuple[int, bytes]]]:
            now_version = int(conn.execute("PRAGMA data_version").fetchone()[0])
            if own is not None and now_version == version:
                return now_version, []
            rows = conn.execute(
                "SELECT id, payload FROM atomr_events WHERE workflow_id = ? AND id > ? ORDER BY id",
                (workflow_id, after),
            ).fetchall()
            return now_version, rows

        return read

    version, position = await poll(start)

    async def events() -> AsyncIterator[CheckpointEvent]:
        nonlocal version, position
        while True:
            version, rows = await poll(new_rows(position, version))
            for event_id, data in rows:
                position = event_id
                event = decode_event(data)
                if event is not None and event.is_about(workflow_id, run_id):
                    yield event
            if not rows:
                await asyncio.sleep(interval)

    return events()


def _check_lease(
    run: _Run | None, workflow_id: str, run_id: str, step: int, lease: Lease | None, now: int
) -> None:
    """A write carrying ``lease`` needs it live (and the run, past super-step 0); one without
    a lease is refused while someone holds one."""
    holder = None if run is None else run.holder(now)
    if lease is not None:
        if run is None or holder is None or run.token != lease.token:
            raise LeaseLostError(workflow_id, run_id, lease.token)
        if step != 0 and not run.steps:
            raise RunNotFoundError(workflow_id, run_id)
    elif run is not None and holder is not None:
        raise LeaseHeldError(workflow_id, run_id, holder, run.lease_until_ms)


def _latest_step(conn: sqlite3.Connection, workflow_id: str, run_id: str) -> int | None:
    (step,) = conn.execute(
        "SELECT max(step) FROM atomr_snapshots WHERE workflow_id = ? AND run_id = ?",
        (workflow_id, run_id),
    ).fetchone()
    return None if step is None else int(step)


def _insert_snapshot(
    conn: sqlite3.Connection, workflow_id: str, run_id: str, step: int, row: Row, token: str | None
) -> None:
    conn.execute(
        "INSERT INTO atomr_snapshots (workflow_id, run_id, step, timestamp_ms, label, "
        "channels, metadata, write_token) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (workflow_id, run_id, step) DO UPDATE SET "
        "timestamp_ms = excluded.timestamp_ms, label = excluded.label, "
        "channels = excluded.channels, metadata = excluded.metadata, "
        "write_token = excluded.write_token",
        (
            workflow_id,
            run_id,
            step,
            row.timestamp_ms,
            row.label,
            row.channels.decode(),
            None if row.metadata is None else row.metadata.decode(),
            token,
        ),
    )


def _queue_record(run: _Run) -> QueueRecord | None:
    if run.queue_state is None:
        return None
    return QueueRecord(
        run.queue_state,
        run.attempts,
        run.ready_at_ms if run.queue_state == "queued" else None,
        None if run.reason is None else orjson.loads(run.reason),
    )


def _announce(
    conn: sqlite3.Connection,
    kind: EventKind,
    workflow_id: str,
    run_id: str,
    now: int,
    label: str = "",
) -> None:
    """Publish a queue event (no super-step) in the writing transaction."""
    event = CheckpointEvent(kind, workflow_id, run_id, None, label, now)
    _publish(conn, workflow_id, run_id, encode_event(event))


def _expire_claim(
    conn: sqlite3.Connection, workflow_id: str, run_id: str, run: _Run, now: int
) -> None:
    """A claimed run whose deadline passed: its index entry follows a renewed lease;
    otherwise its worker is gone, and it is queued again (or ends, if cancelled)."""
    if run.holder(now) is not None:
        run.leased_until_ms = run.lease_until_ms
    else:
        run.leased_until_ms = None
        if run.queue_state == "running" and run.cancel_ms is not None:
            run.queue_state = "cancelled"
            _announce(conn, "cancelled", workflow_id, run_id, now)
        elif run.queue_state == "running":
            run.queue_state, run.ready_at_ms, run.expired = "queued", now, 1
            _announce(conn, "lease_expired", workflow_id, run_id, now, run.owner or "")
    _store_record(conn, workflow_id, run_id, run, False)


class _SqliteWakeUps:
    """Wakes when a queue event of the workflows lands in the file (from any process), or when
    a delayed run or a claim's deadline comes due: a poll of the file every ``poll_interval``."""

    def __init__(self, store: SqliteCheckpointer, workflow_ids: builtins.list[str]) -> None:
        self._store = store
        self._workflow_ids = workflow_ids
        self._seen: int | None = None

    async def wait(self, at_most: float) -> None:
        clock = self._store._clock
        end = clock() + at_most * 1000
        while True:
            due, last = await self._store._next_due_ms(self._workflow_ids)
            seen, self._seen = self._seen, last
            now = clock()
            if (seen is not None and last != seen) or (due is not None and due <= now):
                return
            if now >= end:
                return
            until = end if due is None else min(end, due)
            await asyncio.sleep(min(self._store.poll_interval, max(0.0, (until - now) / 1000)))


def _live_record(
    conn: sqlite3.Connection, workflow_id: str, run_id: str, now: int, *, drop: bool = True
) -> _Run | None:
    """The run's record unless it expired; in a write transaction (``drop``), an expired run's
    rows are deleted here and now."""
    row = conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM atomr_runs WHERE workflow_id = ? AND run_id = ?",
        (workflow_id, run_id),
    ).fetchone()
    if row is None:
        return None
    run = _Run(*row)
    if run.deadline_ms is not None and run.deadline_ms <= now:
        if drop:
            _drop(conn, workflow_id, run_id)
        return None
    return run


_INSERT_RUN = (
    f"INSERT INTO atomr_runs (workflow_id, run_id, {_RUN_COLUMNS}) "
    f"VALUES (?, ?, {', '.join('?' for _ in _RUN_FIELDS)})"
)
_UPDATE_RUN = (
    f"UPDATE atomr_runs SET {', '.join(f'{name} = ?' for name in _RUN_FIELDS)} "
    "WHERE workflow_id = ? AND run_id = ?"
)


def _store_record(
    conn: sqlite3.Connection, workflow_id: str, run_id: str, run: _Run, is_new: bool
) -> None:
    if is_new:
        conn.execute(_INSERT_RUN, (workflow_id, run_id, *run.values()))
    else:
        conn.execute(_UPDATE_RUN, (*run.values(), workflow_id, run_id))


def _drop(conn: sqlite3.Connection, workflow_id: str, run_id: str) -> None:
    conn.execute(
        "DELETE FROM atomr_snapshots WHERE workflow_id = ? AND run_id = ?", (workflow_id, run_id)
    )
    conn.execute(
        "DELETE FROM atomr_runs WHERE workflow_id = ? AND run_id = ?", (workflow_id, run_id)
    )


def _publish(conn: sqlite3.Connection, workflow_id: str, run_id: str, payload: bytes) -> None:
    """Record an event for watchers, in the writing transaction; keep the last 10,000."""
    event_id = conn.execute(
        "INSERT INTO atomr_events (workflow_id, run_id, payload) VALUES (?, ?, ?)",
        (workflow_id, run_id, payload),
    ).lastrowid
    if event_id is not None and event_id % 1000 == 0:
        conn.execute("DELETE FROM atomr_events WHERE id <= ?", (event_id - EVENTS_KEPT,))


def _sweep(conn: sqlite3.Connection, now: int) -> None:
    """Delete up to :data:`SWEEP_BATCH` runs that expired (they are invisible already)."""
    expired = conn.execute(
        "SELECT workflow_id, run_id FROM atomr_runs WHERE deadline_ms <= ? LIMIT ?",
        (now, SWEEP_BATCH),
    ).fetchall()
    for workflow_id, run_id in expired:
        _drop(conn, workflow_id, run_id)


def raise_typed(exc: sqlite3.Error) -> NoReturn:
    """Raise the library's error for a SQLite failure (the original kept as its cause)."""
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        raise StoreLockedError(
            f"the SQLite database stayed locked by another writer: {exc}"
        ) from exc
    if name.startswith("SQLITE_FULL"):
        raise StoreDiskFullError(f"the SQLite database's disk is full: {exc}") from exc
    if name.startswith(("SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")):
        raise StorePermissionError(f"the SQLite database cannot be written: {exc}") from exc
    if name.startswith(("SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_CORRUPT", "SQLITE_NOTADB")):
        raise StoreUnavailableError(f"the SQLite database cannot be used: {exc}") from exc
    if isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
        raise StoreUnavailableError(f"the SQLite store is closed: {exc}") from exc
    raise exc
