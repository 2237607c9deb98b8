"""Workflow steps: what a step is, what it sees, how it pauses, and how steps form layers.

A step is an async function of a :class:`StepContext` returning writes: a mapping of channel to
value, an iterable of ``(channel, value)`` pairs (to write one channel twice), or None. Steps and
their dependencies form a DAG; :func:`plan_layers` cuts it into layers by longest-path depth, so
every step runs in the layer after its deepest dependency.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import math
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from ..errors import Interrupt, WorkflowGraphError
from ..store.types import JSON

Writes = Mapping[str, object] | Iterable[tuple[str, object]] | None
"""What a step returns: ``{channel: value}``, ``[(channel, value), ...]`` or None."""

StepFn = Callable[["StepContext"], Awaitable[Writes]]
"""An async step function."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a failing step is tried, and how long to wait in between.

    Attempt ``n`` (from 1) that fails with one of ``retry_on`` is followed, while ``n`` is below
    ``max_attempts``, by a wait of ``initial_delay * multiplier ** (n - 1)`` seconds, capped at
    ``max_delay``, and with ``jitter`` a random fraction of it (full jitter). A timeout counts
    as a failure (:class:`~atomr_redis_state.errors.StepTimeoutError`); a pause never does.
    """

    max_attempts: int = 3
    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: bool = True
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError("max_attempts must be an int")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        for name in ("initial_delay", "max_delay", "multiplier"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (from 1)."""
        ceiling = min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1))
        return random.uniform(0, ceiling) if self.jitter else ceiling

    def retries(self, error: BaseException, attempt: int) -> bool:
        """True when ``error`` on attempt ``attempt`` is worth another attempt."""
        return attempt < self.max_attempts and isinstance(error, self.retry_on)


NO_RETRY = RetryPolicy(max_attempts=1)
"""The default: a step is tried once per run of its layer."""


@dataclass(frozen=True, slots=True)
class Step:
    """A named async step of a workflow and the steps whose writes it needs first.

    ``fn`` must be an ``async def`` function (a sync one is refused here, naming the step: wrap
    blocking code with :meth:`Step.threaded`). ``retry`` (default: the runner's) and ``timeout``
    (seconds per attempt; default: none) apply to each run of the step.
    """

    name: str
    fn: StepFn
    depends_on: Sequence[str] = ()
    retry: RetryPolicy | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"a step name must be a non-empty str, not {self.name!r}")
        if not callable(self.fn):
            raise TypeError(f"step {self.name!r}: fn must be an async function")
        if not _is_async(self.fn):
            raise TypeError(
                f"step {self.name!r}: fn must be an async function (async def); "
                "for blocking code use Step.threaded(name, fn, ...), which runs it in a thread"
            )
        deps = (self.depends_on,) if isinstance(self.depends_on, str) else self.depends_on
        if not all(isinstance(dep, str) for dep in deps):
            raise TypeError(f"step {self.name!r}: depends_on must hold step names")
        object.__setattr__(self, "depends_on", tuple(dict.fromkeys(deps)))
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            raise TypeError(f"step {self.name!r}: retry must be a RetryPolicy")
        if self.timeout is not None and (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, int | float)
            or not math.isfinite(self.timeout)
            or self.timeout <= 0
        ):
            raise ValueError(f"step {self.name!r}: timeout must be a positive number of seconds")

    @classmethod
    def threaded(
        cls,
        name: str,
        fn: Callable[[StepContext], Writes],
        depends_on: Sequence[str] = (),
        *,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Step:
        """A step whose blocking (sync) function runs in a worker thread.

        A timeout stops waiting for the thread, not the thread itself: Python cannot interrupt
        a thread, so make blocking calls time out on their own.
        """
        if not callable(fn):
            raise TypeError(f"step {name!r}: fn must be callable")

        async def in_thread(ctx: StepContext) -> Writes:
            return await asyncio.to_thread(fn, ctx)

        return cls(name, in_thread, depends_on, retry, timeout)


def _is_async(fn: object) -> bool:
    """True for an async function, a partial of one, or an object with an async ``__call__``."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 (the bound __call__ is what gets awaited)
    )


_NOT_RESUMED = object()


class StepContext:
    """What a step sees: its run, the state as it was before its layer, and any resume value.

    ``(workflow_id, run_id, super_step, step)`` names one execution of a step in a run and
    stays the same when the layer is retried or the step resumed (even after steps a deploy
    added to an earlier layer ran in between), so it makes a good idempotency key for a side
    effect; ``attempt`` counts the step's attempts (from 1) over every retry of its layer.
    """

    __slots__ = (
        "_resume",
        "_values",
        "attempt",
        "layer",
        "run_id",
        "step",
        "super_step",
        "workflow_id",
    )

    def __init__(
        self,
        step: str,
        layer: int,
        values: Mapping[str, JSON],
        super_step: int,
        resume: object = _NOT_RESUMED,
        *,
        workflow_id: str = "",
        run_id: str = "",
        attempt: int = 1,
    ) -> None:
        self.step = step
        self.layer = layer
        self.super_step = super_step
        """The super-step of the checkpoint this step's layer first ran from (a retried or
        resumed step keeps the one of its first attempt)."""
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.attempt = attempt
        self._values = values
        self._resume = resume

    def read(self, key: str) -> JSON:
        """A copy of channel ``key``'s value before this layer; None when absent."""
        return copy.deepcopy(self._values.get(key))

    def snapshot(self) -> dict[str, JSON]:
        """A copy of the whole state before this layer."""
        return copy.deepcopy(dict(self._values))

    @property
    def resumed(self) -> bool:
        """True when this step runs because of :meth:`StatefulRunner.resume`."""
        return self._resume is not _NOT_RESUMED

    @property
    def resume_value(self) -> JSON:
        """The value given to ``resume()`` for this step; None when it was not resumed."""
        return None if self._resume is _NOT_RESUMED else cast(JSON, copy.deepcopy(self._resume))

    def interrupt(self, payload: object = None) -> JSON:
        """Pause the run with ``payload``; once resumed, return the resume value instead.

        Every call returns the same resume value, so a step asks one question per pause.
        """
        if not self.resumed:
            raise Interrupt(payload)
        return self.resume_value

    def __repr__(self) -> str:
        return (
            f"StepContext(step={self.step!r}, run_id={self.run_id!r}, "
            f"super_step={self.super_step}, attempt={self.attempt})"
        )


