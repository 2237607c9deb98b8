"""atomr-redis-state: channelled agent state with per-super-step checkpoints on Redis.

The Python port of the Rust crate ``atomr-agents-state``, in three layers:

- :mod:`.store`: the checkpoint store. Start with :class:`InMemoryCheckpointer` (the default) or
  :class:`RedisCheckpointer`; :class:`SqliteCheckpointer` and ``PostgresCheckpointer`` (the
  ``[postgres]`` extra, imported on first use) are the SQL stores; all implement
  :class:`Checkpointer`.
- :mod:`.graph`: channelled state, reducers, and :class:`StatefulRunner`, which runs a workflow
  super-step by super-step on any store.
- :mod:`.fleet`: work distribution for a fleet of workers: :class:`Fleet` submits runs to the
  store's ready queue, :class:`Worker` claims and runs them (the ``worker`` command).
- :mod:`.cli`: the ``atomr-redis-state`` command line and its demo.

Every error is in :mod:`.errors`; :mod:`.testing` starts throwaway Redis servers for your tests.
Every public name is importable from here.
"""

import logging
from typing import TYPE_CHECKING

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
    QueueUnsupportedError,
    RunCancelledError,
    RunNotFoundError,
    RunNotPausedError,
    SchemaVersionError,
    StepTimeoutError,
    StoreConfigurationError,
    StoreDiskFullError,
    StoreLockedError,
    StoreOutOfMemoryError,
    StorePermissionError,
    StoreUnavailableError,
    UnknownChannelError,
    ValueEncodingError,
    WorkerStopping,
    WorkflowChangedError,
    WorkflowGraphError,
)
from .fleet import Backoff, Fleet, Registry, Worker, Workflow
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
from .store.sql.sqlite import SqliteCheckpointer
from .store.types import Claim, Outcome, QueueDepth, QueueRecord, QueueState, WorkerInfo

if TYPE_CHECKING:
    from .store.sql.postgres import PostgresCheckpointer as PostgresCheckpointer

# The library logs (conflicts, retries, leases, pauses, failures) under "atomr_redis_state" and
# prints nothing unless the application configures logging.
logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> object:
    """``PostgresCheckpointer``, imported on first use: it needs the ``[postgres]`` extra."""
    if name == "PostgresCheckpointer":
        from .store.sql.postgres import PostgresCheckpointer as PostgresCheckpointer

        return PostgresCheckpointer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "JSON",
    "Answer",
    "AnswerRefusedError",
    "AppendList",
    "AppendMessages",
    "AtomrStateError",
    "Backoff",
    "BuiltinReducer",
    "Channel",
    "CheckpointConflictError",
    "CheckpointEvent",
    "CheckpointKey",
    "CheckpointMeta",
    "CheckpointNotFoundError",
    "Checkpointer",
    "Claim",
    "DurabilityError",
    "Edits",
    "EventKind",
    "Fleet",
    "Hold",
    "InMemoryCheckpointer",
    "Interrupt",
    "LastWriteWins",
    "Lease",
    "LeaseHeldError",
    "LeaseLostError",
    "MaxByTimestamp",
    "MergeMap",
    "Outcome",
    "Pause",
    "PauseKind",
    "QueueDepth",
    "QueueRecord",
    "QueueState",
    "QueueStateError",
    "QueueUnsupportedError",
    "RedisCheckpointer",
    "Reducer",
    "Registry",
    "RetryPolicy",
    "RunCancelledError",
    "RunNotFoundError",
    "RunNotPausedError",
    "RunOutcome",
    "RunRecord",
    "RunState",
    "RunStatus",
    "SchemaVersionError",
    "Snapshot",
    "SqliteCheckpointer",
    "StateSchema",
    "StateSchemaBuilder",
    "StatefulRunner",
    "Step",
    "StepContext",
    "StepFailure",
    "StepFn",
    "StepTimeoutError",
    "StoreConfigurationError",
    "StoreDiskFullError",
    "StoreLockedError",
    "StoreOutOfMemoryError",
    "StorePermissionError",
    "StoreUnavailableError",
    "UnknownChannelError",
    "ValueEncodingError",
    "Worker",
    "WorkerInfo",
    "WorkerStopping",
    "Workflow",
    "WorkflowChangedError",
    "WorkflowGraphError",
    "Writes",
    "new_run_id",
    "new_workflow_id",
]
