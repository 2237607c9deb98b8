"""What an operator asks of a fleet, as JSON documents: its live workers and the runs they hold,
the depth of each workflow's ready queue, and whether this host's worker is alive.

Read from the store only (heartbeats and queue counters, see :meth:`~..store.checkpointer.
Checkpointer.workers` and ``queue_depth``): no document reads a run. The command line prints them
(``workers``, ``queue``, ``worker --check``), as tables or with ``--json`` as they are here.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ..store.checkpointer import Checkpointer
from ..store.types import WorkerInfo, now_ms

QUEUE_PARTS = ("ready", "delayed", "running", "paused", "failed", "blocked")
"""The parts of a workflow's queue, in the order they are shown."""


def worker_document(worker: WorkerInfo, now: int) -> dict[str, Any]:
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


async def workers_document(store: Checkpointer) -> dict[str, Any]:
    """Every live worker (a heartbeat that has not expired), by worker id."""
    workers = await store.workers()
    now = now_ms()
    return {"workers": [worker_document(worker, now) for worker in workers]}


async def served_workflows(store: Checkpointer) -> list[str]:
    """The workflows the live workers say they run."""
    found: set[str] = set()
    for worker in await store.workers():
        info = worker.info if isinstance(worker.info, dict) else {}
        workflows = info.get("workflows")
        if isinstance(workflows, list):
            found.update(w for w in workflows if isinstance(w, str))
    return sorted(found)


async def queue_document(store: Checkpointer, workflow_ids: Sequence[str]) -> dict[str, Any]:
    """The depth of each workflow's queue: how many runs are in each of :data:`QUEUE_PARTS`."""
    rows = []
    for workflow_id in workflow_ids:
        depth = asdict(await store.queue_depth(workflow_id))
        rows.append({"workflow_id": workflow_id, **{part: depth[part] for part in QUEUE_PARTS}})
    return {"queues": rows}


@dataclass(frozen=True, slots=True)
class Liveness:
    """The answer of a liveness probe: ``alive``, and which heartbeats it looked at."""

    alive: bool
    reason: str
    workers: list[dict[str, Any]]


async def liveness(
    store: Checkpointer, *, worker_id: str | None = None, host: str | None = None
) -> Liveness:
    """Whether a worker of this host (``host``, default this machine's name: a Kubernetes pod's
    name), or the worker ``worker_id``, has a live heartbeat: it beat within its heartbeat's
    lifetime (three beats), so its event loop turns and it reaches the store."""
    host = socket.gethostname() if host is None else host
    now = now_ms()
    mine = [
        worker_document(worker, now)
        for worker in await store.workers()
        if (worker.worker_id == worker_id if worker_id is not None else _host_of(worker) == host)
    ]
    who = f"worker {worker_id!r}" if worker_id is not None else f"a worker on host {host!r}"
    if not mine:
        return Liveness(False, f"no live heartbeat of {who}", [])
    ages = ", ".join(f"{w['worker_id']} {w['heartbeat_age_s']} s ago" for w in mine)
    return Liveness(True, f"{who} beat: {ages}", mine)


def _host_of(worker: WorkerInfo) -> object:
    return worker.info.get("host") if isinstance(worker.info, dict) else None
