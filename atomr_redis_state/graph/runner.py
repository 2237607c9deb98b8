"""The stateful runner: runs a workflow layer by layer and checkpoints every super-step.

Super-step 0 is the run's initial state (label ``init``). Each layer of the DAG is checkpointed
as the next super-step (label ``layer:<i>``); every pause takes a super-step of its own (labels
``interrupt-before:<step>``, ``interrupt:<step>``, ``interrupt-after:<step>``), so ``list()`` is
the run's whole history and ``latest()`` is where it stands.

Progress is stored with each checkpoint (in ``Snapshot.metadata``, see :mod:`.progress`), by step
name and with the workflow's fingerprint, never in a worker's memory: any worker can take a run
over, and a fork of a checkpoint carries it too.

Fleet safety: every call that executes steps first takes the run's lease in the store (one
worker per run at a time), renews it in the background while steps run, carries it on every
save (so a worker that lost it writes nothing) and releases it when the run pauses, completes or
fails. A crashed worker's run can be taken over once its lease expires. A run someone asked to
cancel (``cancel``) stops at the next renewal (its steps are cancelled) or checkpoint,
whichever comes first, with :class:`~..errors.RunCancelledError`.
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar, cast

from ..errors import (
    CheckpointNotFoundError,
    Interrupt,
    LeaseHeldError,
    LeaseLostError,
    RunCancelledError,
    RunNotFoundError,
    RunNotPausedError,
    StepTimeoutError,
    UnknownChannelError,
    WorkflowChangedError,
    WorkflowGraphError,
)
from ..store.checkpointer import Checkpointer, Edits, Hold
from ..store.codec import normalise_edits
from ..store.types import JSON, Answer, CheckpointKey, Lease, Snapshot, now_ms
from ..store.validation import check_id, check_owner, duration_to_ms
from .outcomes import Pause, RunOutcome, RunStatus, StepFailure
from .progress import (
    RECORD_KEY,
    FailureNote,
    Pending,
    Progress,
    Status,
    answer_for,
    fingerprint,
    run_status,
)
from .schema import RunState, StateSchema
from .steps import NO_RETRY, RetryPolicy, Step, StepContext, Writes, normalise_writes, plan_layers

if TYPE_CHECKING:
    from ..observability.hooks import RunnerHooks

T = TypeVar("T")

log = logging.getLogger(__name__)

DEFAULT_LEASE_TTL = 30.0
"""Seconds a worker's lease lasts without renewal: how long a crashed worker's run waits."""


def default_owner() -> str:
    """A lease owner naming this host and process, unique per runner: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True, slots=True)
class _Position:
    """A run at one checkpoint: its state (with the super-step) and the runner's progress."""

    state: RunState
    progress: Progress
    attempts: dict[str, int] = field(default_factory=dict)
    """Attempts already made by steps of the next layer (after a failure)."""
    answer: Answer | None = None
    """An answer recorded in the store for the pause at this checkpoint (see
    :meth:`Checkpointer.record_answer`): the next attempt resumes the paused step with it."""


@dataclass(slots=True)
class _StepResult:
    """How one step of a layer ended: writes, a pause, or a failure, after ``attempts``."""

    step: Step
    attempts: int
    writes: list[tuple[str, object]] | None = None
    interrupt: Interrupt | None = None
    error: Exception | None = None