def normalise_writes(step: str, writes: object) -> list[tuple[str, object]]:
    """A step's writes as ``(channel, value)`` pairs, or TypeError naming the step."""
    if writes is None:
        return []
    if isinstance(writes, Mapping):
        return list(writes.items())
    if isinstance(writes, str | bytes) or not isinstance(writes, Iterable):
        raise TypeError(
            f"step {step!r} returned {type(writes).__name__}: return a mapping of channel to "
            "value, (channel, value) pairs, or None"
        )
    pairs: list[tuple[str, object]] = []
    for pair in writes:
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise TypeError(f"step {step!r}: each write must be a (channel, value) pair: {pair!r}")
        pairs.append((pair[0], pair[1]))
    return pairs


def plan_layers(steps: Iterable[Step]) -> tuple[tuple[Step, ...], ...]:
    """The steps grouped by longest-path depth, each layer in declaration order.

    Raises :class:`WorkflowGraphError` for a duplicate name, an unknown dependency or a cycle.
    """
    by_name: dict[str, Step] = {}
    for step in steps:
        if not isinstance(step, Step):
            raise TypeError(f"expected a Step, not {type(step).__name__}")
        if step.name in by_name:
            raise WorkflowGraphError(f"two steps are named {step.name!r}")
        by_name[step.name] = step
    for step in by_name.values():
        for dep in step.depends_on:
            if dep not in by_name:
                raise WorkflowGraphError(f"step {step.name!r} depends on unknown step {dep!r}")
    depth = _depths(by_name)
    layers: list[list[Step]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for step in by_name.values():
        layers[depth[step.name]].append(step)
    return tuple(tuple(layer) for layer in layers)


def _depths(by_name: Mapping[str, Step]) -> dict[str, int]:
    """Longest-path depth of every step (Kahn's algorithm), or the cycle that prevents it."""
    waiting = {name: len(step.depends_on) for name, step in by_name.items()}
    dependants: dict[str, list[str]] = {name: [] for name in by_name}
    for step in by_name.values():
        for dep in step.depends_on:
            dependants[dep].append(step.name)
    depth: dict[str, int] = {}
    ready = [name for name, count in waiting.items() if count == 0]
    while ready:
        name = ready.pop()
        step = by_name[name]
        depth[name] = max((depth[dep] + 1 for dep in step.depends_on), default=0)
        for dependant in dependants[name]:
            waiting[dependant] -= 1
            if waiting[dependant] == 0:
                ready.append(dependant)
    if len(depth) < len(by_name):
        raise WorkflowGraphError(f"the steps form a cycle: {_cycle(by_name, depth)}")
    return depth


def _cycle(by_name: Mapping[str, Step], placed: Mapping[str, int]) -> str:
    """Describe one cycle among the steps Kahn's algorithm could not place."""
    name = next(n for n in by_name if n not in placed)
    path: list[str] = []
    while name not in path:
        path.append(name)
        name = next(dep for dep in by_name[name].depends_on if dep not in placed)
    loop = [*path[path.index(name) :], name]
    return " -> ".join(repr(n) for n in loop) + " (each depends on the next)"
