"""Where stored runs stand, read from the store alone (no workflow definition needed), for the
command line and the run-status metrics; the rules are :func:`..graph.progress.run_status`."""

from __future__ import annotations

from collections.abc import AsyncIterator

from ..graph.outcomes import RunStatus, RunStatusState
from ..graph.progress import run_status
from ..store.checkpointer import Checkpointer
from ..store.ids import FORK_MARKER, lineage_root

STATES: tuple[RunStatusState, ...] = (
    "queued",
    "running",
    "paused",
    "completed",
    "failed",
    "blocked",
    "cancelled",
    "not_found",
)
"""Every state a run can be in, as :class:`RunStatus` reports it."""


def is_fork(run_id: str) -> bool:
    """True for a run id that ``fork`` made (``<root>~fork-<suffix>``)."""
    return FORK_MARKER in run_id


async def summarise_run(store: Checkpointer, workflow_id: str, run_id: str) -> RunStatus:
    """The run's :class:`RunStatus`, as :meth:`StatefulRunner.status` reports it; a malformed
    runner record counts as none, so one odd run never stops a listing."""
    return await run_status(store, workflow_id, run_id, lenient=True)


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
