"""The exceptions of atomr-redis-state: every one derives from :class:`AtomrStateError`."""

from __future__ import annotations


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
