"""What the runner reports: where a run stands, and why it waits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..store.types import JSON

PauseKind = Literal["before", "interrupt", "after"]
"""``before``/``after``: an ``interrupt_before``/``interrupt_after`` step; ``interrupt``: the
step itself raised :class:`~.steps.Interrupt`."""

KINDS: tuple[PauseKind, ...] = ("before", "interrupt", "after")


@dataclass(frozen=True, slots=True)
class Pause:
    """Where a run paused: at ``step`` of ``layer``, and why, with the step's ``payload``."""

    step: str
    kind: PauseKind
    payload: JSON
    layer: int


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What ``run()`` and ``resume()`` return: the state, and the pause if the run is paused."""

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
