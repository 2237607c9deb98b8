"""What the inspector's API answers: store reads put together for one page each.

The JSON shapes of runs, checkpoints, snapshots, diffs, fork trees and events come from the
shared view layer; this module only gathers what a page needs in one request (a page of runs
with their statuses, a run with its lineage) and pages big values (see :mod:`.tree`).
"""

from __future__ import annotations

import io
from collections.abc import Awaitable, Callable, Mapping, Sequence

import orjson

from .. import views
from ..errors import RunNotFoundError, RunNotPausedError
from ..graph.outcomes import RunStatus
from ..observability.runs import all_runs, is_fork, lineage_forks, summarise_run
from ..store.checkpointer import Checkpointer
from ..store.types import JSON
from ..views.documents import gather_limited
from . import tree

FORMAT_VERSION = views.FORMAT_VERSION
"""The version of the documents (the views' ``format_version``)."""

SCAN_LIMIT = 2_000
"""Runs a filtered listing looks at per request before it hands back a cursor."""

COUNT_LIMIT = 10_000
"""Runs the live counts look at; a bigger workflow's counts say they are partial."""

LINEAGE_LIMIT = 500
"""Runs of one lineage drawn in a fork tree."""

Resume = Callable[[Checkpointer, str, str, JSON], Awaitable[object]]
"""Answers a paused run: ``resume(store, workflow_id, run_id, value)`` continues it (or records
the answer for a worker to continue it)."""


async def _statuses(
    store: Checkpointer, workflow_id: str, run_ids: Sequence[str]
) -> list[RunStatus]:
    """The status of each run, a few at a time, in order."""
    found: list[RunStatus] = await gather_limited(
        lambda run_id: summarise_run(store, workflow_id, run_id), run_ids
    )
    return found


async def runs_page(
    store: Checkpointer,
    workflow_id: str,
    *,
    states: Sequence[str],
    query: str,
    after: str | None,
    limit: int,
) -> JSON:
    """Runs in id order from ``after``, with their statuses, keeping those in ``states`` whose
    id contains ``query``; ``next_after`` continues (also when a filter scanned its limit)."""
    filtered = bool(states or query)
    found: list[JSON] = []
    scanned = 0
    cursor = after
    more = True
    while len(found) < limit and scanned < SCAN_LIMIT:
        want = 200 if filtered else limit - len(found)
        page = await store.list_runs(workflow_id, limit=want, after=cursor)
        scanned += len(page)
        wanted = [r for r in page if query.lower() in r.lower()]
        statuses = dict(
            zip(
                wanted,
                await _statuses(store, workflow_id, wanted),
                strict=True,
            )
        )
        for run_id in page:
            cursor = run_id
            status = statuses.get(run_id)
            if status is not None and (not states or status.state in states):
                found.append(views.run_json(status))
                if len(found) >= limit:
                    break
        if len(page) < want and (not page or cursor == page[-1]):
            more = False
            break
    if more and cursor is not None:
        more = bool(await store.list_runs(workflow_id, limit=1, after=cursor))
    return {
        "format_version": FORMAT_VERSION,
        "workflow_id": workflow_id,
        "runs": found,
        "next_after": cursor if more else None,
        "scanned": scanned,
    }


async def counts(store: Checkpointer, workflow_id: str) -> JSON:
    """How many runs of the workflow are in each state (the first :data:`COUNT_LIMIT`)."""
    run_ids: list[str] = []
    async for run_id in all_runs(store, workflow_id):
        run_ids.append(run_id)
        if len(run_ids) > COUNT_LIMIT:
            break
    partial = len(run_ids) > COUNT_LIMIT
    statuses = await _statuses(store, workflow_id, run_ids[:COUNT_LIMIT])
    by_state: dict[str, int] = {}
    forks = 0
    for status in statuses:
        by_state[status.state] = by_state.get(status.state, 0) + 1
        forks += is_fork(status.run_id)
    return {
        "format_version": FORMAT_VERSION,
        "workflow_id": workflow_id,
        "total": len(statuses),
        "states": dict(by_state),
        "forks": forks,
        "partial": partial,
    }


async def history(
    store: Checkpointer,
    workflow_id: str,
    run_id: str,
    *,
    before: int | None,
    limit: int | None,
    steps: bool = True,
) -> JSON:
    """The run's timeline: :func:`views.history_view` (``steps=False``: without the steps each
    layer ran, which reads every checkpoint of the page; labels and times are one read)."""
    return await views.history_view(
        store, workflow_id, run_id, limit=limit, before=before, steps=steps
    )


async def state(
    store: Checkpointer,
    workflow_id: str,
    run_id: str,
    step: int | None,
    *,
    part: str,
    path: Sequence[str | int],
    offset: int,
    full: bool,
) -> JSON:
    """The snapshot document without its values, and its channels (``part="values"``) or
    metadata as a tree node at ``path`` (see :mod:`.tree`): megabytes never go out whole."""
    if part not in ("values", "metadata"):
        raise ValueError("part must be 'values' or 'metadata'")
    snapshot = await views.load_snapshot(store, workflow_id, run_id, step)
    document = views.snapshot_json(snapshot)
    root: JSON = document.pop(part)
    document.pop("metadata" if part == "values" else "values")
    document["path"] = list(path)
    document["node"] = tree.node(tree.resolve(root, path), offset=offset, full=full)
    return document


async def lineage(store: Checkpointer, workflow_id: str, run_id: str) -> JSON:
    """The fork tree (:func:`views.fork_tree_view`) with each live run's badge."""
    found = await views.fork_tree_view(store, workflow_id, run_id)
    members = [node["run_id"] for node in found["nodes"] if node["exists"]][:LINEAGE_LIMIT]
    statuses = await _statuses(store, workflow_id, members)
    found["states"] = {status.run_id: views.badge(status.state) for status in statuses}
    return found


async def export_lines(
    store: Checkpointer, workflow_id: str, run_id: str, *, forks: bool
) -> list[bytes]:
    """The run (and with ``forks`` its lineage) in the ``export`` command's JSON Lines."""
    from ..cli.transfer import HEADER, _export_run

    if not await store.list(workflow_id, run_id, limit=1):
        raise RunNotFoundError(workflow_id, run_id)
    run_ids = [run_id]
    if forks:
        run_ids = sorted({run_id, *await lineage_forks(store, workflow_id, run_id)})
    sink = io.BytesIO()
    sink.write(orjson.dumps(HEADER) + b"\n")
    for member in run_ids:
        await _export_run(store, workflow_id, member, sink)
    return [sink.getvalue()]


async def answer(
    store: Checkpointer, resume: Resume, workflow_id: str, run_id: str, value: JSON
) -> JSON:
    """Answer the run's pause with ``value`` through ``resume``; the run's status after."""
    status = await summarise_run(store, workflow_id, run_id)
    if status.state == "not_found":
        raise RunNotFoundError(workflow_id, run_id)
    if status.pause is None:
        raise RunNotPausedError(f"run {run_id!r} of workflow {workflow_id!r} is not paused")
    await resume(store, workflow_id, run_id, value)
    return await views.run_view(store, workflow_id, run_id)


async def fork(
    store: Checkpointer, workflow_id: str, run_id: str, step: int, edits: Mapping[str, JSON]
) -> JSON:
    """Fork ``step`` of the run with ``edits`` to channels the checkpoint has."""
    source = await views.load_snapshot(store, workflow_id, run_id, step)
    views.check_fork_edits(source, edits)
    new_run = await store.fork(source.key, dict(edits))
    return await views.run_view(store, workflow_id, new_run)
