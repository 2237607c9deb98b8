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
from .progress import Pause, PauseKind, RunOutcome
from .redis_store import RedisCheckpointer
from .reducers import (
    AppendList,
    AppendMessages,
    BuiltinReducer,
    LastWriteWins,
    MaxByTimestamp,
    MergeMap,
    Reducer,
)
from .runner import RunNotPausedError, StatefulRunner
from .state import Channel, RunState, StateSchema, StateSchemaBuilder, UnknownChannelError
from .steps import Interrupt, Step, StepContext, StepFn, WorkflowGraphError, Writes

__all__ = [
    "JSON",
    "AppendList",
    "AppendMessages",
    "AtomrStateError",
    "BuiltinReducer",
    "Channel",
    "CheckpointConflictError",
    "CheckpointKey",
    "CheckpointMeta",
    "CheckpointNotFoundError",
    "Checkpointer",
    "Edits",
    "InMemoryCheckpointer",
    "Interrupt",
    "LastWriteWins",
    "MaxByTimestamp",
    "MergeMap",
    "Pause",
    "PauseKind",
    "RedisCheckpointer",
    "Reducer",
    "RunNotPausedError",
    "RunOutcome",
    "RunState",
    "Snapshot",
    "StateSchema",
    "StateSchemaBuilder",
    "StatefulRunner",
    "Step",
    "StepContext",
    "StepFn",
    "UnknownChannelError",
    "ValueEncodingError",
    "WorkflowGraphError",
    "Writes",
    "new_run_id",
    "new_workflow_id",
]
