"""What a fleet runs: :class:`Workflow` definitions, gathered in a :class:`Registry`.

A workflow is what a runner needs (its id, steps, schema and options) plus how the fleet treats
its runs: how many failed attempts a run gets before it is a dead letter, the backoff between
them, and how many of its runs may be in flight across the whole fleet. A worker builds a
:class:`~..graph.runner.StatefulRunner` per claimed run from it.

The ``worker`` command loads a registry from ``package.module:attribute`` (:func:`load_target`),
as arq and saq load their settings: the attribute is a :class:`Registry`, a :class:`Workflow`, a
list of workflows, or a function (sync or async, no arguments) returning one of those.
"""

from __future__ import annotations

import importlib
import inspect
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from ..graph.runner import StatefulRunner
from ..graph.schema import StateSchema
from ..graph.steps import RetryPolicy, Step, Writes
from ..store.checkpointer import Checkpointer
from ..store.types import Snapshot
from ..store.validation import check_id, check_positive_int, duration_to_ms

if TYPE_CHECKING:
    from ..observability.hooks import RunnerHooks


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long a failed run waits before its next attempt: exponential, with jitter.

    The n-th failure waits between half and all of ``min(cap, base * 2 ** (n - 1))`` seconds
    ("equal jitter"): failures of many runs at once spread out instead of retrying together,
    and no run retries sooner than half its step.
    """

    base: float = 1.0
    cap: float = 300.0

    def __post_init__(self) -> None:
        for name in ("base", "cap"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"backoff {name} must be seconds, not {type(value).__name__}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"backoff {name} must be a positive number of seconds")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure (1 for the first)."""
        ceiling = float(min(self.cap, self.base * 2 ** min(max(failures, 1) - 1, 60)))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass(frozen=True, slots=True)
class Workflow:
    """A workflow a fleet runs: the runner's definition and the fleet's policy for it.

    ``id``, ``steps``, ``schema``, ``interrupt_before``, ``interrupt_after``, ``retry``
    (per-step retries within one attempt) and ``pause_ttl`` are the runner's (see
    :class:`~..graph.runner.StatefulRunner`). ``max_attempts`` is how many attempts a run gets
    across the fleet before it is ``failed`` for good (a dead letter); ``backoff`` spaces them;
    ``max_in_flight`` caps how many of its runs the whole fleet runs at once (None: no cap).
    """

    id: str
    steps: Sequence[Step]
    schema: StateSchema
    interrupt_before: frozenset[str] = frozenset()
    interrupt_after: frozenset[str] = frozenset()
    retry: RetryPolicy | None = None
    pause_ttl: float | timedelta | None = None
    max_attempts: int = 5
    backoff: Backoff = field(default_factory=Backoff)
    max_in_flight: int | None = None

    def __post_init__(self) -> None:
        check_id(self.id, "workflow id")
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "interrupt_before", frozenset(self.interrupt_before))
        object.__setattr__(self, "interrupt_after", frozenset(self.interrupt_after))
        check_positive_int(self.max_attempts, "max_attempts")
        if self.max_in_flight is not None:
            check_positive_int(self.max_in_flight, "max_in_flight")
        if not isinstance(self.backoff, Backoff):
            raise TypeError(f"backoff must be a Backoff, not {type(self.backoff).__name__}")
        if self.pause_ttl is not None:
            duration_to_ms(self.pause_ttl, "pause_ttl")
        self.runner(_NoStore(), "check")  # the steps form a DAG, the options name real steps

    def runner(
        self,
        checkpointer: Checkpointer | Any,
        run_id: str,
        *,
        owner: str | None = None,
        lease_ttl: float | timedelta = 30.0,
        on_checkpoint: Callable[[Snapshot], object] | None = None,
        telemetry: RunnerHooks | None = None,
    ) -> StatefulRunner:
        """A runner for one run of this workflow."""
        return StatefulRunner(
            self.id,
            run_id,
            self.steps,
            self.schema,
            checkpointer,
            interrupt_before=self.interrupt_before,
            interrupt_after=self.interrupt_after,
            on_checkpoint=on_checkpoint,
            owner=owner,
            lease_ttl=lease_ttl,
            pause_ttl=self.pause_ttl,
            retry=self.retry,
            telemetry=telemetry,
        )

    def initial_snapshot(self, run_id: str, input: Writes = None) -> Snapshot:
        """A run's super-step 0 with ``input`` written through the reducers (what ``submit``
        stores and ``StatefulRunner.start`` would save)."""
        return self.runner(_NoStore(), run_id).initial_snapshot(input)


class _NoStore:
    """A stand-in store for runners built only to check a definition or make a snapshot."""


class Registry(Mapping[str, Workflow]):
    """The workflows a worker runs (and a client submits to), by id."""

    def __init__(self, workflows: Iterable[Workflow] = ()) -> None:
        self._workflows: dict[str, Workflow] = {}
        for workflow in workflows:
            self.add(workflow)

    def add(self, workflow: Workflow) -> Workflow:
        """Register ``workflow`` (usable as a decorator-free one-liner); returns it."""
        if not isinstance(workflow, Workflow):
            raise TypeError(f"a registry holds Workflow objects, not {type(workflow).__name__}")
        if workflow.id in self._workflows:
            raise ValueError(f"workflow {workflow.id!r} is registered twice")
        self._workflows[workflow.id] = workflow
        return workflow

    def __getitem__(self, workflow_id: str) -> Workflow:
        try:
            return self._workflows[workflow_id]
        except KeyError:
            raise KeyError(f"no workflow {workflow_id!r} is registered") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._workflows)

    def __len__(self) -> int:
        return len(self._workflows)

    def __repr__(self) -> str:
        return f"Registry({sorted(self._workflows)})"


Target = Registry | Workflow | Iterable[Workflow]


def as_registry(target: Target) -> Registry:
    """A registry from a registry, one workflow, or several."""
    if isinstance(target, Registry):
        return target
    if isinstance(target, Workflow):
        return Registry([target])
    if isinstance(target, str | bytes) or not isinstance(target, Iterable):
        raise TypeError(
            f"expected a Registry, a Workflow or a list of workflows, not {type(target).__name__}"
        )
    workflows: Any = target  # an iterable of workflows, checked one by one by Registry
    registry = Registry(workflows)
    if not registry:
        raise ValueError("no workflows to run")
    return registry


async def load_target(spec: str) -> Registry:
    """The workflows named by ``package.module:attribute``: a :class:`Registry`, a
    :class:`Workflow`, a list of them, or a function (sync or async) returning one of those.

    Raises ValueError with what is wrong (a bad spec, a module or attribute that is missing,
    an attribute of another kind).
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"expected package.module:attribute, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r}: {exc}") from exc
    value: Any = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ValueError(f"{module_name!r} has no attribute {attribute!r}") from None
    if callable(value) and not isinstance(value, Registry | Workflow):
        value = value()
        if inspect.isawaitable(value):
            value = await value
    try:
        return as_registry(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{spec}: {exc}") from exc
