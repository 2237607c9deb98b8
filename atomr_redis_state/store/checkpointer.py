"""The :class:`Checkpointer` protocol, and :class:`BaseCheckpointer` that implements it once.

The protocol is what every checkpoint store does, on every backend. :class:`BaseCheckpointer`
implements its public methods once: it validates arguments and encodes values before anything
reaches a backend, so bad input fails the same way everywhere and never leaves anything
half-written. Backends implement the underscore methods on already-encoded fields.
"""

from __future__ import annotations

import builtins
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import Literal, NamedTuple, Protocol, cast, runtime_checkable

from .codec import decode_fields, encode_channels, encode_meta, encode_value, normalise_edits
from .ids import FORK_LABEL, fork_run_id, lineage_root
from .types import (
    JSON,
    OUTCOMES,
    CheckpointEvent,
    CheckpointKey,
    CheckpointMeta,
    Claim,
    EventKind,
    Lease,
    Outcome,
    QueueDepth,
    QueueState,
    RunRecord,
    Snapshot,
    WorkerInfo,
    now_ms,
)
from .validation import (
    check_id,
    check_owner,
    check_positive_int,
    check_super_step,
    duration_to_ms,
    not_before_to_delay_ms,
)

log = logging.getLogger(__name__)

Edits = Mapping[str, object] | Iterable[tuple[str, object]]
"""Channel edits for :meth:`Checkpointer.fork`: a mapping, or (channel, value) pairs."""

NotBefore = datetime | timedelta
"""When a queued run becomes claimable: an aware datetime, or a delay from now."""

Hold = float | timedelta | Literal["forever"]
"""How long ``save(..., hold=...)`` keeps a whole run, whatever the store's ``ttl``: a duration
from now, or ``"forever"``. The next save without ``hold`` puts the run back on the ``ttl``."""


