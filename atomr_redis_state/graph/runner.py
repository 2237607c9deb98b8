"""The stateful runner: runs a workflow layer by layer and checkpoints every super-step.

Super-step 0 is the run's initial state (label ``init``). Layer ``i`` of the DAG is checkpointed
as super-step ``i + 1`` (label ``layer:<i>``), except that every pause takes a super-step of its
own (label ``interrupt:<step>``), so each pause shifts the later layers up by one. A pause never
replaces the checkpoint before it, so ``list()`` is the run's whole history and ``latest()`` is
where it stands.

Progress is stored in each snapshot (see :mod:`.progress`), never kept in memory: any worker can
take a run over, and a fork of a checkpoint (``checkpointer.fork(key, edits)``) carries it too,
so running the fork's run id continues at the layer after the forked super-step.

Concurrency: every save is exclusive. When two workers run (or resume) the same run at once, the
first to checkpoint a super-step wins; the other raises
:class:`~.errors.CheckpointConflictError` and stores nothing, and its work for that layer is
discarded. The loser does not reload and carry on, so a run is only ever driven by one worker at a
time; call ``run()`` again to join a run whose owner has stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from ..errors import Interrupt, RunNotPausedError, UnknownChannelError, WorkflowGraphError
from ..store.checkpointer import Checkpointer, Edits
from ..store.codec import normalise_edits
from ..store.types import JSON, CheckpointKey, Snapshot
from ..store.validation import check_id
from .outcomes import Pause, RunOutcome
from .progress import RUNNER_CHANNEL, Pending, Progress
from .schema import RunState, StateSchema
from .steps import Step, StepContext, Writes, normalise_writes, plan_layers

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Position:
    """A run at one checkpoint: its state (with the super-step) and the runner's progress."""

    state: RunState
    progress: Progress


@dataclass(frozen=True, slots=True)
class _Resume:
    """The layer a ``resume()`` continues at, and the step that gets the resume value."""

    layer: int
    step: str | None
    value: object


