"""atomr-redis-state: channelled agent state with per-super-step checkpoints on Redis.

The Python port of the Rust crate ``atomr-agents-state``, in three layers:

- :mod:`.store`: the checkpoint store. Start with :class:`InMemoryCheckpointer` (the default) or
  :class:`RedisCheckpointer`; both implement :class:`Checkpointer`.
- :mod:`.graph`: channelled state, reducers, and :class:`StatefulRunner`, which runs a workflow
  super-step by super-step on any store.
- :mod:`.cli`: the ``atomr-redis-state`` command line and its demo.

Every error is in :mod:`.errors`; :mod:`.testing` starts throwaway Redis servers for your tests.
Every public name is importable from here.
"""

import logging

from .errors import (
    AnswerRefusedError,
    AtomrStateError,
    CheckpointConflictError,
    CheckpointNotFoundError,
    DurabilityError,
    Interrupt,
    LeaseHeldError,
    LeaseLostError,
    QueueStateError,
    RunCancelledError,
    RunNotFoundError,
    RunNotPausedError,
    StepTimeoutError,
    StoreConfigurationError,
    StoreOutOfMemoryError,
    StorePermissionError,
    StoreUnavailableError,
    UnknownChannelError,
    ValueEncodingError,
    WorkflowChangedError,
    WorkflowGraphError,
)
from .graph import (
    AppendList,
    AppendMessages,
    BuiltinReducer,
    Channel,
    LastWriteWins,
    MaxByTimestamp,
    MergeMap,
    Pause,
    PauseKind,
    Reducer,
    RetryPolicy,
    RunOutcome,
    RunState,
    RunStatus,
    StatefulRunner,
    StateSchema,
    StateSchemaBuilder,
    Step,
    StepContext,
    StepFailure,
    StepFn,
    Writes,
)
from .store import (
    JSON,
    Answer,
    Checkpointer,
    CheckpointEvent,
    CheckpointKey,
    CheckpointMeta,
    Edits,
    EventKind,
    Hold,
    InMemoryCheckpointer,
    Lease,
    RunRecord,
    Snapshot,
    new_run_id,
    new_workflow_id,
)
from .store.redis import RedisCheckpointer

# The library logs (conflicts, retries, leases, pauses, failures) under "atomr_redis_state" and
# prints nothing unless the application configures logging.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "JSON",
    "Answer",
    "AnswerRefusedError",
    "AppendList",
    "AppendMessages",
    "AtomrStateError",
    "BuiltinReducer",
    "Channel",
    "CheckpointConflictError",
    "CheckpointEvent",
    "CheckpointKey",
    "CheckpointMeta",
    "CheckpointNotFoundError",
    "Checkpointer",
    "DurabilityError",
    "Edits",
    "EventKind",
    "Hold",
    "InMemoryCheckpointer",
    "Interrupt",
    "LastWriteWins",
    "Lease",
    "LeaseHeldError",
    "LeaseLostError",
    "MaxByTimestamp",
    "MergeMap",
    "Pause",
    "PauseKind",
    "QueueStateError",
    "RedisCheckpointer",
    "Reducer",
    "RetryPolicy",
    "RunCancelledError",
    "RunNotFoundError",
    "RunNotPausedError",
    "RunOutcome",
    "RunRecord",
    "RunState",
    "RunStatus",
    "Snapshot",
    "StateSchema",
    "StateSchemaBuilder",
    "StatefulRunner",
    "Step",
    "StepContext",
    "StepFailure",
    "StepFn",
    "StepTimeoutError",
    "StoreConfigurationError",
    "StoreOutOfMemoryError",
    "StorePermissionError",
    "StoreUnavailableError",
    "UnknownChannelError",
    "ValueEncodingError",
    "WorkflowChangedError",
    "WorkflowGraphError",
    "Writes",
    "new_run_id",
    "new_workflow_id",
]