@runtime_checkable
class Checkpointer(Protocol):
    """A store of per-super-step snapshots of agent runs, and of leases on those runs.

    Every implementation has the same semantics: ``save`` upserts (or, with ``exclusive``, refuses
    to overwrite); ``latest`` is the highest super-step; ``list`` is ascending; ``fork`` copies a
    snapshot into a new run of the same workflow, with edits, leaving the source untouched.

    Leases let a fleet run each run on one worker at a time: ``acquire_lease`` claims a run for
    a while (on the store's clock), and every ``save`` that carries the lease is refused by the
    store when the lease was lost, so a worker that stalled past its lease writes nothing.
    """

    async def save(
        self,
        snapshot: Snapshot,
        *,
        exclusive: bool = False,
        lease: Lease | None = None,
        hold: Hold | None = None,
    ) -> None:
        """Store ``snapshot``, replacing that step; ``exclusive`` refuses an existing step.

        With ``lease``, the save is refused with :class:`~..errors.LeaseLostError` unless that
        lease is still the run's live lease, and with :class:`~..errors.RunNotFoundError` when
        the run no longer exists (except at super-step 0, the save that creates a run). Without
        one, a run leased by a worker refuses it with :class:`~..errors.LeaseHeldError`. A save
        carrying a lease on a run someone asked to cancel (:meth:`cancel`) is refused
        with :class:`~..errors.RunCancelledError`. The lease is checked before an ``exclusive``
        save's conflict, so a stale worker always gets ``LeaseLostError``. ``hold`` keeps every
        key of the run for that long from now (or forever), overriding ``ttl`` until the next
        save without ``hold``: for runs waiting on a human.
        """
        ...

    async def load(self, key: CheckpointKey) -> Snapshot | None:
        """The snapshot at ``key``, or None."""
        ...

    async def latest(self, workflow_id: str, run_id: str) -> Snapshot | None:
        """The snapshot with the highest super-step of the run, or None."""
        ...

    async def list(
        self,
        workflow_id: str,
        run_id: str,
        *,
        limit: int | None = None,
        before: int | None = None,
    ) -> builtins.list[CheckpointMeta]:
        """The run's snapshots in ascending super-step order.

        ``before`` keeps only steps below it; ``limit`` keeps the highest ``limit`` of those, so
        ``before=page[0].super_step`` fetches the page before ``page``.
        """
        ...

    async def fork(
        self, from_key: CheckpointKey, edits: Edits | None = None, *, run_id: str | None = None
    ) -> str:
        """Copy the snapshot at ``from_key`` into a new run with ``edits``; return its run id.

        ``run_id`` (from :func:`~.ids.fork_run_id` of the source run) names the fork: a caller
        that retries with the same ``run_id`` after an error gets the same fork back, never a
        second one. By default a fresh one is made.
        """
        ...

    async def list_runs(
        self, workflow_id: str, *, limit: int = 100, after: str | None = None
    ) -> builtins.list[str]:
        """Run ids of the workflow that have a snapshot, ascending; ``after`` pages on."""
        ...

    async def list_workflows(
        self, *, limit: int = 100, after: str | None = None
    ) -> builtins.list[str]:
        """Workflow ids with at least one live run in this store, ascending; ``after`` pages on."""
        ...

    async def delete_run(self, workflow_id: str, run_id: str) -> bool:
        """Remove every snapshot of the run, and its lease; True when there was a snapshot."""
        ...

    async def acquire_lease(
        self,
        workflow_id: str,
        run_id: str,
        owner: str,
        ttl: float | timedelta,
        *,
        must_exist: bool = True,
    ) -> Lease:
        """Claim the run for ``owner`` for ``ttl``, with a fencing token larger than any before.

        Raises :class:`~..errors.LeaseHeldError` while another owner holds a live lease, and
        :class:`~..errors.RunNotFoundError` if ``must_exist`` and the run has no snapshot. The
        same owner acquiring again while it holds the lease extends it and keeps its token, so
        a retried call gets the same lease back.
        """
        ...

    async def renew_lease(self, lease: Lease) -> Lease:
        """Extend a live lease by its ttl from now; :class:`~..errors.LeaseLostError` if lost.

        The run's keys never expire while its lease is live: when the run's shared deadline
        would come before the lease's (or, with a ``ttl``, less than ``ttl`` from now), every
        key of the run moves to one later deadline together. The renewed lease's
        ``cancel_requested`` says whether someone asked to cancel the run: its holder stops.
        """
        ...

    async def release_lease(
        self, lease: Lease, *, note: JSON = None, keep_note: bool = False
    ) -> bool:
        """Give the run up, storing ``note`` (None clears it; ``keep_note`` leaves the note
        there is) for :meth:`run_record`.

        False when the lease was no longer this one (taken over, or the run deleted); with a
        ``note`` that is a :class:`~..errors.LeaseLostError` instead, and the note is not stored.
        """
        ...

    async def run_record(self, workflow_id: str, run_id: str) -> RunRecord:
        """The run's live lease (or None), the note its last lease holder left, the answer
        recorded for it (if any) and when someone asked to cancel it (if anyone did)."""
        ...

    async def record_answer(
        self,
        workflow_id: str,
        run_id: str,
        value: object,
        *,
        super_step: int,
        lease: Lease | None = None,
    ) -> None:
        """Keep a human's answer to the run paused at ``super_step``, durably, without running it.

        Atomic, one round trip, safe to send again: stored in the run's record (see
        :attr:`RunRecord.answer`) only if the run's latest super-step is still ``super_step``;
        the next ``StatefulRunner.run()`` (on any worker) resumes the paused step with it, and
        it survives that attempt failing. Refused, with nothing written, by
        :class:`~..errors.RunNotFoundError` (no run), :class:`~..errors.AnswerRefusedError` (the
        run moved past ``super_step``, or, without a lease, that pause already has a different
        answer: the first answer wins), :class:`~..errors.RunCancelledError`, and as ``save``
        is: :class:`~..errors.LeaseHeldError` while someone else holds the run, and
        :class:`~..errors.LeaseLostError` when ``lease`` is not the live lease. With its lease,
        a runner that resumes the run replaces the answer with its own.
        """
        ...

    def watch(
        self, workflow_id: str, run_id: str | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[CheckpointEvent]]:
        """Checkpoint events of a workflow (or of one run) from now on, as they happen.

        ``async with store.watch(wf) as events: async for event in events: ...``: the
        subscription is in place when the ``with`` block starts. Events are notifications, not
        a log: one that happens while nobody is subscribed (or while a subscriber is
        disconnected) is not delivered later; read the store for the state itself. When Redis
        drops the subscription and it is restored, a ``gap`` event marks where events may
        have been lost.
        """
        ...

    # The ready queue: work distribution for a fleet of workers (see :mod:`..fleet`).

    async def submit(self, snapshot: Snapshot, *, not_before: NotBefore | None = None) -> bool:
        """Create a run from its super-step 0 ``snapshot`` and queue it, atomically, in one
        round trip; claimable from ``not_before`` on (default: at once).

        True when this call created the run; False when the run already exists (a caller that
        submits the same run id again, or retries after a lost reply, changes nothing).
        """
        ...

    async def claim(self, workflow_id: str, owner: str, ttl: float | timedelta) -> Claim | None:
        """Take the earliest ready run of the workflow whose lease is free, and its lease for
        ``owner`` (a fencing token larger than any before), or None when nothing is ready.

        First, the runs whose worker's lease expired (a crashed or stalled worker) go back to
        the queue (event ``lease_expired``; the next claim reports ``taken_over``), found
        through the lease-deadline index, never by a scan. On Redis the claim itself is one
        script on one slot bucket; the buckets that need a claim come from the workflow's hint
        index (see :mod:`.redis.queue`).

        A claim whose reply is lost (a dropped connection) is not answered again: its run
        stays leased to ``owner`` until the lease expires, then the next claim takes it over.
        It never runs on two workers at once, and waits at most one lease ttl.
        """
        ...

    async def finish(
        self,
        lease: Lease,
        outcome: Outcome,
        *,
        reason: JSON = None,
        retry_in: float | timedelta | None = None,
        max_attempts: int | None = None,
        note: JSON = None,
        keep_note: bool = True,
    ) -> QueueState:
        """End the claim ``lease`` stands for, releasing the lease; return the run's queue
        state after it.

        ``completed``; ``paused`` (until :meth:`resume_run`); ``released`` (queued again at
        once: a graceful shutdown); ``retry`` (one more failed attempt: queued again after
        ``retry_in``, or ``failed`` once ``max_attempts`` attempts have failed); ``failed`` (a
        dead letter at once); ``blocked`` (the workflow changed; until :meth:`requeue`).
        ``note`` and ``keep_note`` release the lease as :meth:`release_lease` does, in the same
        round trip: a ``note`` is stored (a failed layer's), else ``keep_note=False`` clears
        it, and by default the note stays as it is.
        ``reason`` (JSON) says why, for ``status()`` and the CLI. A run whose cancellation was
        requested ends ``cancelled`` instead, unless it completed.

        A retry after a lost reply answers the same and changes nothing; a lease that was taken
        over meanwhile raises :class:`~..errors.LeaseLostError`, with nothing written.
        """
        ...

    async def resume_run(
        self,
        workflow_id: str,
        run_id: str,
        answer: JSON,
        *,
        not_before: NotBefore | None = None,
    ) -> QueueState:
        """Record a human's ``answer`` for a paused run and queue it; the next claim hands the
        answer to its worker (:attr:`Claim.answer`), and it is kept until the run completes or
        pauses again, so a failed attempt does not lose it.

        :class:`~..errors.RunNotFoundError` for no run; :class:`~..errors.QueueStateError`
        unless the run is paused (or was never queued). Sending the same answer again while
        the run waits in the queue is a no-op.
        """
        ...

    async def requeue(
        self, workflow_id: str, run_id: str, *, not_before: NotBefore | None = None
    ) -> QueueState:
        """Queue a ``failed`` (dead letter), ``blocked`` or never-queued run again by hand,
        with its attempts reset, and return ``queued``. A queued or running run is left as it
        is (its state is returned); a completed, paused or cancelled one raises
        :class:`~..errors.QueueStateError`; no run, :class:`~..errors.RunNotFoundError`."""
        ...

    async def cancel(self, workflow_id: str, run_id: str) -> QueueState:
        """Stop a run: a queued, paused, failed, blocked or never-queued run leaves the queue at
        once (``cancelled``, event ``cancelled``); a running one (claimed, or held by an inline
        runner) is flagged and ``running`` is returned: its worker stops at its next checkpoint
        or renewal, and it ends ``cancelled``. A completed or cancelled run is left as it is
        (its state is returned); a run with no checkpoint raises
        :class:`~..errors.RunNotFoundError`.

        One round trip, safe to send again. The flag lives in the run's record
        (:attr:`RunRecord.cancel_requested_at_ms`, the first request's time) until the run is
        deleted or expires: every later save carrying a lease is refused with
        :class:`~..errors.RunCancelledError` and every lease granted or renewed reports it
        (:attr:`Lease.cancel_requested`).
        """
        ...

    async def queue_depth(self, workflow_id: str) -> QueueDepth:
        """How many runs of the workflow are ready, delayed, running, paused, failed, blocked."""
        ...

    def wake_ups(self, workflow_ids: Sequence[str]) -> AbstractAsyncContextManager[WakeUps]:
        """Signals that work may be ready for these workflows (a run queued, released or
        retried), so idle workers wait without polling hard: ``async with
        store.wake_ups(["wf"]) as wake: await wake.wait(at_most=1.0)``."""
        ...

    async def heartbeat(self, worker_id: str, info: JSON, ttl: float | timedelta) -> None:
        """Say that worker ``worker_id`` is alive for ``ttl`` more, with ``info`` (JSON: what
        it runs and holds). Each worker has a key of its own: one never disturbs another."""
        ...

    async def workers(self) -> builtins.list[WorkerInfo]:
        """The workers whose last heartbeat has not expired, by id."""
        ...

    async def forget_worker(self, worker_id: str) -> None:
        """Remove a worker's heartbeat at once (a graceful shutdown)."""
        ...

    async def take_permit(
        self, workflow_id: str, holder: str, limit: int, ttl: float | timedelta
    ) -> bool:
        """Take one of the workflow's ``limit`` fleet-wide in-flight permits for ``holder``
        (for ``ttl``; extended if ``holder`` has it already); False when all are taken. A
        worker takes one before it claims a run of a capped workflow and drops it after."""
        ...

    async def renew_permits(
        self, workflow_id: str, holders: Sequence[str], ttl: float | timedelta
    ) -> int:
        """Extend the permits these holders still have by ``ttl``; how many were."""
        ...

    async def drop_permit(self, workflow_id: str, holder: str) -> None:
        """Give a permit back (a no-op if it expired)."""
        ...


