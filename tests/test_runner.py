"""StatefulRunner on every backend: layers, failures, races, pauses, resumes and forks."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest

from atomr_redis_state import (
    AppendList,
    CheckpointConflictError,
    Checkpointer,
    CheckpointKey,
    Hold,
    InMemoryCheckpointer,
    Interrupt,
    Lease,
    LeaseHeldError,
    RunNotFoundError,
    RunNotPausedError,
    RunOutcome,
    Snapshot,
    StatefulRunner,
    StateSchema,
    Step,
    StepContext,
    UnknownChannelError,
    WorkflowGraphError,
    Writes,
)
from tests.conftest import Backend

WF = "wf-runner"
RUN = "run-1"
SCHEMA = (
    StateSchema.builder()
    .add("log", AppendList(), [])
    .add_lww("answer")
    .add_lww("seen")
    .add_lww("topic")
    .build()
)


class ToolFailed(Exception):
    """A step's own failure, which the runner must let through unchanged."""


class Workflow:
    """Builds steps that log their name and count their calls."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def step(self, name: str, *deps: str) -> Step:
        async def fn(ctx: StepContext) -> Writes:
            self.calls[name] += 1
            return {"log": name}

        return Step(name, fn, deps)

    def asking(self, name: str, *deps: str) -> Step:
        """A step that asks a human, then writes the answer it was resumed with."""

        async def fn(ctx: StepContext) -> Writes:
            self.calls[name] += 1
            answer = ctx.interrupt({"question": f"{name}?", "log": ctx.read("log")})
            return [("log", name), ("answer", answer), ("seen", ctx.read("topic"))]

        return Step(name, fn, deps)

    def diamond(self) -> list[Step]:
        """a -> (b, c) -> d: layers (a), (b, c), (d)."""
        return [self.step("a"), self.step("b", "a"), self.step("c", "a"), self.step("d", "b", "c")]

    def with_question(self) -> list[Step]:
        """a -> (ask, b) -> d: ``ask`` pauses the run beside ``b``."""
        return [
            self.step("a"),
            self.asking("ask", "a"),
            self.step("b", "a"),
            self.step("d", "ask", "b"),
        ]


def runner(
    store: Checkpointer, steps: Iterable[Step], run_id: str = RUN, **options: Any
) -> StatefulRunner:
    return StatefulRunner(WF, run_id, steps, SCHEMA, store, **options)


def second_worker(backend: Backend, checkpointer: Checkpointer) -> Checkpointer:
    """Another worker's view of the same store: its own checkpointer where there can be one."""
    return backend.make() if backend.is_shared else checkpointer


async def history(store: Checkpointer, run_id: str = RUN) -> list[tuple[int, str]]:
    return [(m.super_step, m.label) for m in await store.list(WF, run_id)]


async def latest_label(store: Checkpointer, run_id: str = RUN) -> str:
    snapshot = await store.latest(WF, run_id)
    assert snapshot is not None
    return snapshot.label


# Layers and checkpoints


def test_layers_are_longest_path_depths_in_declaration_order() -> None:
    w = Workflow()
    steps = [
        w.step("a"),
        w.step("late", "a", "d"),
        w.step("b", "a"),
        w.step("d", "b", "c"),
        w.step("c", "a"),
        w.step("e", "a"),
        w.step("root"),
    ]
    assert runner(InMemoryCheckpointer(), steps).layers == (
        ("a", "root"),
        ("b", "c", "e"),
        ("d",),
        ("late",),
    )


async def test_a_run_checkpoints_its_input_then_one_super_step_per_layer(
    checkpointer: Checkpointer,
) -> None:
    outcome = await runner(checkpointer, Workflow().diamond()).start({"topic": "t"})
    assert await history(checkpointer) == [
        (0, "init"),
        (1, "layer:0"),
        (2, "layer:1"),
        (3, "layer:2"),
    ]
    assert outcome.completed
    assert outcome.super_step == 3
    assert outcome.state == {
        "log": ["a", "b", "c", "d"],
        "answer": None,
        "seen": None,
        "topic": "t",
    }


async def test_the_initial_snapshot_holds_the_input_written_through_the_reducers(
    checkpointer: Checkpointer,
) -> None:
    await runner(checkpointer, [], run_id="r0").start([("log", "x"), ("log", ["y"])])
    snapshot = await checkpointer.load(CheckpointKey(WF, "r0", 0))
    assert snapshot is not None
    assert snapshot.values["log"] == ["x", "y"]


