"""The graph runner on top of the store: channelled state, reducers, steps and the runner.

:mod:`.schema` declares channels and holds a run's state, :mod:`.reducers` says how writes
combine, :mod:`.steps` is what a step is and how steps form layers, :mod:`.runner` runs them
super-step by super-step, and :mod:`.outcomes` is what it reports.
"""

from __future__ import annotations

from .outcomes import Pause, PauseKind, RunOutcome, RunStatus, StepFailure
from .reducers import (
    AppendList,
    AppendMessages,
    BuiltinReducer,
    LastWriteWins,
    MaxByTimestamp,
    MergeMap,
    Reducer,
)
from .runner import StatefulRunner
from .schema import Channel, RunState, StateSchema, StateSchemaBuilder
from .steps import RetryPolicy, Step, StepContext, StepFn, Writes

__all__ = [
    "AppendList",
    "AppendMessages",
    "BuiltinReducer",
    "Channel",
    "LastWriteWins",
    "MaxByTimestamp",
    "MergeMap",
    "Pause",
    "PauseKind",
    "Reducer",
    "RetryPolicy",
    "RunOutcome",
    "RunState",
    "RunStatus",
    "StateSchema",
    "StateSchemaBuilder",
    "StatefulRunner",
    "Step",
    "StepContext",
    "StepFailure",
    "StepFn",
    "Writes",
]