class StatefulRunner:
    """Runs the ``steps`` of one run of a workflow, checkpointing each super-step.

    ``steps`` form a DAG (see :class:`~.steps.Step`). The steps of a layer run concurrently,
    each seeing the state as it was before the layer; their writes are merged through the
    reducers in the order the steps were declared, whatever order they finish in.

    Failures: a step is retried by its :class:`~.steps.RetryPolicy` (``retry`` here is the
    default for steps without one) and bounded by its ``timeout``. When a step still fails, its
    siblings finish, the layer is not checkpointed, the writes of the steps that finished are
    kept in the store, and the step's error propagates: the next ``run()`` retries only the
    steps that did not finish. If a step pauses (:class:`~..errors.Interrupt`), its siblings
    finish and their writes are kept with the pause, so only the paused step runs on resume.

    A step in ``interrupt_before`` pauses the run before its layer runs; one in
    ``interrupt_after`` pauses it once its layer is checkpointed. A pause keeps the whole run
    in the store for ``pause_ttl`` (default: with no expiry), whatever the checkpointer's
    ``ttl``; resuming puts it back on the ``ttl``. ``on_checkpoint`` (sync or async) is called
    with every snapshot this runner saves.

    Leases: ``owner`` names this worker (default: host, pid and a random suffix); its lease on
    the run lasts ``lease_ttl`` and is renewed every third of it while steps run.

    Example::

        runner = StatefulRunner("wf", "run-1", [Step("plan", plan), Step("act", act, ["plan"])],
                                schema, checkpointer, interrupt_before={"act"})
        outcome = await runner.start({"question": "..."})  # paused before "act"
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
        owner: str | None = None,
        lease_ttl: float | timedelta = DEFAULT_LEASE_TTL,
        pause_ttl: float | timedelta | None = None,
        retry: RetryPolicy | None = None,
        telemetry: RunnerHooks | None = None,
    ) -> None:
        self.workflow_id = check_id(workflow_id, "workflow_id")
        self.run_id = check_id(run_id, "run_id")
        if not isinstance(schema, StateSchema):
            raise TypeError(f"schema must be a StateSchema, not {type(schema).__name__}")
        self.schema = schema
        self.checkpointer = checkpointer
        self._layers = plan_layers(steps)
        self._steps = {s.name: s for layer in self._layers for s in layer}
        self._layer_of = {s.name: i for i, layer in enumerate(self._layers) for s in layer}
        self._fingerprint = fingerprint(self._layers)
        self._before = self._known_steps(interrupt_before, "interrupt_before")
        self._after = self._known_steps(interrupt_after, "interrupt_after")
        self._on_checkpoint = on_checkpoint
        self.owner = default_owner() if owner is None else check_owner(owner)
        lease_ms = duration_to_ms(lease_ttl, "lease_ttl")
        self.lease_ttl_ms = cast(int, lease_ms)
        self._pause_hold: Hold = "forever" if pause_ttl is None else pause_ttl
        if pause_ttl is not None:
            duration_to_ms(pause_ttl, "pause_ttl")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        self.retry = retry or NO_RETRY
        self.telemetry = telemetry
        """Hooks around each layer and step attempt (see ``observability.instrument_runner``)."""
        self._lease: Lease | None = None
        self._claimed: Lease | None = None
        """A lease claimed from the queue, for :meth:`run_claimed` to use."""
        self.settlement: tuple[JSON, bool] = (None, False)
        """After :meth:`run_claimed`: the note its claim's ``finish`` should store (a failed
        layer's, or None) and whether the work finished (then the old note is cleared)."""
        self._busy = False
        self._failure: JSON = None
        """The note a failed layer leaves with the lease (see :meth:`_fail`)."""

    @property
    def layers(self) -> tuple[tuple[str, ...], ...]:
        """The step names of each layer, in merge order."""
        return tuple(tuple(step.name for step in layer) for layer in self._layers)

    @property
    def fingerprint(self) -> str:
        """A short hash of the workflow's shape (step names and dependencies)."""
        return self._fingerprint

    async def start(self, input: Writes = None) -> RunOutcome:
        """Start the run: save super-step 0 (the defaults with ``input`` written through the
        reducers), then run until it completes or pauses.

        Raises :class:`~..errors.CheckpointConflictError` if the run already exists (continue
        it with :meth:`run`) and :class:`~..errors.LeaseHeldError` if another worker is
        starting it.
        """
        initial, progress = self._initial(input)

        async def body() -> RunOutcome:
            position = await self._save(initial, "init", progress)
            return await self._drive(position)

        return await self._with_lease(body, must_exist=False)

    def initial_snapshot(self, input: Writes = None) -> Snapshot:
        """The run's super-step 0, as :meth:`start` saves it: for a queue to submit
        (:meth:`~..store.checkpointer.Checkpointer.submit`) and a worker to run later."""
        initial, progress = self._initial(input)
        key = CheckpointKey(self.workflow_id, self.run_id, 0)
        metadata: dict[str, JSON] = {RECORD_KEY: progress.encode()}
        return Snapshot(key, initial.snapshot(), "init", metadata=metadata)

    def _initial(self, input: Writes) -> tuple[RunState, Progress]:
        initial = RunState(self.schema)
        initial.merge_writes(normalise_writes("input", input))
        status: Status = "running" if self._layers else "completed"
        return initial, Progress(self._fingerprint, (), status)

    async def run_claimed(self, lease: Lease) -> RunOutcome:
        """Continue the run under ``lease``, which a worker claimed from the queue
        (:meth:`~..store.checkpointer.Checkpointer.claim`), instead of acquiring one: as
        :meth:`run`, so a paused run with a human's answer recorded (by ``resume_run`` or
        ``record_answer``) resumes with it. The lease is renewed while steps run, and not
        released at the end: the caller settles the claim with ``finish``, which releases it
        in the same round trip and stores what :attr:`settlement` says (a failed layer's
        note), even when this raises."""
        if (lease.workflow_id, lease.run_id) != (self.workflow_id, self.run_id):
            raise ValueError(f"the lease is on run {lease.run_id!r}, not on {self.run_id!r}")
        self._claimed = lease
        try:
            return await self.run()
        finally:
            self._claimed = None

    async def run(self) -> RunOutcome:
        """Continue the run from its latest checkpoint, on any worker, until it completes or
        pauses; retry a failed layer (only its steps that did not finish).

        A completed or paused run executes nothing and reports where it stands, unless an
        answer was recorded for its pause (:meth:`resume`, or ``record_answer`` from any
        process) by an attempt that did not finish: then the paused step runs with it. Raises
        :class:`~..errors.RunNotFoundError` when the run has no checkpoint (it is never started
        anew: see :meth:`start`), :class:`~..errors.LeaseHeldError` while another worker holds
        it, :class:`~..errors.WorkflowChangedError`, before anything runs, when the steps
        changed in a way its progress cannot carry over, and
        :class:`~..errors.RunCancelledError` for a run someone asked to cancel (before anything
        runs, or once its steps are cancelled; a completed run stays completed).
        """

        async def body() -> RunOutcome:
            position = await self._current()
            self._check_compatible(position.progress)
            pause, answer = position.progress.pause, position.answer
            if pause is not None and answer is not None:
                log.info(
                    "workflow %s run %s: resuming %r with its recorded answer",
                    self.workflow_id,
                    self.run_id,
                    pause.step,
                )
                position = self._answered(position, pause.step, answer.value)
            return await self._drive(position)

        return await self._with_lease(body)

    async def resume(
        self,
        value: object = None,
        *,
        edits: Edits | None = None,
        from_step: str | None = None,
    ) -> RunOutcome:
        """Continue a paused run, on any worker, and run on until it completes or pauses again.

        ``edits`` first replace channel values (as ``fork`` edits do, not through reducers).
        By default the run continues where it paused: after a before- or inside-pause, the
        paused step runs with ``value`` as its :attr:`~.steps.StepContext.resume_value` (and
        the return value of ``ctx.interrupt()``), and the steps of its layer that had finished
        keep their writes; after an ``interrupt_after`` pause the next layer runs (its own
        ``interrupt_before`` gates still apply) and ``value`` is unused. The answer is stored
        with the run (``record_answer``, under the lease) before the step runs, so if the step
        fails (or the worker dies) the next :meth:`run` on any worker resumes with it; it must
        be strict JSON.

        With ``from_step`` the whole layer of that step runs next, with ``value`` for that
        step: a later step skips the layers in between; an earlier one first rolls the state
        back to the checkpoint before that layer (history is kept: new super-steps follow).

        Raises :class:`~..errors.RunNotPausedError` if the run is not paused,
        :class:`~..errors.RunNotFoundError` if it has no checkpoint, and
        :class:`~..errors.WorkflowChangedError` if the paused step (or one it depends on)
        changed, so an answer is never silently dropped, and
        :class:`~..errors.RunCancelledError` if someone asked to cancel the run.
        """
        changes = self._checked_edits(edits)
        if from_step is not None and from_step not in self._steps:
            raise WorkflowGraphError(f"from_step: there is no step named {from_step!r}")

        async def body() -> RunOutcome:
            position = await self._current()
            pause = position.progress.pause
            if pause is None:
                raise RunNotPausedError(
                    f"run {self.run_id!r} of workflow {self.workflow_id!r} is not paused"
                )
            self._check_compatible(position.progress)
            if from_step is not None:
                position = await self._moved_to(position, from_step, value)
            elif pause.kind == "after":
                position = replace(position, progress=self._continued(position.progress))
            else:
                await self.checkpointer.record_answer(
                    self.workflow_id,
                    self.run_id,
                    value,
                    super_step=position.state.super_step,
                    lease=self._lease,
                )
                position = self._answered(position, pause.step, value)
            state = self._edited(position.state, changes)
            position = replace(position, state=state)
            if self._next_layer(position.progress.done) is None:
                finished = self._advanced(state)
                progress = Progress(self._fingerprint, position.progress.done, "completed")
                return self._outcome(await self._save(finished, f"resume:{pause.step}", progress))
            return await self._drive(position)

        return await self._with_lease(body)

    async def status(self) -> RunStatus:
        """Where the run stands, from the store: ``not_found``, ``running``, ``stalled``,
        ``forked``, ``idle``, ``paused``, ``completed`` or ``failed``, with its latest
        super-step, pause, lease and last error.

        ``running`` means a worker holds the run's lease; ``stalled`` is a run whose worker
        stopped mid-way (no lease: take it over with :meth:`run`); ``forked`` a fork nobody has
        run yet; ``failed`` a run whose last layer failed and that nobody is retrying (see
        :data:`~.outcomes.RunStatusState`).
        """
        return await run_status(self.checkpointer, self.workflow_id, self.run_id)

    async def _with_lease(self, body: Callable[[], Awaitable[T]], *, must_exist: bool = True) -> T:
        """Run ``body`` holding the run's lease, renewed in the background, released after.

        If a renewal finds the lease lost, ``body`` is cancelled and LeaseLostError raised. One
        runner drives one call at a time: a second, concurrent call gets LeaseHeldError (the
        store would hand this same owner the same lease).
        """
        if self._busy:
            expires = 0 if self._lease is None else self._lease.expires_at_ms
            raise LeaseHeldError(self.workflow_id, self.run_id, self.owner, expires)
        self._busy = True
        try:
            return await self._leased(body, must_exist)
        finally:
            self._busy = False

    async def _leased(self, body: Callable[[], Awaitable[T]], must_exist: bool) -> T:
        if self._claimed is not None:
            self._lease = self._claimed
        else:
            self._lease = await self.checkpointer.acquire_lease(
                self.workflow_id,
                self.run_id,
                self.owner,
                self.lease_ttl_ms / 1000,
                must_exist=must_exist,
            )
        self._failure = None
        work = asyncio.ensure_future(body())
        keeper = asyncio.ensure_future(self._keep_lease())
        lost = False
        finished = False
        try:
            await asyncio.wait({work, keeper}, return_when=asyncio.FIRST_COMPLETED)
            if not work.done():
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
                keeper.result()
            result = work.result()
            finished = True
            return result
        except LeaseLostError:
            lost = True
            log.warning(
                "workflow %s run %s: %s lost its lease; stopped, wrote no more",
                self.workflow_id,
                self.run_id,
                self.owner,
            )
            raise
        finally:
            for task in (keeper, work):
                task.cancel()
            await asyncio.gather(keeper, work, return_exceptions=True)
            lease, self._lease = self._lease, None
            if self._claimed is not None:
                self.settlement = (self._failure, finished)  # finish() releases the claim
            elif not lost and lease is not None:
                await self._release(lease, finished)

    async def _keep_lease(self) -> None:
        """Renew the lease every third of its ttl; end (raising) only when it is lost, or when
        the renewal reports that someone asked to cancel the run."""
        while True:
            await asyncio.sleep(self.lease_ttl_ms / 3000)
            lease = self._lease
            if lease is None:
                return
            try:
                self._lease = await self.checkpointer.renew_lease(lease)
            except LeaseLostError:
                raise
            except Exception as exc:  # a transient store error: the next renewal may succeed
                log.warning(
                    "workflow %s run %s: lease renewal failed (%s); retrying",
                    self.workflow_id,
                    self.run_id,
                    exc,
                )
                continue
            if self._lease.cancel_requested:
                log.info(
                    "workflow %s run %s: cancel requested; cancelling its steps",
                    self.workflow_id,
                    self.run_id,
                )
                raise RunCancelledError(self.workflow_id, self.run_id)

    async def _release(self, lease: Lease, finished: bool) -> None:
        """Release the lease: a layer that failed leaves its note, finished work clears it,
        and anything else (a refused call, a cancellation) leaves the note as it was."""
        try:
            if self._failure is not None:
                await self.checkpointer.release_lease(lease, note=self._failure)
            else:
                await self.checkpointer.release_lease(lease, keep_note=not finished)
        except LeaseLostError:
            log.warning(
                "workflow %s run %s: lease lost before its release; no note kept",
                self.workflow_id,
                self.run_id,
            )
        except Exception as exc:  # the lease expires on its own; never hide the work's outcome
            log.warning(
                "workflow %s run %s: lease release failed (%s)", self.workflow_id, self.run_id, exc
            )

    async def _drive(self, position: _Position) -> RunOutcome:
        """Run layers from ``position`` until the run completes or pauses."""
        while True:
            progress = position.progress
            if progress.pause is not None:
                return self._outcome(position)
            if progress.pause_after is not None:
                step = progress.pause_after
                pause = Pause(step, "after", None, self._layer_of.get(step, -1))
                position = await self._pause(position.state, self._paused(progress, pause))
                continue
            found = self._next_layer(progress.done)
            if found is None:
                return self._outcome(position)
            index, todo = found
            gate = next((s.name for s in todo if s.name in self._before), None)
            # A layer that ran before (it failed or paused, or is being resumed) has passed its
            # gate already.
            if gate is not None and not any(self._began(s.name, progress) for s in todo):
                pause = Pause(gate, "before", None, index)
                position = await self._pause(position.state, self._paused(progress, pause))
                continue
            position = await self._run_layer(index, todo, position)

    @staticmethod
    def _began(step: str, progress: Progress) -> bool:
        """True when ``step`` ran before without finishing its layer, or is owed an answer."""
        return step in progress.pending or step in progress.origins or step in progress.resumes

    async def _run_layer(self, index: int, todo: list[Step], position: _Position) -> _Position:
        """Run one layer's unfinished steps concurrently; checkpoint the merge, or the pause."""
        if self.telemetry is None:
            return await self._layer(index, todo, position)
        names = [step.name for step in todo]
        start = position.state.super_step
        with self.telemetry.layer(self.workflow_id, self.run_id, index, names, start):
            return await self._layer(index, todo, position)

    async def _layer(self, index: int, todo: list[Step], position: _Position) -> _Position:
        """Run the layer's steps that have not finished, each with the super-step its layer
        first ran from; keep the writes of other layers' finished steps (a layer interrupted
        before steps added to an earlier layer ran) until their own layer merges them."""
        before, progress = position.state, position.progress
        values = before.snapshot()
        writes: Pending = dict(progress.pending)
        origins = {**{step.name: before.super_step for step in todo}, **progress.origins}
        running = [step for step in todo if step.name not in writes]
        results = await asyncio.gather(
            *(
                self._run_step(
                    step, index, origins[step.name], values, progress.resumes, position.attempts
                )
                for step in running
            )
        )
        for result in results:
            if result.writes is not None:
                writes[result.step.name] = result.writes
        unfinished = {name: at for name, at in origins.items() if name not in writes}
        failed = [result for result in results if result.error is not None]
        if failed:
            self._fail(failed[0], before.super_step, writes, results, position.attempts, unfinished)
        paused = next((r for r in results if r.interrupt is not None), None)
        if paused is not None:
            payload = cast(JSON, cast(Interrupt, paused.interrupt).payload)
            pause = Pause(paused.step.name, "inside", payload, index)
            interrupted = replace(progress, pending=writes, origins=unfinished)
            return await self._pause(before, self._paused(interrupted, pause))
        names = [step.name for step in todo]
        merged = self._advanced(before)
        merged.merge_writes(pair for name in names for pair in writes[name])
        done = (*progress.done, *names)
        owed = next((name for name in names if name in self._after), None)
        finished = owed is None and self._next_layer(done) is None
        status: Status = "completed" if finished else "running"
        merged_progress = Progress(
            self._fingerprint,
            done,
            status,
            pending=_without(writes, names),
            pause_after=owed,
            origins=_without(unfinished, names),
            resumes=_without(progress.resumes, names),
        )
        saved = await self._save(merged, f"layer:{index}", merged_progress)
        return replace(saved, attempts=_without(position.attempts, names))

    def _fail(
        self,
        first: _StepResult,
        super_step: int,
        writes: Pending,
        results: builtins.list[_StepResult],
        earlier: Mapping[str, int],
        origins: dict[str, int],
    ) -> None:
        """Leave the failure, the finished writes and where the unfinished steps first ran in
        the note, and raise the step's error."""
        error = cast(Exception, first.error)
        attempts = dict(earlier)
        attempts.update(
            (r.step.name, earlier.get(r.step.name, 0) + r.attempts)
            for r in results
            if r.writes is None
        )
        failure = StepFailure(
            first.step.name,
            type(error).__name__,
            str(error),
            super_step,
            attempts[first.step.name],
            now_ms(),
        )
        self._failure = FailureNote(failure, writes, attempts, origins).encode()
        log.warning(
            "workflow %s run %s: step %r failed after %d attempt(s): %s: %s; "
            "kept %d finished step(s)",
            self.workflow_id,
            self.run_id,
            failure.step,
            failure.attempts,
            failure.error_type,
            failure.message,
            len(writes),
        )
        raise error

    async def _run_step(
        self,
        step: Step,
        index: int,
        super_step: int,
        values: dict[str, JSON],
        resumes: Mapping[str, JSON],
        earlier: Mapping[str, int],
    ) -> _StepResult:
        """Run one step with its retry policy and timeout; never raises but cancellation."""
        policy = step.retry or self.retry
        attempts = 0
        while True:
            attempts += 1
            context = StepContext(
                step.name,
                index,
                values,
                super_step,
                *((resumes[step.name],) if step.name in resumes else ()),
                workflow_id=self.workflow_id,
                run_id=self.run_id,
                attempt=earlier.get(step.name, 0) + attempts,
            )
            try:
                returned = await self._call(step, context)
            except Interrupt as signal:
                return _StepResult(step, attempts, interrupt=signal)
            except Exception as exc:
                if not policy.retries(exc, attempts):
                    return _StepResult(step, attempts, error=exc)
                delay = policy.delay(attempts)
                log.info(
                    "workflow %s run %s: step %r attempt %d failed (%s: %s); retrying in %.2f s",
                    self.workflow_id,
                    self.run_id,
                    step.name,
                    context.attempt,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            try:
                return _StepResult(step, attempts, writes=self._checked_writes(step, returned))
            except Exception as exc:  # bad writes are the step's bug: never worth a retry
                return _StepResult(step, attempts, error=exc)

    async def _call(self, step: Step, context: StepContext) -> Writes:
        """One attempt of ``step``, within its timeout (and the telemetry's step span)."""
        if self.telemetry is None:
            return await self._attempt(step, context)
        with self.telemetry.step(context):
            return await self._attempt(step, context)

    @staticmethod
    async def _attempt(step: Step, context: StepContext) -> Writes:
        if step.timeout is None:
            return await step.fn(context)
        deadline = asyncio.timeout(step.timeout)
        try:
            async with deadline:
                return await step.fn(context)
        except TimeoutError:
            if deadline.expired():
                raise StepTimeoutError(step.name, step.timeout) from None
            raise

    def _checked_writes(self, step: Step, writes: Writes) -> list[tuple[str, object]]:
        pairs = normalise_writes(step.name, writes)
        for channel, _ in pairs:
            if channel not in self.schema:
                raise UnknownChannelError(channel, self.schema.keys())
        return pairs

    def _paused(self, progress: Progress, pause: Pause) -> Progress:
        """``progress`` paused at ``pause``: a step that paused again has used its answer."""
        paused = replace(self._continued(progress), status="paused", pause=pause)
        return replace(paused, resumes=_without(progress.resumes, [pause.step]))

    async def _pause(self, state: RunState, progress: Progress) -> _Position:
        """Checkpoint a pause as a super-step of its own, on top of ``state``; hold the run."""
        pause = cast(Pause, progress.pause)
        label = {"before": "interrupt-before", "inside": "interrupt", "after": "interrupt-after"}
        position = await self._save(
            self._advanced(state),
            f"{label[pause.kind]}:{pause.step}",
            progress,
            hold=self._pause_hold,
        )
        log.info(
            "workflow %s run %s: paused %s step %r",
            self.workflow_id,
            self.run_id,
            pause.kind,
            pause.step,
        )
        return position

    async def _save(
        self, state: RunState, label: str, progress: Progress, *, hold: Hold | None = None
    ) -> _Position:
        """Exclusively checkpoint ``state`` with ``progress``, under the lease."""
        key = CheckpointKey(self.workflow_id, self.run_id, state.super_step)
        snapshot = Snapshot(key, state.snapshot(), label, metadata={RECORD_KEY: progress.encode()})
        await self.checkpointer.save(snapshot, exclusive=True, lease=self._lease, hold=hold)
        if self._on_checkpoint is not None:
            result = self._on_checkpoint(snapshot)
            if inspect.isawaitable(result):
                await result
        return _Position(state, progress)

    async def _current(self) -> _Position:
        """The run's latest checkpoint, with the retry state a failed layer left and the
        answer recorded for its pause."""
        snapshot, record = await asyncio.gather(
            self.checkpointer.latest(self.workflow_id, self.run_id),
            self.checkpointer.run_record(self.workflow_id, self.run_id),
        )
        if snapshot is None:
            raise RunNotFoundError(self.workflow_id, self.run_id)
        position = self._position(snapshot)
        if record.cancel_requested_at_ms is not None and position.progress.status != "completed":
            raise RunCancelledError(self.workflow_id, self.run_id)
        step = snapshot.key.super_step
        pause = position.progress.pause
        answer = None if pause is None else answer_for(record.answer, step, pause)
        note = FailureNote.decode(record.note)
        # A failed layer's note counts unless the run paused since (an answered pause failed).
        retrying = pause is None or answer is not None
        if note is not None and note.failure.super_step == step and retrying:
            progress = replace(position.progress, pending=note.pending, origins=note.origins)
            return _Position(position.state, progress, note.attempts, answer)
        return replace(position, answer=answer)

    def _answered(self, position: _Position, step: str, value: object) -> _Position:
        """The paused run, running again, its paused ``step`` owed ``value``."""
        progress = self._continued(position.progress)
        resumes = {**progress.resumes, step: cast(JSON, value)}
        return replace(position, progress=replace(progress, resumes=resumes))

    def _continued(self, progress: Progress) -> Progress:
        """``progress`` running on: the steps done, the writes kept, where unfinished steps
        first ran and the answers owed carry over."""
        return Progress(
            self._fingerprint,
            progress.done,
            pending=progress.pending,
            origins=progress.origins,
            resumes=progress.resumes,
        )

    def _position(self, snapshot: Snapshot, super_step: int | None = None) -> _Position:
        step = snapshot.key.super_step
        progress = Progress.decode(snapshot.metadata, step) or self._running(())
        at = step if super_step is None else super_step
        state = RunState.from_snapshot(self.schema, snapshot.values, at)
        return _Position(state, progress)

    async def _moved_to(self, position: _Position, step: str, value: object) -> _Position:
        """Where ``resume(from_step=step)`` continues, ``step`` owed ``value``: rolled back to
        before the step's layer when it already ran, or with the layers before it skipped."""
        layer = self._layer_of[step]
        done = position.progress.done
        resumes = {step: cast(JSON, value)}
        if step not in done:
            skipped = tuple(
                s.name
                for layer_steps in self._layers[:layer]
                for s in layer_steps
                if s.name not in done
            )
            progress = replace(self._running((*done, *skipped)), resumes=resumes)
            return _Position(position.state, progress)
        latest = position.state.super_step
        for meta in reversed(await self.checkpointer.list(self.workflow_id, self.run_id)):
            snapshot = await self.checkpointer.load(meta.key)
            if snapshot is None:
                continue
            earlier = self._position(snapshot, latest)
            if step not in earlier.progress.done:
                kept = tuple(
                    s for s in earlier.progress.done if self._layer_of.get(s, layer) < layer
                )
                return replace(earlier, progress=replace(self._running(kept), resumes=resumes))
        raise CheckpointNotFoundError(self.workflow_id, self.run_id, 0)

    def _check_compatible(self, progress: Progress) -> None:
        """Raise WorkflowChangedError if ``progress`` cannot carry over to these steps."""
        if progress.workflow == self._fingerprint:
            return
        done = set(progress.done)
        changes: builtins.list[str] = []
        for name in progress.done:
            step = self._steps.get(name)
            if step is None:
                changes.append(f"step {name!r}, which already ran, is no longer in the workflow")
                continue
            changes += [
                f"step {dep!r} was added before {name!r}, which already ran"
                for dep in step.depends_on
                if dep not in done
            ]
        waiting = [] if progress.pause is None else [progress.pause.step]
        for name in dict.fromkeys([*waiting, *progress.pending]):
            step = self._steps.get(name)
            if step is None:
                changes.append(f"step {name!r}, where the run paused, is no longer in the workflow")
                continue
            changes += [
                f"step {dep!r} now runs before {name!r}, where the run paused"
                for dep in step.depends_on
                if dep not in done
            ]
        if changes:
            raise WorkflowChangedError(self.workflow_id, self.run_id, changes)

    def _next_layer(self, done: Iterable[str]) -> tuple[int, builtins.list[Step]] | None:
        """The first layer with steps not done yet, and those steps."""
        finished = set(done)
        for index, layer in enumerate(self._layers):
            todo = [step for step in layer if step.name not in finished]
            if todo:
                return index, todo
        return None

    def _running(self, done: tuple[str, ...]) -> Progress:
        return Progress(self._fingerprint, done)

    def _checked_edits(self, edits: Edits | None) -> dict[str, object]:
        changes = normalise_edits(edits)
        for key in changes:
            if key not in self.schema:
                raise UnknownChannelError(key, self.schema.keys())
        return changes

    def _edited(self, state: RunState, changes: dict[str, object]) -> RunState:
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
        return (
            f"StatefulRunner(workflow_id={self.workflow_id!r}, run_id={self.run_id!r}, "
            f"owner={self.owner!r})"
        )


K = TypeVar("K")
V = TypeVar("V")


def _without(mapping: Mapping[K, V], keys: Iterable[K]) -> dict[K, V]:
    """A copy of ``mapping`` without ``keys``."""
    dropped = set(keys)
    return {key: value for key, value in mapping.items() if key not in dropped}