async def test_the_runners_record_is_in_the_metadata_not_among_the_channels(
    checkpointer: Checkpointer,
) -> None:
    await runner(checkpointer, Workflow().with_question()).start({"topic": "t"})
    for meta in await checkpointer.list(WF, RUN):
        snapshot = await checkpointer.load(meta.key)
        assert snapshot is not None
        assert set(snapshot.values) == set(SCHEMA.keys())
        assert "runner" in snapshot.metadata


async def test_the_steps_of_a_layer_run_concurrently(checkpointer: Checkpointer) -> None:
    everyone = asyncio.Barrier(3)

    async def meet(ctx: StepContext) -> Writes:
        await asyncio.wait_for(everyone.wait(), 5)
        return {"log": ctx.step}

    steps = [Step(name, meet) for name in ("x", "y", "z")]
    outcome = await runner(checkpointer, steps).start()
    assert outcome.state["log"] == ["x", "y", "z"]


async def test_each_step_sees_the_state_as_it_was_before_its_layer(
    checkpointer: Checkpointer,
) -> None:
    async def write(ctx: StepContext) -> Writes:
        return {"topic": "written in layer 0"}

    async def read(ctx: StepContext) -> Writes:
        await asyncio.sleep(0.01)
        return {"seen": ctx.read("topic")}

    steps = [Step("write", write), Step("read", read)]
    outcome = await runner(checkpointer, steps).start({"topic": "before"})
    assert outcome.state["seen"] == "before"


async def test_writes_merge_in_declaration_order_whatever_order_steps_finish(
    checkpointer: Checkpointer,
) -> None:
    def sleeper(delay: float) -> Step:
        async def fn(ctx: StepContext) -> Writes:
            await asyncio.sleep(delay)
            return {"log": ctx.step, "answer": ctx.step}

        return Step(f"slept-{delay}", fn)

    outcome = await runner(checkpointer, [sleeper(0.03), sleeper(0.0), sleeper(0.015)]).start()
    assert outcome.state["log"] == ["slept-0.03", "slept-0.0", "slept-0.015"]
    assert outcome.state["answer"] == "slept-0.015"


async def test_a_step_can_write_one_channel_several_times(checkpointer: Checkpointer) -> None:
    async def twice(ctx: StepContext) -> Writes:
        return [("log", "one"), ("log", "two")]

    outcome = await runner(checkpointer, [Step("twice", twice)]).start()
    assert outcome.state["log"] == ["one", "two"]


async def test_on_checkpoint_sees_every_snapshot_saved(checkpointer: Checkpointer) -> None:
    seen: list[Snapshot] = []
    await runner(checkpointer, Workflow().diamond(), on_checkpoint=seen.append).start()
    assert [(s.key.super_step, s.label) for s in seen] == await history(checkpointer)


# Starting and continuing


async def test_starting_a_run_that_exists_is_a_conflict_and_runs_nothing(
    checkpointer: Checkpointer,
) -> None:
    w = Workflow()
    await runner(checkpointer, w.diamond()).start()
    w.calls.clear()
    with pytest.raises(CheckpointConflictError):
        await runner(checkpointer, w.diamond()).start({"topic": "again"})
    assert w.calls == {}
    assert len(await history(checkpointer)) == 4


async def test_run_of_a_run_without_checkpoints_raises_and_starts_nothing(
    checkpointer: Checkpointer,
) -> None:
    w = Workflow()
    with pytest.raises(RunNotFoundError):
        await runner(checkpointer, w.diamond()).run()
    assert w.calls == {}
    assert await checkpointer.list_runs(WF) == []


# Failures and resuming after them


def failing_diamond(w: Workflow, fail_times: int) -> list[Step]:
    """The diamond, where ``c`` fails its first ``fail_times`` calls."""

    async def flaky(ctx: StepContext) -> Writes:
        w.calls["c"] += 1
        if w.calls["c"] <= fail_times:
            raise ToolFailed("c failed")
        return {"log": "c"}

    return [w.step("a"), w.step("b", "a"), Step("c", flaky, ["a"]), w.step("d", "b", "c")]


async def test_a_failing_step_propagates_its_own_error(checkpointer: Checkpointer) -> None:
    with pytest.raises(ToolFailed, match="c failed"):
        await runner(checkpointer, failing_diamond(Workflow(), 1)).start()


