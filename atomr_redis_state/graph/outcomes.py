"""What the runner reports: where a run stands, why it waits, and what failed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..store.types import JSON, Lease, QueueRecord

PauseKind = Literal["before", "inside", "after"]
"""``before``/``after``: an ``interrupt_before``/``interrupt_after`` step; ``inside``: the step
itself paused (``ctx.interrupt()`` or :class:`~atomr_redis_state.errors.Interrupt`)."""

KINDS: tuple[PauseKind, ...] = ("before", "inside", "after")

RunStatusState = Literal[
    "not_found",
    "queued",
    "running",
    "stalled",
    "forked",
    "idle",
    "paused",
    "completed",
    "failed",
    "blocked",
    "cancelled",
]
"""Where a run stands: ``running`` while a worker holds its lease; ``stalled`` when the runner
was mid-way and nobody holds it (its worker died or stopped: ``run()`` takes it over);
``forked`` for a fork nobody has run yet; ``idle`` for a run whose latest checkpoint was written
with plain ``save`` (no runner record) and that nobody holds; ``paused``, ``completed``,
``failed``; ``cancelled`` for a run someone asked to cancel (``cancel``) that nobody
holds any more; ``not_found`` when it has no checkpoint. A run submitted to the fleet's queue
can also be ``queued`` (waiting for a worker, maybe until a retry's time), ``blocked`` (the
workflow changed under it) or ``cancelled``; its ``failed`` is a dead letter, out of attempts
(see :attr:`RunStatus.queue`)."""


@dataclass(frozen=True, slots=True)
class Pause:
    """Where a run paused: at ``step`` of ``layer``, and why, with the step's ``payload``."""

    step: str
    kind: PauseKind
    payload: JSON
    layer: int


@dataclass(frozen=True, slots=True)
class StepFailure:
    """A step that failed its last attempt, failing its layer (the run can be retried)."""

    step: str
    error_type: str
    """The exception's class name."""
    message: str
    super_step: int
    """The checkpoint the failed layer started from."""
    attempts: int
    """How many attempts the step has had, over every retry of the layer."""
    at_ms: int


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What ``start()``, ``run()`` and ``resume()`` return: the state, and any pause."""

    state: dict[str, JSON]
    """The user's channels at the run's latest checkpoint."""
    super_step: int
    """The super-step of that checkpoint."""
    pause: Pause | None = None
    """Why and where the run waits; None once it has completed."""

    @property
    def completed(self) -> bool:
        return self.pause is None

    @property
    def paused(self) -> bool:
        return self.pause is not None


@dataclass(frozen=True, slots=True)
class RunStatus:
    """Where a run stands, read from the store (see :meth:`StatefulRunner.status`)."""

    workflow_id: str
    run_id: str
    state: RunStatusState
    super_step: int | None = None
    """The run's latest checkpoint; None when it has none."""
    label: str | None = None
    """That checkpoint's label."""
    updated_at_ms: int | None = None
    """When that checkpoint was saved."""
    pause: Pause | None = None
    """Why and where a paused run waits."""
    lease: Lease | None = None
    """The worker holding the run right now (owner, expiry on the store's clock), if any."""
    last_error: StepFailure | None = None
    """The failure that stopped the run at its latest checkpoint, if any."""
    queue: QueueRecord | None = None
    """The run's place in the fleet's queue (state, attempts, the reason it failed or was
    blocked, when it is ready); None for a run never submitted to it."""
