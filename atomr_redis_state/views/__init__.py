"""The operator views: what the command line's ``--json`` prints and the web inspector shows.

Each ``*_view`` is an async function that reads a :class:`~..store.checkpointer.Checkpointer`
and returns a JSON document (a plain dict) with ``format_version`` and ``kind``. This package
imports no click, rich or web framework, so any front end can reuse it.
"""

from __future__ import annotations

from ..store.ids import FORK_LABEL
from .diff import Change, diff_channels, diff_values, format_path, string_diff
from .documents import (
    BADGE_TONES,
    FORMAT_VERSION,
    Document,
    badge,
    check_fork_edits,
    diff_json,
    diff_view,
    event_json,
    fork_source,
    fork_tree_view,
    forks_by_step,
    history_view,
    load_snapshot,
    run_json,
    run_view,
    runs_view,
    snapshot_json,
    snapshot_view,
    status_detail,
    workflows_view,
)
from .text import escape_json, escape_text

__all__ = [
    "BADGE_TONES",
    "FORK_LABEL",
    "FORMAT_VERSION",
    "Change",
    "Document",
    "badge",
    "check_fork_edits",
    "diff_channels",
    "diff_json",
    "diff_values",
    "diff_view",
    "escape_json",
    "escape_text",
    "event_json",
    "fork_source",
    "fork_tree_view",
    "forks_by_step",
    "format_path",
    "history_view",
    "load_snapshot",
    "run_json",
    "run_view",
    "runs_view",
    "snapshot_json",
    "snapshot_view",
    "status_detail",
    "string_diff",
    "workflows_view",
]