async def test_a_failing_layer_is_not_checkpointed(checkpointer: Checkpointer) -> None:
    with pytest.raises(ToolFailed):
        await runner(checkpointer, failing_diamond(Workflow(), 1)).start()
    assert await history(checkpointer) == [(0, "init"), (1, "layer:0")]


async def test_a_failing_step_lets_its_running_siblings_finish(
    checkpointer: Checkpointer,
) -> None:
    started, cancelled, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow(ctx: StepContext) -> Writes:
        started.set()
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        finished.set()
        return {"log": "slow"}

    async def fail(ctx: StepContext) -> Writes:
        await started.wait()
        raise ToolFailed("boom")

    with pytest.raises(ToolFailed):
        await runner(checkpointer, [Step("slow", slow), Step("fail", fail)]).start()
    assert finished.is_set()
    assert not cancelled.is_set()


async def test_cancelling_a_run_cancels_its_running_steps(checkpointer: Checkpointer) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow(ctx: StepContext) -> Writes:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return None

    task = asyncio.create_task(runner(checkpointer, [Step("slow", slow)]).start())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()


async def test_run_after_a_failure_runs_only_what_did_not_finish(
    checkpointer: Checkpointer,
) -> None:
    w = Workflow()
    steps = failing_diamond(w, 1)
    with pytest.raises(ToolFailed):
        await runner(checkpointer, steps).start()
    outcome = await runner(checkpointer, steps).run()
    assert w.calls == {"a": 1, "b": 1, "c": 2, "d": 1}
    assert outcome.state["log"] == ["a", "b", "c", "d"]
    assert await history(checkpointer) == [
        (0, "init"),
        (1, "layer:0"),
        (2, "layer:1"),
        (3, "layer:2"),
    ]


async def test_rerunning_a_finished_run_executes_nothing_and_returns_its_state(
    checkpointer: Checkpointer,
) -> None:
    w = Workflow()
    first = await runner(checkpointer, w.diamond()).start()
    w.calls.clear()
    again = await runner(checkpointer, w.diamond()).run()
    assert w.calls == {}
    assert again == first
    assert len(await history(checkpointer)) == 4


async def test_a_step_writing_an_unknown_channel_fails_its_layer(
    checkpointer: Checkpointer,
) -> None:
    async def stray(ctx: StepContext) -> Writes:
        return {"nope": 1}

    with pytest.raises(UnknownChannelError, match="nope"):
        await runner(checkpointer, [Step("stray", stray)]).start()
    assert await history(checkpointer) == [(0, "init")]


async def test_a_step_returning_something_other_than_writes_fails_its_layer(
    checkpointer: Checkpointer,
) -> None:
    async def wrong(ctx: StepContext) -> Writes:
        return 42  # type: ignore[return-value]

    with pytest.raises(TypeError, match="step 'wrong' returned int"):
        await runner(checkpointer, [Step("wrong", wrong)]).start()
    assert await history(checkpointer) == [(0, "init")]


# Two workers on one run


async def test_two_runners_racing_on_one_run_apply_the_layer_once(
    backend: Backend, checkpointer: Checkpointer
) -> None:
    await checkpointer.save(Snapshot(CheckpointKey(WF, RUN, 0), {}, label="init"))
    loser_refused = asyncio.Event()
    ran: list[str] = []

    def racer(worker: str, store: Checkpointer) -> StatefulRunner:
        async def work(ctx: StepContext) -> Writes:
            ran.append(worker)
            await asyncio.wait_for(loser_refused.wait(), 5)
            return {"answer": worker}

        return runner(store, [Step("work", work)], owner=worker)

    async def race(worker: StatefulRunner) -> RunOutcome | LeaseHeldError:
        try:
            return await worker.run()
        except LeaseHeldError as exc:
            loser_refused.set()
            return exc

    results = await asyncio.gather(
        race(racer("w1", checkpointer)),
        race(racer("w2", second_worker(backend, checkpointer))),
    )
    [winner] = [r for r in results if isinstance(r, RunOutcome)]
    [loser] = [r for r in results if isinstance(r, LeaseHeldError)]
    assert ran == [winner.state["answer"]]
    assert loser.owner == winner.state["answer"]
    assert await history(checkpointer) == [(0, "init"), (1, "layer:0")]
    latest = await checkpointer.latest(WF, RUN)
    assert latest is not None
    assert latest.values["answer"] == winner.state["answer"]