@runtime_checkable
class WakeUps(Protocol):
    """What :meth:`Checkpointer.wake_ups` yields."""

    async def wait(self, at_most: float) -> None:
        """Return when work may be ready, or after ``at_most`` seconds at the latest (earlier
        when the store knows a delayed run or a lease deadline comes due sooner)."""
        ...


Fields = Sequence[bytes]
"""A flat ``[field, value, field, value, ...]`` list of encoded snapshot fields, to write."""

Stored = Mapping[bytes, bytes]
"""The fields of a stored snapshot, as read back."""


class Decoded(NamedTuple):
    """A snapshot read back and decoded by the store itself: the SQL stores read the channels
    as one JSON document and parse it once, rather than field by field."""

    values: dict[str, JSON]
    label: str
    timestamp_ms: int
    metadata: dict[str, JSON]


Read = Stored | Decoded
"""What a store's ``_load`` and ``_latest`` give back for one snapshot."""

HOLD_FOREVER = -1
"""``hold`` in milliseconds as the backends take it: keep the run with no expiry."""


def deadline_with_lease(
    deadline_ms: int | None,
    has_steps: bool,
    now_ms: int,
    ttl_ms: int | None,
    lease_until_ms: int,
    lease_ttl_ms: int,
) -> int | None:
    """A run's deadline once a live lease (until ``lease_until_ms``) was taken or renewed, by
    the Redis store's rule (``keep_for_lease`` in ``lua/_common.lua``): a run not saved yet
    lives as long as its lease; a saved run whose deadline comes before the lease's, or less
    than ``ttl`` from now, moves to the later of ``now + 2 * ttl`` and the lease's deadline plus
    its ttl; a run with no expiry keeps none."""
    if deadline_ms is None:
        return None
    if not has_steps:
        return max(deadline_ms, lease_until_ms)
    ttl = ttl_ms or 0
    if deadline_ms >= max(now_ms + ttl, lease_until_ms):
        return deadline_ms
    return max(now_ms + 2 * ttl, lease_until_ms + lease_ttl_ms)


