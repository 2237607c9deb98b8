"""The exceptions of atomr-redis-state: every one derives from :class:`AtomrStateError`."""

from __future__ import annotations

from collections.abc import Iterable


class AtomrStateError(Exception):
    """Base class of every error this library raises on purpose."""


class CheckpointNotFoundError(AtomrStateError, LookupError):
    """A checkpoint that an operation needs does not exist (for example the source of a fork)."""

    def __init__(self, workflow_id: str, run_id: str, super_step: int) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.super_step = super_step
        super().__init__(
            f"no checkpoint for workflow {workflow_id!r}, run {run_id!r} at super-step {super_step}"
        )


class CheckpointConflictError(AtomrStateError):
    """An exclusive save found the super-step already checkpointed; nothing was written."""

    def __init__(self, workflow_id: str, run_id: str, super_step: int) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.super_step = super_step
        super().__init__(
            f"super-step {super_step} of workflow {workflow_id!r}, run {run_id!r} "
            "is already checkpointed"
        )


class ValueEncodingError(AtomrStateError, ValueError):
    """A channel value (or channel name) is not strict JSON and cannot be stored."""


class UnknownChannelError(AtomrStateError, KeyError):
    """A write named a channel that the schema does not declare; nothing was written."""

    def __init__(self, key: object, known: Iterable[str]) -> None:
        self.key = key
        names = ", ".join(repr(name) for name in known) or "none"
        super().__init__(f"unknown channel {key!r} (the schema declares: {names})")

    def __str__(self) -> str:
        return str(self.args[0])


class WorkflowGraphError(AtomrStateError, ValueError):
    """The steps do not form a valid DAG: a cycle, an unknown dependency, or a duplicate name."""


class RunNotPausedError(AtomrStateError):
    """``resume()`` found the run not paused (finished, or mid-way)."""


class Interrupt(Exception):
    """Raised by a step to pause the run for a human; ``payload`` says what it needs.

    :meth:`~atomr_redis_state.graph.steps.StepContext.interrupt` raises it unless the step is
    being resumed. It is the one exception here that is not an error: the runner catches it.
    """

    def __init__(self, payload: object = None) -> None:
        self.payload = payload
        super().__init__(payload)