class StatefulRunner:
    """Runs the ``steps`` of one run of a workflow, checkpointing each super-step.

    ``steps`` form a DAG (see :class:`~.steps.Step`). The steps of a layer run concurrently,
    each seeing the state as it was before the layer; their writes are merged through the
    reducers in the order the steps were declared, whatever order they finish in. If a step
    fails, its running siblings are cancelled, the layer is not checkpointed and the step's
    error propagates. If a step pauses (:class:`~.steps.Interrupt`), its siblings finish and
    their writes are kept with the pause, so that only the paused step runs again on resume.

    A step in ``interrupt_before`` pauses the run before its layer runs; one in
    ``interrupt_after`` pauses it once its layer is checkpointed. ``on_checkpoint`` is called
    with every snapshot this runner saves. A cycle, an unknown dependency or an unknown
    interrupt step is a :class:`~.steps.WorkflowGraphError` here, before anything runs.

    Example::

        runner = StatefulRunner("wf", "run-1", [Step("plan", plan), Step("act", act, ["plan"])],
                                schema, checkpointer, interrupt_before={"act"})
        outcome = await runner.run({"question": "..."})   # paused before "act"
        outcome = await runner.resume(edits={"plan": revised})
    """

    def __init__(
        self,
        workflow_id: str,
        run_id: str,
        steps: Iterable[Step],
        schema: StateSchema,
        checkpointer: Checkpointer,
        *,
        interrupt_before: Iterable[str] = (),
        interrupt_after: Iterable[str] = (),
        on_checkpoint: Callable[[Snapshot], object] | None = None,
    ) -> None:
        self.workflow_id = check_id(workflow_id, "workflow_id")
        self.run_id = check_id(run_id, "run_id")
        if not isinstance(schema, StateSchema):
            raise TypeError(f"schema must be a StateSchema, not {type(schema).__name__}")
        if RUNNER_CHANNEL in schema:
            raise ValueError(f"{RUNNER_CHANNEL!r} is reserved for the runner's progress")
        self.schema = schema
        self.checkpointer = checkpointer
        self._layers = plan_layers(steps)
        self._layer_of = {s.name: i for i, layer in enumerate(self._layers) for s in layer}
        self._before = self._known_steps(interrupt_before, "interrupt_before")
        self._after = self._known_steps(interrupt_after, "interrupt_after")
        self._on_checkpoint = on_checkpoint

    @property
    def layers(self) -> tuple[tuple[str, ...], ...]:
        """The step names of each layer, in merge order."""
        return tuple(tuple(step.name for step in layer) for layer in self._layers)

    async def run(self, input: Writes = None) -> RunOutcome:
        """Run the remaining layers from the run's latest checkpoint; stop at a pause.

        A new run first saves super-step 0: the defaults with ``input`` written through the
        reducers. ``input`` is ignored once the run exists, so a worker taking over a run can
        call ``run()`` with the arguments that started it. A finished or paused run executes
        nothing and reports where it stands.
        """
        position = await self._latest()
        if position is None:
            state = RunState(self.schema)
            state.merge_writes(normalise_writes("input", input))
            position = await self._save(state, "init", Progress(0))
        return await self._drive(position, None)

    async def resume(
        self,
        value: object = None,
        *,
        edits: Edits | None = None,
        from_step: str | None = None,
    ) -> RunOutcome:
        """Continue a paused run, on any worker, and run on until it completes or pauses again.

        ``edits`` first replace channel values (as ``fork`` edits do, not through reducers).
        By default the run continues where it paused: the paused step runs again and
        ``value`` is its :attr:`~.steps.StepContext.resume_value` (and the return value of
        ``ctx.interrupt()``); the layer's steps that had finished keep their writes; after an
        ``interrupt_after`` pause the next layer runs and ``value`` is unused. With
        ``from_step`` the whole layer of that step (earlier or later) runs next, with
        ``value`` for that step. Raises :class:`RunNotPausedError` if the run is not paused.
        """
        position = await self._latest()
        pause = None if position is None else position.progress.pause
        if position is None or pause is None:
            raise RunNotPausedError(
                f"run {self.run_id!r} of workflow {self.workflow_id!r} is not paused"
            )
        state = self._edited(position.state, edits)
        if from_step is not None:
            if from_step not in self._layer_of:
                raise WorkflowGraphError(f"from_step: there is no step named {from_step!r}")
            target = _Resume(self._layer_of[from_step], from_step, value)
            pending: Pending = {}
        elif pause.kind == "after":
            target, pending = _Resume(pause.layer + 1, None, value), {}
        else:
            target, pending = _Resume(pause.layer, pause.step, value), position.progress.pending
        if target.layer >= len(self._layers):
            done = self._advanced(state)
            return self._outcome(
                await self._save(done, f"resume:{pause.step}", Progress(target.layer))
            )
        return await self._drive(_Position(state, Progress(target.layer, pending=pending)), target)

    async def _drive(self, position: _Position, resume: _Resume | None) -> RunOutcome:
        """Run layers from ``position`` until the run completes or pauses."""
        while True:
            progress = position.progress
            if progress.pause is not None:
                return self._outcome(position)
            if progress.pause_after is not None:
                done = progress.next_layer - 1
                pause = Pause(progress.pause_after, "after", None, done)
                position = await self._pause(position.state, pause, progress.next_layer, {})
                continue
            index = progress.next_layer
            if index >= len(self._layers):
                return self._outcome(position)
            layer = self._layers[index]
            resuming = resume if resume is not None and resume.layer == index else None
            stop = next((s.name for s in layer if s.name in self._before), None)
            if resuming is None and stop is not None:
                pause = Pause(stop, "before", None, index)
                position = await self._pause(position.state, pause, index, {})
                continue
            position = await self._run_layer(index, position, resuming)

    async def _run_layer(
        self, index: int, position: _Position, resume: _Resume | None
    ) -> _Position:
        """Run one layer's steps concurrently; checkpoint the merged writes, or the pause."""
        layer = self._layers[index]
        before = position.state
        values = before.snapshot()
        writes: Pending = dict(position.progress.pending)
        todo = [step for step in layer if step.name not in writes]
        contexts = [self._context(step, index, before, values, resume) for step in todo]
        results = await _all_or_cancel(
            [self._call(s, c) for s, c in zip(todo, contexts, strict=True)]
        )
        interrupted: list[tuple[str, Interrupt]] = []
        for step, result in zip(todo, results, strict=True):
            if isinstance(result, Interrupt):
                interrupted.append((step.name, result))
            else:
                writes[step.name] = result
        if interrupted:
            name, signal = interrupted[0]
            return await self._pause(
                before, Pause(name, "interrupt", cast(JSON, signal.payload), index), index, writes
            )
        merged = self._advanced(before)
        merged.merge_writes(pair for step in layer for pair in writes[step.name])
        owed = next((s.name for s in layer if s.name in self._after), None)
        return await self._save(merged, f"layer:{index}", Progress(index + 1, pause_after=owed))

    async def _call(self, step: Step, context: StepContext) -> list[tuple[str, object]] | Interrupt:
        """Run one step; its writes (checked against the schema) or the Interrupt it raised."""
        try:
            writes = await step.fn(context)
        except Interrupt as signal:
            return signal
        pairs = normalise_writes(step.name, writes)
        for channel, _ in pairs:
            if channel not in self.schema:
                raise UnknownChannelError(channel, self.schema.keys())
        return pairs

    async def _pause(
        self, state: RunState, pause: Pause, next_layer: int, pending: Pending
    ) -> _Position:
        """Checkpoint a pause as a super-step of its own, on top of ``state``."""
        progress = Progress(next_layer, pause, pending)
        return await self._save(self._advanced(state), f"interrupt:{pause.step}", progress)

    async def _save(self, state: RunState, label: str, progress: Progress) -> _Position:
        """Exclusively checkpoint ``state`` with ``progress``; a taken super-step raises."""
        values = state.snapshot()
        values[RUNNER_CHANNEL] = progress.encode()
        key = CheckpointKey(self.workflow_id, self.run_id, state.super_step)
        snapshot = Snapshot(key, values, label)
        await self.checkpointer.save(snapshot, exclusive=True)
        if self._on_checkpoint is not None:
            self._on_checkpoint(snapshot)
        return _Position(state, progress)

    async def _latest(self) -> _Position | None:
        snapshot = await self.checkpointer.latest(self.workflow_id, self.run_id)
        if snapshot is None:
            return None
        values = dict(snapshot.values)
        progress = Progress.decode(values.pop(RUNNER_CHANNEL, None), snapshot.key.super_step)
        state = RunState.from_snapshot(self.schema, values, snapshot.key.super_step)
        return _Position(state, progress)

    def _context(
        self,
        step: Step,
        index: int,
        state: RunState,
        values: dict[str, JSON],
        resume: _Resume | None,
    ) -> StepContext:
        if resume is not None and resume.step == step.name:
            return StepContext(step.name, index, values, state.super_step, resume.value)
        return StepContext(step.name, index, values, state.super_step)

    def _edited(self, state: RunState, edits: Edits | None) -> RunState:
        changes = normalise_edits(edits)
        for key in changes:
            if key not in self.schema:
                raise UnknownChannelError(key, self.schema.keys())
        if not changes:
            return state
        return RunState.from_snapshot(
            self.schema, {**state.snapshot(), **changes}, state.super_step
        )

    def _advanced(self, state: RunState) -> RunState:
        """A copy of ``state`` at the next super-step."""
        copy = RunState.from_snapshot(self.schema, state.snapshot(), state.super_step)
        copy.advance()
        return copy

    def _outcome(self, position: _Position) -> RunOutcome:
        state = position.state
        return RunOutcome(state.snapshot(), state.super_step, position.progress.pause)

    def _known_steps(self, names: Iterable[str], option: str) -> frozenset[str]:
        chosen = frozenset([names] if isinstance(names, str) else names)
        unknown = sorted(chosen - self._layer_of.keys())
        if unknown:
            raise WorkflowGraphError(f"{option}: there is no step named {unknown[0]!r}")
        return chosen

    def __repr__(self) -> str:
        return f"StatefulRunner(workflow_id={self.workflow_id!r}, run_id={self.run_id!r})"


async def _all_or_cancel(calls: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Await ``calls`` concurrently; on the first failure cancel the rest, wait, and re-raise.

    The failure re-raised is the first by position among those that failed before the
    cancellation. If the caller is cancelled, every task is cancelled and awaited too.
    """
    tasks = [asyncio.ensure_future(call) for call in calls]
    if not tasks:
        return []
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
    for task in tasks:
        error = task.exception() if task in done else None
        if error is not None:
            raise error
    return [task.result() for task in tasks]