class BaseCheckpointer(ABC):
    """The public checkpointer API on top of a few primitives over encoded fields."""

    async def save(
        self,
        snapshot: Snapshot,
        *,
        exclusive: bool = False,
        lease: Lease | None = None,
        hold: Hold | None = None,
    ) -> None:
        if not isinstance(snapshot, Snapshot):
            raise TypeError(f"save() takes a Snapshot, not {type(snapshot).__name__}")
        if lease is not None:
            _check_lease_of(lease, snapshot.key.workflow_id, snapshot.key.run_id)
        hold_ms = _hold_ms(hold)
        fields = encode_channels(snapshot.values)
        fields += encode_meta(snapshot.label, snapshot.timestamp_ms, snapshot.metadata)
        key = snapshot.key
        kind: EventKind = "saved" if hold is None else "paused"
        event = CheckpointEvent(
            kind, key.workflow_id, key.run_id, key.super_step, snapshot.label, snapshot.timestamp_ms
        )
        started = time.perf_counter()
        await self._save(
            key, fields, exclusive=bool(exclusive), lease=lease, hold_ms=hold_ms, event=event
        )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "workflow %s run %s: saved super-step %d (%s, %d bytes) in %.1f ms",
                key.workflow_id,
                key.run_id,
                key.super_step,
                snapshot.label or "no label",
                sum(map(len, fields)),
                (time.perf_counter() - started) * 1000,
            )

    async def load(self, key: CheckpointKey) -> Snapshot | None:
        _check_key(key)
        fields = await self._load(key)
        return None if not fields else _snapshot(key, fields)

    async def latest(self, workflow_id: str, run_id: str) -> Snapshot | None:
        check_id(workflow_id, "workflow_id")
        check_id(run_id, "run_id")
        found = await self._latest(workflow_id, run_id)
        if found is None:
            return None
        step, fields = found
        # The ids were checked above and the step is the store's own: no need to check again.
        return _snapshot(_read_key(workflow_id, run_id, step), fields)

    async def list(
        self,
        workflow_id: str,
        run_id: str,
        *,
        limit: int | None = None,
        before: int | None = None,
    ) -> builtins.list[CheckpointMeta]:
        check_id(workflow_id, "workflow_id")
        check_id(run_id, "run_id")
        if limit is not None:
            check_positive_int(limit, "limit")
        if before is not None:
            check_super_step(before)
        rows = await self._list(workflow_id, run_id, limit=limit, before=before)
        return [CheckpointMeta(workflow_id, run_id, step, ts, label) for step, ts, label in rows]

    async def fork(
        self, from_key: CheckpointKey, edits: Edits | None = None, *, run_id: str | None = None
    ) -> str:
        _check_key(from_key)
        if run_id is None:
            run_id = fork_run_id(from_key.run_id)
        elif lineage_root(check_id(run_id, "run_id")) != lineage_root(from_key.run_id):
            raise ValueError(
                f"run_id {run_id!r} is not a fork id of run {from_key.run_id!r}: "
                "make it with fork_run_id(source_run_id)"
            )
        label, timestamp_ms = f"{FORK_LABEL}{from_key.run_id}", now_ms()
        fields = encode_channels(normalise_edits(edits))
        fields += encode_meta(label, timestamp_ms)
        event = CheckpointEvent(
            "forked",
            from_key.workflow_id,
            run_id,
            from_key.super_step,
            label,
            timestamp_ms,
            from_key.run_id,
        )
        started = time.perf_counter()
        await self._fork(from_key, run_id, fields, event)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "workflow %s run %s: forked super-step %d into %s (%d bytes of edits) in %.1f ms",
                from_key.workflow_id,
                from_key.run_id,
                from_key.super_step,
                run_id,
                sum(map(len, fields)),
                (time.perf_counter() - started) * 1000,
            )
        return run_id

    async def list_runs(
        self, workflow_id: str, *, limit: int = 100, after: str | None = None
    ) -> builtins.list[str]:
        check_id(workflow_id, "workflow_id")
        check_positive_int(limit, "limit")
        if after is not None and not isinstance(after, str):
            raise TypeError(f"after must be a run id (str), not {type(after).__name__}")
        return await self._list_runs(workflow_id, limit=limit, after=after)

    async def list_workflows(
        self, *, limit: int = 100, after: str | None = None
    ) -> builtins.list[str]:
        check_positive_int(limit, "limit")
        if after is not None and not isinstance(after, str):
            raise TypeError(f"after must be a workflow id (str), not {type(after).__name__}")
        return await self._list_workflows(limit=limit, after=after)

    async def delete_run(self, workflow_id: str, run_id: str) -> bool:
        check_id(workflow_id, "workflow_id")
        check_id(run_id, "run_id")
        event = CheckpointEvent("deleted", workflow_id, run_id, None, "", now_ms())
        return await self._delete_run(workflow_id, run_id, event)

    async def acquire_lease(
        self,
        workflow_id: str,
        run_id: str,
        owner: str,
        ttl: float | timedelta,
        *,
        must_exist: bool = True,
    ) -> Lease:
        check_id(workflow_id, "workflow_id")
        check_id(run_id, "run_id")
        check_owner(owner)
        ttl_ms = duration_to_ms(ttl, "lease ttl")
        if ttl_ms is None:
            raise TypeError("a lease needs a ttl")
        lease = await self._acquire_lease(
            workflow_id, run_id, owner, ttl_ms, must_exist=bool(must_exist)
        )
        log.info(
            "workflow %s run %s: lease %d taken by %s for %d ms",
            workflow_id,
            run_id,
            lease.token,
            owner,
            ttl_ms,
        )
        return lease

    async def renew_lease(self, lease: Lease) -> Lease:
        _check_lease(lease)
        return await self._renew_lease(lease)

    async def release_lease(
        self, lease: Lease, *, note: JSON = None, keep_note: bool = False
    ) -> bool:
        _check_lease(lease)
        if keep_note and note is not None:
            raise ValueError("give a note, or keep_note=True, not both")
        encoded = None if note is None else encode_value("note", note)
        released = await self._release_lease(lease, encoded, keep_note=bool(keep_note))
        log.info(
            "workflow %s run %s: lease %d %s by %s",
            lease.workflow_id,
            lease.run_id,
            lease.token,
            "released" if released else "already gone when released",
            lease.owner,
        )
        return released

    async def run_record(self, workflow_id: str, run_id: str) -> RunRecord:
        check_id(workflow_id, "workflow_id")
        check_id(run_id, "run_id")
        return await self._run_record(workflow_id, run_id)

    async def record_answer(
        self,
        workflow_id: str,
        run_id: str,
        value: object,
        *,
        super_step: int,
        lease: Lease | None = None,
    ) -> None:
        check_id(workflow_id, "workflow_id")
        check_id(run_id, "run_id")
        check_super_step(super_step)
        if lease is not None:
            _check_lease_of(lease, workflow_id, run_id)
        encoded = encode_value("answer", value)
        await self._record_answer(workflow_id, run_id, super_step, encoded, lease)

    @abstractmethod
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
        """Replace the snapshot at ``key`` and announce ``event``; if exclusive and taken, raise
        a conflict."""

    @abstractmethod
    async def _load(self, key: CheckpointKey) -> Read | None:
        """The stored fields at ``key``, or None (or empty) when there is no snapshot."""

    @abstractmethod
    async def _latest(self, workflow_id: str, run_id: str) -> tuple[int, Read] | None:
        """The highest step of the run and its fields, or None."""

    @abstractmethod
    async def _list(
        self, workflow_id: str, run_id: str, *, limit: int | None, before: int | None
    ) -> builtins.list[tuple[int, int, str]]:
        """``(step, timestamp_ms, label)`` rows, ascending."""

    @abstractmethod
    async def _fork(
        self, from_key: CheckpointKey, new_run_id: str, fields: Fields, event: CheckpointEvent
    ) -> None:
        """Copy ``from_key`` into ``new_run_id`` and set ``fields`` on the copy, atomically; a
        copy made before under the same ``new_run_id`` is this fork (a retry)."""

    @abstractmethod
    async def _list_runs(
        self, workflow_id: str, *, limit: int, after: str | None
    ) -> builtins.list[str]:
        """Up to ``limit`` live run ids above ``after``, ascending."""

    @abstractmethod
    async def _list_workflows(self, *, limit: int, after: str | None) -> builtins.list[str]:
        """Up to ``limit`` ids of workflows with a live run, above ``after``, ascending."""

    @abstractmethod
    async def _delete_run(self, workflow_id: str, run_id: str, event: CheckpointEvent) -> bool:
        """Remove every key of the run atomically; True when it had a snapshot."""

    @abstractmethod
    async def _acquire_lease(
        self, workflow_id: str, run_id: str, owner: str, ttl_ms: int, *, must_exist: bool
    ) -> Lease:
        """Take or extend the run's lease, atomically."""

    @abstractmethod
    async def _renew_lease(self, lease: Lease) -> Lease:
        """Extend a live lease, or raise LeaseLostError."""

    @abstractmethod
    async def _release_lease(self, lease: Lease, note: bytes | None, *, keep_note: bool) -> bool:
        """Clear the lease and set (or keep) the note, if the lease is still this one."""

    @abstractmethod
    async def _run_record(self, workflow_id: str, run_id: str) -> RunRecord:
        """The live lease, the note, the answer and the cancel request."""

    @abstractmethod
    async def _record_answer(
        self, workflow_id: str, run_id: str, super_step: int, value: bytes, lease: Lease | None
    ) -> None:
        """Store the encoded answer for ``super_step`` if the run is still there, atomically."""

    def watch(
        self, workflow_id: str, run_id: str | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[CheckpointEvent]]:
        check_id(workflow_id, "workflow_id")
        if run_id is not None:
            check_id(run_id, "run_id")
        return self._watch(workflow_id, run_id)

    @abstractmethod
    def _watch(
        self, workflow_id: str, run_id: str | None
    ) -> AbstractAsyncContextManager[AsyncIterator[CheckpointEvent]]:
        """Subscribe to the events of the workflow (of the run, if given)."""

    async def submit(self, snapshot: Snapshot, *, not_before: NotBefore | None = None) -> bool:
        if not isinstance(snapshot, Snapshot):
            raise TypeError(f"submit() takes a Snapshot, not {type(snapshot).__name__}")
        key = snapshot.key
        if key.super_step != 0:
            raise ValueError(f"a submitted run starts at super-step 0, not {key.super_step}")
        delay_ms = not_before_to_delay_ms(not_before)
        fields = encode_channels(snapshot.values)
        fields += encode_meta(snapshot.label, snapshot.timestamp_ms, snapshot.metadata)
        event = CheckpointEvent(
            "saved", key.workflow_id, key.run_id, 0, snapshot.label, snapshot.timestamp_ms
        )
        return await self._submit(key, fields, delay_ms, event)

    async def claim(self, workflow_id: str, owner: str, ttl: float | timedelta) -> Claim | None:
        check_id(workflow_id, "workflow_id")
        check_owner(owner)
        ttl_ms = duration_to_ms(ttl, "lease ttl")
        if ttl_ms is None:
            raise TypeError("a lease needs a ttl")
        return await self._claim(workflow_id, owner, ttl_ms)

    async def finish(
        self,
        lease: Lease,
        outcome: Outcome,
        *,
        reason: JSON = None,
        retry_in: float | timedelta | None = None,
        max_attempts: int | None = None,
        note: JSON = None,
        keep_note: bool = True,
    ) -> QueueState:
        _check_lease(lease)
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        retry_ms = 0 if retry_in is None else cast(int, duration_to_ms(retry_in, "retry_in"))
        if max_attempts is not None:
            check_positive_int(max_attempts, "max_attempts")
        encoded = None if reason is None else encode_value("reason", reason)
        kept = None if note is None else encode_value("note", note)
        keep = bool(keep_note) and note is None
        return await self._finish(
            lease, outcome, encoded, retry_ms, max_attempts or 0, kept, keep_note=keep
        )

    async def resume_run(
        self,
        workflow_id: str,
        run_id: str,
        answer: JSON,
        *,
        not_before: NotBefore | None = None,
    ) -> QueueState:
        check_id(workflow_id, "workflow_id")
        check_id(run_id, "run_id")
        encoded = encode_value("answer", answer)
        delay_ms = not_before_to_delay_ms(not_before)
        return await self._requeue(workflow_id, run_id, encoded, delay_ms)

    async def requeue(
        self, workflow_id: str, run_id: str, *, not_before: NotBefore | None = None
    ) -> QueueState:
        check_id(workflow_id, "workflow_id")
        check_id(run_id, "run_id")
        return await self._requeue(workflow_id, run_id, None, not_before_to_delay_ms(not_before))

    async def cancel(self, workflow_id: str, run_id: str) -> QueueState:
        check_id(workflow_id, "workflow_id")
        check_id(run_id, "run_id")
        return await self._cancel(workflow_id, run_id)

    async def queue_depth(self, workflow_id: str) -> QueueDepth:
        check_id(workflow_id, "workflow_id")
        return await self._queue_depth(workflow_id)

    def wake_ups(self, workflow_ids: Sequence[str]) -> AbstractAsyncContextManager[WakeUps]:
        if isinstance(workflow_ids, str):
            raise TypeError("wake_ups() takes a list of workflow ids, not one str")
        ids = [check_id(w, "workflow_id") for w in workflow_ids]
        if not ids:
            raise ValueError("wake_ups() needs at least one workflow id")
        return self._wake_ups(ids)

    async def heartbeat(self, worker_id: str, info: JSON, ttl: float | timedelta) -> None:
        check_id(worker_id, "worker_id")
        ttl_ms = duration_to_ms(ttl, "heartbeat ttl")
        if ttl_ms is None:
            raise TypeError("a heartbeat needs a ttl")
        await self._heartbeat(worker_id, encode_value("info", info), ttl_ms)

    async def workers(self) -> builtins.list[WorkerInfo]:
        return sorted(await self._workers(), key=lambda w: w.worker_id)

    async def forget_worker(self, worker_id: str) -> None:
        check_id(worker_id, "worker_id")
        await self._forget_worker(worker_id)

    async def take_permit(
        self, workflow_id: str, holder: str, limit: int, ttl: float | timedelta
    ) -> bool:
        check_id(workflow_id, "workflow_id")
        check_id(holder, "holder")
        check_positive_int(limit, "limit")
        return await self._take_permit(workflow_id, holder, limit, _ttl_ms(ttl))

    async def renew_permits(
        self, workflow_id: str, holders: Sequence[str], ttl: float | timedelta
    ) -> int:
        check_id(workflow_id, "workflow_id")
        if isinstance(holders, str):
            raise TypeError("renew_permits() takes a list of holders, not one str")
        checked = [check_id(holder, "holder") for holder in holders]
        if not checked:
            return 0
        return await self._renew_permits(workflow_id, checked, _ttl_ms(ttl))

    async def drop_permit(self, workflow_id: str, holder: str) -> None:
        check_id(workflow_id, "workflow_id")
        check_id(holder, "holder")
        await self._drop_permit(workflow_id, holder)

    @abstractmethod
    async def _take_permit(self, workflow_id: str, holder: str, limit: int, ttl_ms: int) -> bool:
        """Take (or extend) a permit if fewer than ``limit`` live ones are held."""

    @abstractmethod
    async def _renew_permits(
        self, workflow_id: str, holders: builtins.list[str], ttl_ms: int
    ) -> int:
        """Extend the holders' live permits."""

    @abstractmethod
    async def _drop_permit(self, workflow_id: str, holder: str) -> None:
        """Remove the holder's permit."""

    @abstractmethod
    async def _submit(
        self, key: CheckpointKey, fields: Fields, delay_ms: int, event: CheckpointEvent
    ) -> bool:
        """Create the run at super-step 0 with ``fields`` and queue it, unless it exists."""

    @abstractmethod
    async def _claim(self, workflow_id: str, owner: str, ttl_ms: int) -> Claim | None:
        """Requeue expired leases, then claim the earliest ready run."""

    @abstractmethod
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
        """Settle the claim: release the lease (storing, clearing or keeping the note) and move
        the run by ``outcome``."""

    @abstractmethod
    async def _requeue(
        self, workflow_id: str, run_id: str, answer: bytes | None, delay_ms: int
    ) -> QueueState:
        """Queue the run again: with ``answer``, a paused run; without, a dead letter."""

    @abstractmethod
    async def _cancel(self, workflow_id: str, run_id: str) -> QueueState:
        """Cancel a waiting run, or flag a running one."""

    @abstractmethod
    async def _queue_depth(self, workflow_id: str) -> QueueDepth:
        """Count the workflow's runs by queue part."""

    @abstractmethod
    def _wake_ups(self, workflow_ids: builtins.list[str]) -> AbstractAsyncContextManager[WakeUps]:
        """Signals that work may be ready."""

    @abstractmethod
    async def _heartbeat(self, worker_id: str, info: bytes, ttl_ms: int) -> None:
        """Store the worker's heartbeat for ``ttl_ms``."""

    @abstractmethod
    async def _workers(self) -> builtins.list[WorkerInfo]:
        """The live workers."""

    @abstractmethod
    async def _forget_worker(self, worker_id: str) -> None:
        """Drop the worker's heartbeat."""