async def test_a_second_worker_continues_a_run_from_the_store(
    backend: Backend, checkpointer: Checkpointer
) -> None:
    w = Workflow()
    with pytest.raises(ToolFailed):
        await runner(checkpointer, failing_diamond(w, 1)).start()
    other = second_worker(backend, checkpointer)
    outcome = await runner(other, failing_diamond(w, 0)).run()
    assert outcome.state["log"] == ["a", "b", "c", "d"]
    assert w.calls["a"] == 1


# Pauses


async def test_a_step_that_interrupts_pauses_the_run_with_its_payload(
    checkpointer: Checkpointer,
) -> None:
    outcome = await runner(checkpointer, Workflow().with_question()).start()
    assert outcome.paused
    assert outcome.pause is not None
    assert (outcome.pause.step, outcome.pause.kind, outcome.pause.layer) == ("ask", "inside", 1)
    assert outcome.pause.payload == {"question": "ask?", "log": ["a"]}
    assert outcome.state["log"] == ["a"]


async def test_a_pause_is_checkpointed_as_a_super_step_of_its_own(
    checkpointer: Checkpointer,
) -> None:
    await runner(checkpointer, Workflow().with_question()).start()
    assert await history(checkpointer) == [(0, "init"), (1, "layer:0"), (2, "interrupt:ask")]


async def test_a_pause_leaves_the_previous_layers_checkpoint_as_it_was(
    checkpointer: Checkpointer,
) -> None:
    saved: list[Snapshot] = []
    await runner(checkpointer, Workflow().with_question(), on_checkpoint=saved.append).start()
    layer_0 = next(s for s in saved if s.label == "layer:0")
    assert await checkpointer.load(layer_0.key) == layer_0


async def test_a_step_can_pause_by_raising_interrupt(checkpointer: Checkpointer) -> None:
    async def stop(ctx: StepContext) -> Writes:
        raise Interrupt("need a human")

    outcome = await runner(checkpointer, [Step("stop", stop)]).start()
    assert outcome.pause is not None
    assert outcome.pause.payload == "need a human"


async def test_run_on_a_paused_run_executes_nothing_and_reports_the_pause(
    checkpointer: Checkpointer,
) -> None:
    w = Workflow()
    first = await runner(checkpointer, w.with_question()).start()
    w.calls.clear()
    again = await runner(checkpointer, w.with_question()).run()
    assert w.calls == {}
    assert again == first


async def test_resume_gives_the_value_to_the_paused_step(checkpointer: Checkpointer) -> None:
    w = Workflow()
    await runner(checkpointer, w.with_question()).start()
    outcome = await runner(checkpointer, w.with_question()).resume("yes")
    assert outcome.completed
    assert outcome.state["answer"] == "yes"
    assert outcome.state["log"] == ["a", "ask", "b", "d"]


async def test_resume_checkpoints_the_layer_after_the_pause(checkpointer: Checkpointer) -> None:
    w = Workflow()
    await runner(checkpointer, w.with_question()).start()
    await runner(checkpointer, w.with_question()).resume("yes")
    assert await history(checkpointer) == [
        (0, "init"),
        (1, "layer:0"),
        (2, "interrupt:ask"),
        (3, "layer:1"),
        (4, "layer:2"),
    ]


async def test_resume_works_on_another_worker(backend: Backend, checkpointer: Checkpointer) -> None:
    await runner(checkpointer, Workflow().with_question()).start()
    other = second_worker(backend, checkpointer)
    outcome = await runner(other, Workflow().with_question()).resume("from elsewhere")
    assert outcome.state["answer"] == "from elsewhere"


async def test_the_steps_that_finished_beside_an_interrupt_are_not_run_again(
    checkpointer: Checkpointer,
) -> None:
    w = Workflow()
    await runner(checkpointer, w.with_question()).start()
    outcome = await runner(checkpointer, w.with_question()).resume("yes")
    assert w.calls == {"a": 1, "ask": 2, "b": 1, "d": 1}
    assert "b" in outcome.state["log"]  # type: ignore[operator]


async def test_resume_with_edits_changes_the_state_before_the_step_runs_again(
    checkpointer: Checkpointer,
) -> None:
    await runner(checkpointer, Workflow().with_question()).start({"topic": "old"})
    outcome = await runner(checkpointer, Workflow().with_question()).resume(
        "ok", edits={"topic": "edited"}
    )
    assert outcome.state["seen"] == "edited"
    assert outcome.state["topic"] == "edited"


