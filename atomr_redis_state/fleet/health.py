"""The liveness probe of a worker process (``atomr-redis-state worker --check``): whether this
host's worker has a live heartbeat in the store (see :meth:`~..store.checkpointer.Checkpointer.
workers`)."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from ..store.checkpointer import Checkpointer
from ..store.types import WorkerInfo, now_ms


@dataclass(frozen=True, slots=True)
class Liveness:
    """The answer of a liveness probe: ``alive``, why, and the heartbeats that matched."""

    alive: bool
    reason: str
    workers: list[WorkerInfo]


async def liveness(
    store: Checkpointer, *, worker_id: str | None = None, host: str | None = None
) -> Liveness:
    """Whether a worker of this host (``host``, default this machine's name: a Kubernetes pod's
    name), or the worker ``worker_id``, has a live heartbeat: it beat within its heartbeat's
    lifetime (three beats), so its event loop turns and it reaches the store."""
    host = socket.gethostname() if host is None else host
    mine = [
        worker
        for worker in await store.workers()
        if (worker.worker_id == worker_id if worker_id is not None else _host_of(worker) == host)
    ]
    who = f"worker {worker_id!r}" if worker_id is not None else f"a worker on host {host!r}"
    if not mine:
        return Liveness(False, f"no live heartbeat of {who}", [])
    now = now_ms()
    ages = ", ".join(f"{w.worker_id} {_age_s(w, now)}" for w in mine)
    return Liveness(True, f"{who} beat: {ages}", mine)


def _host_of(worker: WorkerInfo) -> object:
    return worker.info.get("host") if isinstance(worker.info, dict) else None


def _age_s(worker: WorkerInfo, now: int) -> str:
    beat_at = worker.info.get("beat_at_ms") if isinstance(worker.info, dict) else None
    return f"{max(0, now - beat_at) / 1000:.1f} s ago" if isinstance(beat_at, int) else "(age?)"
