"""The :class:`Checkpointer` protocol: what every checkpoint store does, on every backend."""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

from .model import CheckpointKey, CheckpointMeta, Snapshot

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
