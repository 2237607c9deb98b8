"""Run and workflow ids: fresh ones, and the fork ids that keep a lineage together."""

from __future__ import annotations

import uuid

FORK_LABEL = "fork-of:"
"""The label ``fork`` gives the checkpoint it makes, followed by the source run id."""

FORK_MARKER = "~fork-"
"""Separates a fork's lineage root from its own suffix in the run ids :meth:`fork` makes."""


def new_run_id() -> str:
    """A fresh run id, ``run-<uuid4>``."""
    return f"run-{uuid.uuid4()}"


def new_workflow_id() -> str:
    """A fresh workflow id, ``wf-<uuid4>``."""
    return f"wf-{uuid.uuid4()}"


def lineage_root(run_id: str) -> str:
    """The run a run was (transitively) forked from: itself when it is no fork."""
    return run_id.partition(FORK_MARKER)[0]


def fork_run_id(source_run_id: str) -> str:
    """A new run id for a fork of ``source_run_id``, keeping its lineage root.

    Runs of one lineage share a Redis Cluster slot, which keeps ``fork`` one atomic script.
    """
    return f"{lineage_root(source_run_id)}{FORK_MARKER}{uuid.uuid4().hex}"
