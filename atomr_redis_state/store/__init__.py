"""The checkpoint store: per-super-step snapshots of agent runs, in memory or on Redis.

:class:`Checkpointer` is the protocol every store implements; :class:`InMemoryCheckpointer` is the
default and :class:`~.redis.RedisCheckpointer` the product (in :mod:`.redis`, so that importing
this package does not import redis-py).
"""

from __future__ import annotations

from .checkpointer import BaseCheckpointer, Checkpointer, Edits, Hold
from .ids import new_run_id, new_workflow_id
from .memory import InMemoryCheckpointer
from .types import (
    JSON,
    Answer,
    CheckpointEvent,
    CheckpointKey,
    CheckpointMeta,
    EventKind,
    Lease,
    RunRecord,
    Snapshot,
)

__all__ = [
    "JSON",
    "Answer",
    "BaseCheckpointer",
    "CheckpointEvent",
    "CheckpointKey",
    "CheckpointMeta",
    "Checkpointer",
    "Edits",
    "EventKind",
    "Hold",
    "InMemoryCheckpointer",
    "Lease",
    "RunRecord",
    "Snapshot",
    "new_run_id",
    "new_workflow_id",
]
