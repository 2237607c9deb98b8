"""Where stored runs stand, read from the store alone (no workflow definition needed).

The same rules as :meth:`StatefulRunner.status`, from the runner's record in each checkpoint's
metadata and the failure note in the run's record; used by the command line and by the
run-status metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ..errors import AtomrStateError
from ..graph.outcomes import RunStatus, RunStatusState
from ..graph.progress import FailureNote, Progress
from ..store.checkpointer import Checkpointer
from ..store.ids import FORK_MARKER, lineage_root

STATES: tuple[RunStatusState, ...] = ("running", "paused", "completed", "failed", "not_found")
"""Every state a run can be in, as :class:`RunStatus` reports it."""


def is_fork(run_id: str) -> bool:
    """True for a run id that ``fork`` made (``<root>~fork-<suffix>``)."""
    return FORK_MARKER in run_id


async def summarise_run(store: Checkpointer, workflow_id: str, run_id: str) -> RunStatus:
    """The run's :class:`RunStatus`: latest checkpoint, pause, lease and last failure.

    A run whose checkpoints were not saved by the runner (no record in their metadata) is
    ``running`` unless it has a failure note, as the runner itself would report it.
    """
    snapshot, record = await asyncio.gather(
        store.latest(workflow_id, run_id), store.run_record(workflow_id, run_id)
    )
    if snapshot is None:
        return RunStatus(workflow_id, run_id, "not_found", lease=record.lease)
    step = snapshot.key.super_step
    try:
        progress = Progress.decode(snapshot.metadata, step)
    except AtomrStateError:
        progress = None
    note = FailureNote.decode(record.note)
    error = note.failure if note is not None and note.failure.super_step == step else None
    pause = None if progress is None else progress.pause
    state: RunStatusState
    if pause is not None:
        state = "paused"
    elif error is not None and record.lease is None:
        state = "failed"
    elif progress is not None and progress.status == "completed":
        state = "completed"
    else:
        state = "running"
    return RunStatus(
        workflow_id,
        run_id,
        state,
        step,
        snapshot.label,
        snapshot.timestamp_ms,
        pause,
        record.lease,
        error,
    )


async def all_runs(
    store: Checkpointer, workflow_id: str, *, after: str | None = None, page: int = 500
) -> AsyncIterator[str]:
    """Every run id of the workflow above ``after``, ascending, paging with ``list_runs``."""
    while True:
        runs = await store.list_runs(workflow_id, limit=page, after=after)
        for run_id in runs:
            yield run_id
        if len(runs) < page:
            return
        after = runs[-1]


async def lineage_forks(store: Checkpointer, workflow_id: str, run_id: str) -> list[str]:
    """The other live runs of ``run_id``'s lineage: its forks, forks of forks, its source.

    Fork ids share their root's prefix (``<root>~fork-``), so they are one contiguous range
    of ``list_runs``; this reads only that range.
    """
    prefix = lineage_root(run_id) + FORK_MARKER
    found: list[str] = []
    async for other in all_runs(store, workflow_id, after=prefix, page=100):
        if not other.startswith(prefix):
            break
        if other != run_id:
            found.append(other)
    root = lineage_root(run_id)
    if root != run_id and await store.list(workflow_id, root, limit=1):
        found.insert(0, root)
    return found
