"""Where stored runs stand, read from the store alone (no workflow definition needed), for the
command line and the run-status metrics; the rules are :func:`..graph.progress.run_status`."""

from __future__ import annotations

from typing import get_args

from ..graph.outcomes import RunStatus, RunStatusState
from ..graph.progress import run_status
from ..store.checkpointer import Checkpointer
from ..store.runs import all_runs, is_fork, lineage_forks

__all__ = ["STATES", "all_runs", "is_fork", "lineage_forks", "summarise_run"]

STATES: tuple[RunStatusState, ...] = get_args(RunStatusState)
"""Every state a run can be in, as :class:`RunStatus` reports it."""


async def summarise_run(store: Checkpointer, workflow_id: str, run_id: str) -> RunStatus:
    """The run's :class:`RunStatus`, as :meth:`StatefulRunner.status` reports it; a malformed
    runner record counts as none, so one odd run never stops a listing."""
    return await run_status(store, workflow_id, run_id, lenient=True)
