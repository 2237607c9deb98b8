"""The :class:`Checkpointer` protocol, and :class:`BaseCheckpointer` that implements it once.

The protocol is what every checkpoint store does, on every backend. :class:`BaseCheckpointer`
implements its public methods once: it validates arguments and encodes values before anything
reaches a backend, so bad input fails the same way everywhere and never leaves anything
half-written. Backends implement the underscore methods on already-encoded fields.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import timedelta
from typing import Literal, Protocol, runtime_checkable

from .codec import decode_fields, encode_channels, encode_meta, encode_value, normalise_edits
from .ids import FORK_LABEL, fork_run_id, lineage_root
from .types import (
    JSON,
    CheckpointEvent,
    CheckpointKey,
    CheckpointMeta,
    EventKind,
    Lease,
    RunRecord,
    Snapshot,
    now_ms,
)
from .validation import (
    check_id,
    check_owner,
    check_positive_int,
    check_super_step,
    duration_to_ms,
)

Edits = Mapping[str, object] | Iterable[tuple[str, object]]
"""Channel edits for :meth:`Checkpointer.fork`: a mapping, or (channel, value) pairs."""

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
        carrying a lease on a run someone asked to cancel (:meth:`request_cancel`) is refused
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

    async def request_cancel(self, workflow_id: str, run_id: str) -> bool:
        """Ask that the run stop: True when the run exists (and is now flagged), else False.

        One round trip, safe to send again (the first request's time is kept). The flag lives
        in the run's record (:attr:`RunRecord.cancel_requested_at_ms`) until the run is deleted
        or expires: every later save carrying a lease is refused with
        :class:`~..errors.RunCancelledError`, every lease renewed reports it
        (:attr:`Lease.cancel_requested`), so a runner stops at its next renewal or checkpoint,
        and the run's status is ``cancelled`` once nobody holds it (unless it had completed).
        """
        ...

    def watch(
        self, workflow_id: str, run_id: str | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[CheckpointEvent]]:
        """Checkpoint events of a workflow (or of one run) from now on, as they happen.

        ``async with store.watch(wf) as events: async for event in events: ...``: the
        subscription is in place when the ``with`` block starts. Events are notifications, not
        a log: one that happens while nobody is subscribed (or while a subscriber is
        disconnected) is not delivered later; read the store for the state itself.
        """
        ...


Fields = Sequence[bytes]
"""A flat ``[field, value, field, value, ...]`` list of encoded snapshot fields, to write."""

Stored = Mapping[bytes, bytes]
"""The fields of a stored snapshot, as read back."""

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
        await self._save(
            key, fields, exclusive=bool(exclusive), lease=lease, hold_ms=hold_ms, event=event
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
        await self._fork(from_key, run_id, fields, event)
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
        return await self._acquire_lease(
            workflow_id, run_id, owner, ttl_ms, must_exist=bool(must_exist)
        )

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
        return await self._release_lease(lease, encoded, keep_note=bool(keep_note))

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

    async def request_cancel(self, workflow_id: str, run_id: str) -> bool:
        check_id(workflow_id, "workflow_id")
        check_id(run_id, "run_id")
        return await self._request_cancel(workflow_id, run_id)

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
    async def _load(self, key: CheckpointKey) -> Stored | None:
        """The stored fields at ``key``, or None (or empty) when there is no snapshot."""

    @abstractmethod
    async def _latest(self, workflow_id: str, run_id: str) -> tuple[int, Stored] | None:
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

    @abstractmethod
    async def _request_cancel(self, workflow_id: str, run_id: str) -> bool:
        """Flag the run as cancelled (keeping the first request's time); False: no run."""

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
    "request_cancel",
    "watch",
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


def _snapshot(key: CheckpointKey, fields: Stored) -> Snapshot:
    """The snapshot the store read back: built without the checks of ``Snapshot()`` (a save
    checked it, and decoding gives exactly the types those checks require)."""
    values, label, timestamp_ms, metadata = decode_fields(fields.items())
    snapshot: Snapshot = _new(Snapshot)
    _set(snapshot, "key", key)
    _set(snapshot, "values", values)
    _set(snapshot, "label", label)
    _set(snapshot, "timestamp_ms", timestamp_ms)
    _set(snapshot, "metadata", metadata)
    return snapshot