async def test_resume_edits_replace_values_rather_than_going_through_reducers(
    checkpointer: Checkpointer,
) -> None:
    await runner(checkpointer, Workflow().with_question()).start()
    outcome = await runner(checkpointer, Workflow().with_question()).resume(
        "ok", edits=[("log", ["replaced"])]
    )
    assert outcome.state["log"] == ["replaced", "ask", "b", "d"]


async def test_resume_edits_of_an_unknown_channel_are_refused(checkpointer: Checkpointer) -> None:
    await runner(checkpointer, Workflow().with_question()).start()
    with pytest.raises(UnknownChannelError):
        await runner(checkpointer, Workflow().with_question()).resume(edits={"nope": 1})
    assert await latest_label(checkpointer) == "interrupt:ask"


async def test_resume_from_an_earlier_step_rolls_back_to_before_its_layer(
    checkpointer: Checkpointer,
) -> None:
    w = Workflow()
    await runner(checkpointer, w.with_question()).start()
    outcome = await runner(checkpointer, w.with_question()).resume("again", from_step="a")
    assert w.calls["a"] == 2
    assert outcome.pause is not None
    assert outcome.pause.step == "ask"
    assert outcome.state["log"] == ["a"]


async def test_resume_from_an_earlier_step_keeps_the_history(
    checkpointer: Checkpointer,
) -> None:
    w = Workflow()
    await runner(checkpointer, w.with_question()).start()
    await runner(checkpointer, w.with_question()).resume("again", from_step="a")
    assert await history(checkpointer) == [
        (0, "init"),
        (1, "layer:0"),
        (2, "interrupt:ask"),
        (3, "layer:0"),
        (4, "interrupt:ask"),
    ]


async def test_resume_from_a_later_step_skips_the_layers_before_it(
    checkpointer: Checkpointer,
) -> None:
    w = Workflow()
    await runner(checkpointer, w.with_question()).start()
    outcome = await runner(checkpointer, w.with_question()).resume(from_step="d")
    assert outcome.completed
    assert w.calls == {"a": 1, "ask": 1, "b": 1, "d": 1}
    assert outcome.state["log"] == ["a", "d"]


async def test_resume_from_an_unknown_step_is_refused(checkpointer: Checkpointer) -> None:
    await runner(checkpointer, Workflow().with_question()).start()
    with pytest.raises(WorkflowGraphError, match="'nope'"):
        await runner(checkpointer, Workflow().with_question()).resume(from_step="nope")


async def test_resume_of_a_run_that_is_not_paused_raises(checkpointer: Checkpointer) -> None:
    await runner(checkpointer, Workflow().diamond()).start()
    with pytest.raises(RunNotPausedError):
        await runner(checkpointer, Workflow().diamond()).resume("x")


async def test_resume_of_a_run_without_checkpoints_raises(checkpointer: Checkpointer) -> None:
    with pytest.raises(RunNotFoundError):
        await runner(checkpointer, Workflow().diamond()).resume("x")


async def test_two_interrupts_in_one_layer_pause_one_after_the_other(
    checkpointer: Checkpointer,
) -> None:
    w = Workflow()
    steps = [w.asking("first"), w.asking("second")]
    first = await runner(checkpointer, steps).start()
    second = await runner(checkpointer, steps).resume(1)
    done = await runner(checkpointer, steps).resume(2)
    assert [o.pause.step if o.pause else None for o in (first, second, done)] == [
        "first",
        "second",
        None,
    ]
    assert done.state["log"] == ["first", "second"]
    assert done.state["answer"] == 2


async def test_two_workers_resuming_one_pause_apply_it_once(
    backend: Backend, checkpointer: Checkpointer
) -> None:
    loser_refused = asyncio.Event()
    resumed_with: list[object] = []

    async def ask(ctx: StepContext) -> Writes:
        answer = ctx.interrupt("go?")
        resumed_with.append(answer)
        await asyncio.wait_for(loser_refused.wait(), 5)
        return {"answer": answer}

    steps = [Step("ask", ask)]
    await runner(checkpointer, steps).start()

    async def race(worker: StatefulRunner, value: str) -> RunOutcome | LeaseHeldError:
        try:
            return await worker.resume(value)
        except LeaseHeldError as exc:
            loser_refused.set()
            return exc

    results = await asyncio.gather(
        race(runner(checkpointer, steps), "w1"),
        race(runner(second_worker(backend, checkpointer), steps), "w2"),
    )
    [winner] = [r for r in results if isinstance(r, RunOutcome)]
    assert [type(r) for r in results].count(LeaseHeldError) == 1
    assert resumed_with == [winner.state["answer"]]
    assert await history(checkpointer) == [(0, "init"), (1, "interrupt:ask"), (2, "layer:0")]
    assert (await runner(checkpointer, steps).run()).state == winner.state


