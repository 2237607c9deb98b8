"""The :class:`Checkpointer` protocol, and :class:`BaseCheckpointer` that implements it once.

The protocol is what every checkpoint store does, on every backend. :class:`BaseCheckpointer`
implements its public methods once: it validates arguments and encodes values before anything
reaches a backend, so bad input fails the same way everywhere and never leaves anything
half-written. Backends implement the underscore methods on already-encoded fields.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from .codec import decode_fields, encode_channels, encode_meta, normalise_edits
from .ids import fork_run_id
from .types import CheckpointKey, CheckpointMeta, Snapshot, now_ms
from .validation import check_id, check_positive_int, check_super_step

Edits = Mapping[str, object] | Iterable[tuple[str, object]]
"""Channel edits for :meth:`Checkpointer.fork`: a mapping, or (channel, value) pairs."""


@runtime_checkable
class Checkpointer(Protocol):
    """A store of per-super-step snapshots of agent runs.

    Every implementation has the same semantics: ``save`` upserts (or, with ``exclusive``, refuses
    to overwrite); ``latest`` is the highest super-step; ``list`` is ascending; ``fork`` copies a
    snapshot into a new run of the same workflow, with edits, leaving the source untouched.
    """

    async def save(self, snapshot: Snapshot, *, exclusive: bool = False) -> None:
        """Store ``snapshot``, replacing that step; ``exclusive`` refuses an existing step."""
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

    async def fork(self, from_key: CheckpointKey, edits: Edits | None = None) -> str:
        """Copy the snapshot at ``from_key`` into a new run with ``edits``; return its run id."""
        ...

    async def list_runs(
        self, workflow_id: str, *, limit: int = 100, after: str | None = None
    ) -> builtins.list[str]:
        """Run ids of the workflow that have a snapshot, ascending; ``after`` pages on."""
        ...

    async def delete_run(self, workflow_id: str, run_id: str) -> bool:
        """Remove every snapshot of the run; True when there was one."""
        ...


Fields = Sequence[bytes]
"""A flat ``[field, value, field, value, ...]`` list of encoded snapshot fields, to write."""

Stored = Mapping[bytes, bytes]
"""The fields of a stored snapshot, as read back."""


class BaseCheckpointer(ABC):
    """The public checkpointer API on top of a few primitives over encoded fields."""

    async def save(self, snapshot: Snapshot, *, exclusive: bool = False) -> None:
        if not isinstance(snapshot, Snapshot):
            raise TypeError(f"save() takes a Snapshot, not {type(snapshot).__name__}")
        fields = encode_channels(snapshot.values)
        fields += encode_meta(snapshot.label, snapshot.timestamp_ms)
        await self._save(snapshot.key, fields, exclusive=bool(exclusive))

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
        return _snapshot(CheckpointKey(workflow_id, run_id, step), fields)

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

    async def fork(self, from_key: CheckpointKey, edits: Edits | None = None) -> str:
        _check_key(from_key)
        fields = encode_channels(normalise_edits(edits))
        fields += encode_meta(f"fork-of:{from_key.run_id}", now_ms())
        new_run_id = fork_run_id(from_key.run_id)
        await self._fork(from_key, new_run_id, fields)
        return new_run_id

    async def list_runs(
        self, workflow_id: str, *, limit: int = 100, after: str | None = None
    ) -> builtins.list[str]:
        check_id(workflow_id, "workflow_id")
        check_positive_int(limit, "limit")
        if after is not None and not isinstance(after, str):
            raise TypeError(f"after must be a run id (str), not {type(after).__name__}")
        return await self._list_runs(workflow_id, limit=limit, after=after)

    async def delete_run(self, workflow_id: str, run_id: str) -> bool:
        check_id(workflow_id, "workflow_id")
        check_id(run_id, "run_id")
        return await self._delete_run(workflow_id, run_id)

    @abstractmethod
    async def _save(self, key: CheckpointKey, fields: Fields, *, exclusive: bool) -> None:
        """Replace the snapshot at ``key``; if exclusive and taken, raise a conflict."""

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
    async def _fork(self, from_key: CheckpointKey, new_run_id: str, fields: Fields) -> None:
        """Copy ``from_key`` into ``new_run_id`` and set ``fields`` on the copy, atomically."""

    @abstractmethod
    async def _list_runs(
        self, workflow_id: str, *, limit: int, after: str | None
    ) -> builtins.list[str]:
        """Up to ``limit`` live run ids above ``after``, ascending."""

    @abstractmethod
    async def _delete_run(self, workflow_id: str, run_id: str) -> bool:
        """Remove every key of the run atomically; True when it had a snapshot."""


def _check_key(key: object) -> None:
    if not isinstance(key, CheckpointKey):
        raise TypeError(f"expected a CheckpointKey, not {type(key).__name__}")


def _snapshot(key: CheckpointKey, fields: Stored) -> Snapshot:
    values, label, timestamp_ms = decode_fields(fields.items())
    return Snapshot(key, values, label, timestamp_ms)
