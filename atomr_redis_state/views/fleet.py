"""The fleet's views: its live workers and the runs they hold (``kind: workers``), and the depth
of each workflow's ready queue (``kind: queues``).

Read from heartbeats and queue counters only (:meth:`~..store.checkpointer.Checkpointer.workers`
and ``queue_depth``): no view here reads a run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from ..store.checkpointer import Checkpointer
from ..store.types import WorkerInfo, now_ms
from .documents import FORMAT_VERSION, Document

QUEUE_PARTS = ("ready", "delayed", "running", "paused", "failed", "blocked")
"""The parts of a workflow's queue, in the order they are shown."""


def worker_json(worker: WorkerInfo, now: int) -> dict[str, Any]:
    """One live worker: its id, what its last heartbeat said, and how fresh that is."""
    info = worker.info if isinstance(worker.info, dict) else {}
    beat_at = info.get("beat_at_ms")
    runs = info.get("runs")
    return {
        "worker_id": worker.worker_id,
        "host": info.get("host"),
        "pid": info.get("pid"),
        "workflows": info.get("workflows", []),
        "concurrency": info.get("concurrency"),
        "stopping": bool(info.get("stopping", False)),
        "runs": runs if isinstance(runs, list) else [],
        "started_at_ms": info.get("started_at_ms"),
        "heartbeat_at_ms": beat_at,
        "heartbeat_age_s": None if not isinstance(beat_at, int) else max(0, now - beat_at) / 1000,
        "expires_at_ms": worker.expires_at_ms,
    }


async def workers_view(store: Checkpointer) -> Document:
    """Every live worker (a heartbeat that has not expired), by worker id."""
    workers = await store.workers()
    now = now_ms()
    return {
        "format_version": FORMAT_VERSION,
        "kind": "workers",
        "workers": [worker_json(worker, now) for worker in workers],
    }


async def known_workflows(store: Checkpointer) -> list[str]:
    """The workflows with live runs, and those the live workers say they run."""
    found: set[str] = set()
    page = await store.list_workflows(limit=1000)
    while page:
        found.update(page)
        page = await store.list_workflows(limit=1000, after=page[-1])
    for worker in await store.workers():
        workflows = worker.info.get("workflows") if isinstance(worker.info, dict) else None
        if isinstance(workflows, list):
            found.update(w for w in workflows if isinstance(w, str))
    return sorted(found)


async def queue_view(store: Checkpointer, workflow_ids: Sequence[str] = ()) -> Document:
    """How many runs of each workflow are in each of :data:`QUEUE_PARTS` (every known
    workflow's, see :func:`known_workflows`, when none is named)."""
    names = list(workflow_ids) or await known_workflows(store)
    rows = []
    for workflow_id in names:
        depth = asdict(await store.queue_depth(workflow_id))
        rows.append({"workflow_id": workflow_id, **{part: depth[part] for part in QUEUE_PARTS}})
    return {"format_version": FORMAT_VERSION, "kind": "queues", "queues": rows}