async def test_interrupt_before_pauses_before_the_step_runs(checkpointer: Checkpointer) -> None:
    w = Workflow()
    outcome = await runner(checkpointer, w.diamond(), interrupt_before={"c"}).start()
    assert outcome.pause is not None
    assert (outcome.pause.step, outcome.pause.kind, outcome.pause.payload) == ("c", "before", None)
    assert w.calls == {"a": 1}
    assert await latest_label(checkpointer) == "interrupt-before:c"


async def test_resume_after_interrupt_before_runs_the_layer_once(
    checkpointer: Checkpointer,
) -> None:
    w = Workflow()
    await runner(checkpointer, w.diamond(), interrupt_before={"c"}).start()
    outcome = await runner(checkpointer, w.diamond(), interrupt_before={"c"}).resume()
    assert outcome.completed
    assert w.calls == {"a": 1, "b": 1, "c": 1, "d": 1}


async def test_interrupt_after_pauses_once_the_layer_is_checkpointed(
    checkpointer: Checkpointer,
) -> None:
    outcome = await runner(checkpointer, Workflow().diamond(), interrupt_after={"b"}).start()
    assert outcome.pause is not None
    assert (outcome.pause.step, outcome.pause.kind, outcome.pause.layer) == ("b", "after", 1)
    assert outcome.state["log"] == ["a", "b", "c"]
    assert await history(checkpointer) == [
        (0, "init"),
        (1, "layer:0"),
        (2, "layer:1"),
        (3, "interrupt-after:b"),
    ]


async def test_resume_after_interrupt_after_runs_the_next_layer(
    checkpointer: Checkpointer,
) -> None:
    w = Workflow()
    await runner(checkpointer, w.diamond(), interrupt_after={"b"}).start()
    outcome = await runner(checkpointer, w.diamond(), interrupt_after={"b"}).resume()
    assert outcome.completed
    assert w.calls == {"a": 1, "b": 1, "c": 1, "d": 1}


async def test_resume_after_a_pause_after_the_last_layer_completes_the_run(
    checkpointer: Checkpointer,
) -> None:
    w = Workflow()
    await runner(checkpointer, w.diamond(), interrupt_after={"d"}).start()
    outcome = await runner(checkpointer, w.diamond(), interrupt_after={"d"}).resume(
        edits={"answer": "final"}
    )
    assert outcome.completed
    assert outcome.state["answer"] == "final"
    assert await latest_label(checkpointer) == "resume:d"
    assert (await runner(checkpointer, w.diamond(), interrupt_after={"d"}).run()).completed


class LosesTheFirstPause:
    """A store that fails the first pause save, as if its worker died just before it."""

    def __init__(self, inner: Checkpointer) -> None:
        self.inner = inner
        self.armed = True

    async def save(
        self,
        snapshot: Snapshot,
        *,
        exclusive: bool = False,
        lease: Lease | None = None,
        hold: Hold | None = None,
    ) -> None:
        if self.armed and snapshot.label.startswith("interrupt"):
            self.armed = False
            raise ConnectionError("worker died")
        await self.inner.save(snapshot, exclusive=exclusive, lease=lease, hold=hold)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_an_interrupt_after_lost_to_a_crash_is_recorded_by_the_next_run(
    checkpointer: Checkpointer,
) -> None:
    w = Workflow()
    crashing: Any = LosesTheFirstPause(checkpointer)
    with pytest.raises(ConnectionError):
        await runner(crashing, w.diamond(), interrupt_after={"b"}).start()
    outcome = await runner(checkpointer, w.diamond(), interrupt_after={"b"}).run()
    assert outcome.pause is not None
    assert outcome.pause.kind == "after"
    assert w.calls == {"a": 1, "b": 1, "c": 1}


# Time travel


