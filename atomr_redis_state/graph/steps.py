"""Workflow steps: what a step is, what it sees, how it pauses, and how steps form layers.

A step is an async function of a :class:`StepContext` returning writes: a mapping of channel to
value, an iterable of ``(channel, value)`` pairs (to write one channel twice), or None. Steps and
their dependencies form a DAG; :func:`plan_layers` cuts it into layers by longest-path depth, so
every step runs in the layer after its deepest dependency.
"""

from __future__ import annotations

import copy
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
class Step:
    """A named step of a workflow and the steps whose writes it needs first."""

    name: str
    fn: StepFn
    depends_on: Sequence[str] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"a step name must be a non-empty str, not {self.name!r}")
        if not callable(self.fn):
            raise TypeError(f"step {self.name!r}: fn must be an async function")
        deps = (self.depends_on,) if isinstance(self.depends_on, str) else self.depends_on
        if not all(isinstance(dep, str) for dep in deps):
            raise TypeError(f"step {self.name!r}: depends_on must hold step names")
        object.__setattr__(self, "depends_on", tuple(dict.fromkeys(deps)))


_NOT_RESUMED = object()


class StepContext:
    """What a step sees: the state as it was before its layer, and any value it resumes with."""

    __slots__ = ("_resume", "_values", "layer", "step", "super_step")

    def __init__(
        self,
        step: str,
        layer: int,
        values: Mapping[str, JSON],
        super_step: int,
        resume: object = _NOT_RESUMED,
    ) -> None:
        self.step = step
        self.layer = layer
        self.super_step = super_step
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
