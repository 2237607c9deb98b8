"""atomr-redis-state: channelled agent state with per-super-step checkpoints on Redis.

The Python port of the Rust crate ``atomr-agents-state``. Start with :class:`InMemoryCheckpointer`
(the default) or :class:`RedisCheckpointer`; both implement :class:`Checkpointer`.
"""

from .checkpointer import Checkpointer, Edits
from .errors import (
    AtomrStateError,
    CheckpointConflictError,
    CheckpointNotFoundError,
    ValueEncodingError,
)
from .memory import InMemoryCheckpointer
from .model import (
    JSON,
    CheckpointKey,
    CheckpointMeta,
    Snapshot,
    new_run_id,
    new_workflow_id,
)
from .redis_store import RedisCheckpointer

__all__ = [
    "JSON",
    "AtomrStateError",
    "CheckpointConflictError",
    "CheckpointKey",
    "CheckpointMeta",
    "CheckpointNotFoundError",
    "Checkpointer",
    "Edits",
    "InMemoryCheckpointer",
    "RedisCheckpointer",
    "Snapshot",
    "ValueEncodingError",
    "new_run_id",
    "new_workflow_id",
]