async def test_a_fork_resumes_at_the_layer_after_the_forked_step(
    checkpointer: Checkpointer,
) -> None:
    w = Workflow()
    await runner(checkpointer, w.diamond()).start()
    fork_id = await checkpointer.fork(CheckpointKey(WF, RUN, 2), {"log": ["edited"]})
    w.calls.clear()
    outcome = await runner(checkpointer, w.diamond(), run_id=fork_id).run()
    assert w.calls == {"d": 1}
    assert outcome.state["log"] == ["edited", "d"]
    assert await history(checkpointer, fork_id) == [(2, f"fork-of:{RUN}"), (3, "layer:2")]


async def test_replaying_a_fork_leaves_its_source_run_untouched(
    checkpointer: Checkpointer,
) -> None:
    w = Workflow()
    source = await runner(checkpointer, w.diamond()).start()
    fork_id = await checkpointer.fork(CheckpointKey(WF, RUN, 1), {"topic": "branch"})
    await runner(checkpointer, w.diamond(), run_id=fork_id).run()
    assert await runner(checkpointer, w.diamond()).run() == source
    assert len(await history(checkpointer)) == 4


async def test_a_fork_of_a_pause_is_paused_and_resumes_on_its_own(
    checkpointer: Checkpointer,
) -> None:
    await runner(checkpointer, Workflow().with_question()).start()
    fork_id = await checkpointer.fork(CheckpointKey(WF, RUN, 2), {"topic": "forked"})
    fork = runner(checkpointer, Workflow().with_question(), run_id=fork_id)
    assert (await fork.run()).paused
    outcome = await fork.resume("branch answer")
    assert (outcome.state["answer"], outcome.state["seen"]) == ("branch answer", "forked")
    assert await latest_label(checkpointer) == "interrupt:ask"


# Invalid workflows: refused before anything runs


async def assert_nothing_saved(store: Checkpointer) -> None:
    assert await store.list_runs(WF) == []


async def test_a_cycle_is_an_error_before_anything_runs(checkpointer: Checkpointer) -> None:
    w = Workflow()
    steps = [w.step("a"), w.step("b", "a", "d"), w.step("c", "b"), w.step("d", "c")]
    with pytest.raises(WorkflowGraphError, match=r"cycle: 'b' -> 'd' -> 'c' -> 'b'"):
        runner(checkpointer, steps)
    await assert_nothing_saved(checkpointer)


async def test_a_step_depending_on_itself_is_a_cycle(checkpointer: Checkpointer) -> None:
    with pytest.raises(WorkflowGraphError, match="cycle"):
        runner(checkpointer, [Workflow().step("a", "a")])


async def test_a_missing_dependency_is_an_error_before_anything_runs(
    checkpointer: Checkpointer,
) -> None:
    w = Workflow()
    with pytest.raises(WorkflowGraphError, match="'b' depends on unknown step 'ghost'"):
        runner(checkpointer, [w.step("a"), w.step("b", "ghost")])
    await assert_nothing_saved(checkpointer)


async def test_two_steps_with_one_name_are_an_error(checkpointer: Checkpointer) -> None:
    with pytest.raises(WorkflowGraphError, match="two steps are named 'a'"):
        runner(checkpointer, [Workflow().step("a"), Workflow().step("a")])


@pytest.mark.parametrize("option", ["interrupt_before", "interrupt_after"])
async def test_an_interrupt_on_an_unknown_step_is_an_error(
    checkpointer: Checkpointer, option: str
) -> None:
    options: dict[str, Any] = {option: ["ghost"]}
    with pytest.raises(WorkflowGraphError, match=f"{option}: there is no step named 'ghost'"):
        runner(checkpointer, Workflow().diamond(), **options)


async def test_a_channel_named_like_the_old_reserved_one_is_allowed_and_round_trips(
    checkpointer: Checkpointer,
) -> None:
    schema = StateSchema.builder().add_lww("__runner__").add_lww("seen").build()

    async def write(ctx: StepContext) -> Writes:
        return {"__runner__": {"mine": True}}

    async def read(ctx: StepContext) -> Writes:
        return {"seen": ctx.read("__runner__")}

    steps = [Step("write", write), Step("read", read, ["write"])]

    def make() -> StatefulRunner:
        return StatefulRunner(WF, RUN, steps, schema, checkpointer, interrupt_before={"read"})

    paused = await make().start()
    assert paused.pause is not None
    assert paused.state["__runner__"] == {"mine": True}
    outcome = await make().resume()
    assert outcome.completed
    assert outcome.state == {"__runner__": {"mine": True}, "seen": {"mine": True}}