# The public methods are documented once, on the protocol; help() shows it on every backend.
for _method in (
    "save",
    "load",
    "latest",
    "list",
    "fork",
    "list_runs",
    "list_workflows",
    "delete_run",
    "acquire_lease",
    "renew_lease",
    "release_lease",
    "run_record",
    "record_answer",
    "watch",
    "submit",
    "claim",
    "finish",
    "resume_run",
    "requeue",
    "cancel",
    "queue_depth",
    "wake_ups",
    "heartbeat",
    "workers",
    "forget_worker",
    "take_permit",
    "renew_permits",
    "drop_permit",
):
    getattr(BaseCheckpointer, _method).__doc__ = getattr(Checkpointer, _method).__doc__


def _hold_ms(hold: Hold | None) -> int | None:
    """``hold`` in milliseconds: None (use the ttl), :data:`HOLD_FOREVER`, or a duration."""
    if hold is None:
        return None
    if hold == "forever":
        return HOLD_FOREVER
    if isinstance(hold, str):
        raise ValueError(f"hold must be a duration or 'forever', got {hold!r}")
    return duration_to_ms(hold, "hold")


def _ttl_ms(ttl: float | timedelta) -> int:
    ttl_ms = duration_to_ms(ttl, "ttl")
    if ttl_ms is None:
        raise TypeError("a ttl is required")
    return ttl_ms


