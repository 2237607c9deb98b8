"""What a runner calls to be traced: the hooks :class:`~.otel.RunnerTelemetry` implements.

This module imports no OpenTelemetry, so the runner can name the type without the extra.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..graph.steps import StepContext


class RunnerHooks(Protocol):
    """Context managers a runner enters around each layer and each step attempt."""

    def layer(
        self, workflow_id: str, run_id: str, index: int, steps: Sequence[str], super_step: int
    ) -> AbstractContextManager[object]:
        """Around one layer: its steps (run concurrently inside it) and its checkpoint save.

        ``steps`` are the names of the layer's steps, ``super_step`` the checkpoint it starts
        from.
        """
        ...

    def step(self, context: StepContext) -> AbstractContextManager[object]:
        """Around one attempt of a step (``context.attempt`` counts from 1)."""
        ...
