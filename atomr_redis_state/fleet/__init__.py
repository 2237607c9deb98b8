"""Work distribution for a fleet of workers: submit runs, claim them, run them, steer them.

- :class:`Workflow` (in :mod:`.workflow`): what a fleet runs, and its policy (attempts, backoff,
  fleet-wide cap); a :class:`Registry` of them is what the ``worker`` command loads.
- :class:`Fleet` (in :mod:`.client`): ``submit``, ``resume``, ``cancel``, ``requeue``,
  ``status``, ``depth`` from any process.
- :class:`Worker` (in :mod:`.worker`): claims runs from the store's ready queue and runs them,
  with heartbeats and graceful shutdown.

The queue itself is in the store (:meth:`~..store.checkpointer.Checkpointer.submit`, ``claim``,
``finish``...), on every backend; this package is the layer above it.
"""

from __future__ import annotations

from .client import Fleet
from .worker import DEFAULT_GRACE, DEFAULT_LEASE_TTL, Worker, WorkerStats
from .workflow import Backoff, Registry, Workflow, as_registry, load_target

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_LEASE_TTL",
    "Backoff",
    "Fleet",
    "Registry",
    "Worker",
    "WorkerStats",
    "Workflow",
    "as_registry",
    "load_target",
]
