"""Walking a workflow's runs with the protocol alone: every run, and a run's lineage."""

from __future__ import annotations

from collections.abc import AsyncIterator

from .checkpointer import Checkpointer
from .ids import FORK_MARKER, lineage_root


def is_fork(run_id: str) -> bool:
    """True for a run id that ``fork`` made (``<root>~fork-<suffix>``)."""
    return FORK_MARKER in run_id


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