def _check_lease(lease: object) -> Lease:
    if not isinstance(lease, Lease):
        raise TypeError(f"expected a Lease, not {type(lease).__name__}")
    return lease


def _check_lease_of(lease: object, workflow_id: str, run_id: str) -> None:
    checked = _check_lease(lease)
    if (checked.workflow_id, checked.run_id) != (workflow_id, run_id):
        raise ValueError(
            f"the lease is on run {checked.run_id!r} of workflow {checked.workflow_id!r}, "
            f"not on run {run_id!r} of workflow {workflow_id!r}"
        )


def _check_key(key: object) -> None:
    if not isinstance(key, CheckpointKey):
        raise TypeError(f"expected a CheckpointKey, not {type(key).__name__}")


_new = object.__new__
_set = object.__setattr__


def _read_key(workflow_id: str, run_id: str, super_step: int) -> CheckpointKey:
    """A key of checked ids and a step the store read back: built without checking again."""
    key: CheckpointKey = _new(CheckpointKey)
    _set(key, "workflow_id", workflow_id)
    _set(key, "run_id", run_id)
    _set(key, "super_step", super_step)
    return key


def _snapshot(key: CheckpointKey, fields: Read) -> Snapshot:
    """The snapshot the store read back: built without the checks of ``Snapshot()`` (a save
    checked it, and decoding gives exactly the types those checks require)."""
    parts = fields if isinstance(fields, Decoded) else decode_fields(fields.items())
    values, label, timestamp_ms, metadata = parts
    snapshot: Snapshot = _new(Snapshot)
    _set(snapshot, "key", key)
    _set(snapshot, "values", values)
    _set(snapshot, "label", label)
    _set(snapshot, "timestamp_ms", timestamp_ms)
    _set(snapshot, "metadata", metadata)
    return snapshot
