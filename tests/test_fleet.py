"""The runner on a fleet, on every backend: leases, takeover, explicit starts, pauses that survive
TTL and code changes, run status, failures that keep finished work, retries and timeouts."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest

from atomr_redis_state import (
    AppendList,
    AtomrStateError,
    CheckpointConflictError,
    Checkpointer,
    CheckpointKey,
    Lease,
    LeaseHeldError,
    LeaseLostError,
    RetryPolicy,
    RunNotFoundError,
    RunNotPausedError,
    Snapshot,
    StatefulRunner,
    StateSchema,
    Step,
    StepContext,
    StepTimeoutError,
    WorkflowChangedError,
    Writes,
)
from tests.conftest import Backend

WF = "wf-fleet"
RUN = "run-1"
SHORT = 0.3
SCHEMA = (
    StateSchema.builder().add("log", AppendList(), []).add_lww("answer").add_lww("topic").build()
)


class ToolFailed(Exception):
    """A step's own failure."""


class Tools:
    """Steps that log their name and count their calls; some can be told to fail or block."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.contexts: list[StepContext] = []
        self.failures: Counter[str] = Counter()
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    def step(self, name: str, *deps: str, **options: Any) -> Step:
        async def fn(ctx: StepContext) -> Writes:
            self.calls[name] += 1
            self.contexts.append(ctx)
            self.entered.set()
            if self.gate is not None:
                await self.gate.wait()
            if self.failures[name] > 0:
                self.failures[name] -= 1
                raise ToolFailed(f"{name} failed")
            return {"log": name}

        return Step(name, fn, deps, **options)

    def asking(self, name: str, *deps: str) -> Step:
        async def fn(ctx: StepContext) -> Writes:
            self.calls[name] += 1
            answer = ctx.interrupt({"question": f"{name}?"})
            return [("log", name), ("answer", answer)]

        return Step(name, fn, deps)

    def chain(self) -> list[Step]:
        """a -> (b, c, e) -> d."""
        return [
            self.step("a"),
            self.step("b", "a"),
            self.step("c", "a"),
            self.step("e", "a"),
            self.step("d", "b", "c", "e"),
        ]

    def with_question(self) -> list[Step]:
        """a -> ask -> d."""
        return [self.step("a"), self.asking("ask", "a"), self.step("d", "ask")]


def runner(store: Checkpointer, steps: Iterable[Step], **options: Any) -> StatefulRunner:
    return StatefulRunner(WF, options.pop("run_id", RUN), steps, SCHEMA, store, **options)


async def labels(store: Checkpointer, run_id: str = RUN) -> list[str]:
    return [m.label for m in await store.list(WF, run_id)]


# One worker per run


async def test_of_two_workers_exactly_one_runs_the_layer(checkpointer: Checkpointer) -> None:
    tools = Tools()
    tools.gate = asyncio.Event()
    first = asyncio.create_task(runner(checkpointer, tools.chain(), owner="w1").start())
    await tools.entered.wait()
    with pytest.raises(LeaseHeldError) as held:
        await runner(checkpointer, tools.chain(), owner="w2").run()
    assert held.value.owner == "w1"
    assert tools.calls == {"a": 1}
    tools.gate.set()
    assert (await first).completed
    assert tools.calls == dict.fromkeys("abced", 1)


async def test_a_run_held_by_a_crashed_worker_is_taken_over_once_its_lease_passes(
    checkpointer: Checkpointer,
) -> None:
    tools = Tools()
    await runner(checkpointer, tools.chain(), interrupt_before={"d"}).start()
    crashed = await checkpointer.acquire_lease(WF, RUN, "crashed-worker", SHORT)
    with pytest.raises(LeaseHeldError):
        await runner(checkpointer, tools.chain()).resume()
    await asyncio.sleep(SHORT + 0.1)
    outcome = await runner(checkpointer, tools.chain()).resume()
    assert outcome.completed
    assert not await checkpointer.release_lease(crashed) or True  # its lease is long gone
    assert tools.calls["d"] == 1


class Crashed:
    """A worker's view of the store once its process died: no heartbeat, no release."""

    def __init__(self, store: Checkpointer) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def renew_lease(self, lease: Lease) -> Lease:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def release_lease(self, lease: Lease, **options: object) -> bool:
        return False


async def test_a_crashed_workers_run_is_taken_over_after_lease_ttl_not_before(
    checkpointer: Checkpointer,
) -> None:
    tools = Tools()
    tools.gate = asyncio.Event()
    crashed: Any = Crashed(checkpointer)
    doomed = asyncio.create_task(runner(crashed, tools.chain(), lease_ttl=SHORT).start())
    await tools.entered.wait()
    doomed.cancel()  # the process dies mid-layer: its lease is neither renewed nor released
    await asyncio.gather(doomed, return_exceptions=True)
    tools.gate.set()
    with pytest.raises(LeaseHeldError):
        await runner(checkpointer, tools.chain()).run()
    await asyncio.sleep(SHORT + 0.1)
    assert (await runner(checkpointer, tools.chain()).run()).completed
    assert tools.calls == {"a": 2, "b": 1, "c": 1, "e": 1, "d": 1}


async def test_the_lease_is_renewed_while_steps_run(checkpointer: Checkpointer) -> None:
    async def slow(ctx: StepContext) -> Writes:
        await asyncio.sleep(3 * SHORT)
        return {"log": "slow"}

    outcome = await runner(checkpointer, [Step("slow", slow)], lease_ttl=SHORT).start()
    assert outcome.state["log"] == ["slow"]


async def test_a_worker_that_stalled_past_its_lease_writes_nothing(
    checkpointer: Checkpointer,
) -> None:
    async def stall(ctx: StepContext) -> Writes:
        time.sleep(SHORT + 0.2)  # noqa: ASYNC251 (a stalled event loop: no heartbeat gets out)
        return {"log": "stalled"}

    await runner(checkpointer, [Step("a", Tools().step("a").fn)], interrupt_before={"a"}).start()
    stalled = runner(checkpointer, [Step("a", stall)], lease_ttl=SHORT)
    with pytest.raises(LeaseLostError):
        await stalled.resume()
    assert await labels(checkpointer) == ["init", "interrupt-before:a"]


async def test_the_lease_is_released_when_the_run_pauses_completes_or_fails(
    checkpointer: Checkpointer,
) -> None:
    tools = Tools()
    await runner(checkpointer, tools.with_question()).start()
    assert (await checkpointer.run_record(WF, RUN)).lease is None
    await runner(checkpointer, tools.with_question()).resume("yes")
    assert (await checkpointer.run_record(WF, RUN)).lease is None
    tools.failures["a"] = 1
    with pytest.raises(ToolFailed):
        await runner(checkpointer, tools.chain(), run_id="r2").start()
    assert (await checkpointer.run_record(WF, "r2")).lease is None


# A vanished run is an error


async def test_continuing_a_run_that_has_no_checkpoint_raises(checkpointer: Checkpointer) -> None:
    tools = Tools()
    with pytest.raises(RunNotFoundError):
        await runner(checkpointer, tools.chain()).run()
    with pytest.raises(RunNotFoundError):
        await runner(checkpointer, tools.with_question()).resume("yes")
    assert tools.calls == {}
    assert await checkpointer.list_runs(WF) == []


async def test_starting_a_run_twice_raises_a_conflict(checkpointer: Checkpointer) -> None:
    tools = Tools()
    await runner(checkpointer, tools.chain()).start({"topic": "t"})
    with pytest.raises(CheckpointConflictError):
        await runner(checkpointer, tools.chain()).start({"topic": "other"})
    assert tools.calls == dict.fromkeys("abced", 1)


async def test_a_run_deleted_mid_layer_does_not_come_back(checkpointer: Checkpointer) -> None:
    async def delete_it(ctx: StepContext) -> Writes:
        await checkpointer.delete_run(WF, RUN)
        return {"log": "deleted"}

    with pytest.raises(LeaseLostError):
        await runner(checkpointer, [Step("a", delete_it)]).start()
    assert await checkpointer.latest(WF, RUN) is None
    assert await checkpointer.list_runs(WF) == []
    with pytest.raises(RunNotFoundError):
        await runner(checkpointer, [Step("a", delete_it)]).run()


async def test_a_run_that_expired_while_its_worker_stalled_does_not_come_back(
    backend: Backend,
) -> None:
    store = backend.make(ttl=SHORT)

    async def outlive(ctx: StepContext) -> Writes:
        await asyncio.sleep(4 * SHORT + 0.2)
        return {"log": "late"}

    stalled: Any = Crashed(store)  # its lease is never renewed: the run expires with it
    with pytest.raises((LeaseLostError, RunNotFoundError)):
        await runner(stalled, [Step("a", outlive)], lease_ttl=SHORT).start()
    assert await store.latest(WF, RUN) is None
    assert await store.list_runs(WF) == []


# Pauses survive TTL


async def test_a_paused_run_outlives_the_ttl(backend: Backend) -> None:
    store = backend.make(ttl=SHORT)
    tools = Tools()
    await runner(store, tools.with_question()).start()
    await asyncio.sleep(2 * SHORT + 0.2)
    assert (await runner(store, tools.with_question()).status()).state == "paused"
    outcome = await runner(store, tools.with_question()).resume("yes")
    assert outcome.completed
    assert outcome.state["answer"] == "yes"


async def test_a_resumed_run_is_back_on_the_ttl(backend: Backend) -> None:
    store = backend.make(ttl=SHORT)
    tools = Tools()
    await runner(store, tools.with_question()).start()
    await asyncio.sleep(2 * SHORT + 0.2)
    # A lease keeps its run at least as long as itself: one shorter than the ttl here.
    await runner(store, tools.with_question(), lease_ttl=SHORT).resume("yes")
    await asyncio.sleep(2 * SHORT + 0.2)
    assert await store.latest(WF, RUN) is None


async def test_pause_ttl_bounds_how_long_a_pause_is_kept(backend: Backend) -> None:
    store = backend.make(ttl=SHORT)
    tools = Tools()
    await runner(store, tools.with_question(), pause_ttl=4 * SHORT).start()
    await asyncio.sleep(2 * SHORT + 0.2)
    assert (await runner(store, tools.with_question()).status()).state == "paused"
    await asyncio.sleep(2 * SHORT + 0.2)
    with pytest.raises(RunNotFoundError):
        await runner(store, tools.with_question()).resume("too late")


# Progress by step names, with the workflow's fingerprint


async def test_a_step_added_after_the_pause_runs_on_resume(checkpointer: Checkpointer) -> None:
    tools = Tools()
    await runner(checkpointer, tools.with_question()).start()
    changed = [*tools.with_question(), tools.step("extra", "d")]
    outcome = await runner(checkpointer, changed).resume("yes")
    assert outcome.completed
    assert outcome.state["answer"] == "yes"
    assert outcome.state["log"] == ["a", "ask", "d", "extra"]


async def test_a_step_added_before_the_paused_one_raises_and_nothing_runs(
    checkpointer: Checkpointer,
) -> None:
    tools = Tools()
    await runner(checkpointer, tools.with_question()).start()
    changed = [tools.step("a"), tools.step("new", "a"), tools.asking("ask", "new")]
    changed.append(tools.step("d", "ask"))
    before = Counter(tools.calls)
    with pytest.raises(WorkflowChangedError, match="'new'") as raised:
        await runner(checkpointer, changed).resume("yes")
    assert "ask" in str(raised.value)
    assert tools.calls == before
    assert (await runner(checkpointer, tools.with_question()).resume("yes")).completed


async def test_a_renamed_paused_step_raises(checkpointer: Checkpointer) -> None:
    tools = Tools()
    await runner(checkpointer, tools.with_question()).start()
    renamed = [tools.step("a"), tools.asking("question", "a"), tools.step("d", "question")]
    with pytest.raises(WorkflowChangedError, match="'ask'"):
        await runner(checkpointer, renamed).resume("yes")


async def test_a_step_that_ran_and_was_removed_raises(checkpointer: Checkpointer) -> None:
    tools = Tools()
    await runner(checkpointer, tools.chain(), interrupt_before={"d"}).start()
    without_b = [s for s in tools.chain() if s.name != "b"]
    without_b[-1] = tools.step("d", "c", "e")
    with pytest.raises(WorkflowChangedError, match="'b'"):
        await runner(checkpointer, without_b).resume()


async def test_the_same_workflow_rebuilt_is_compatible(checkpointer: Checkpointer) -> None:
    tools = Tools()
    first = runner(checkpointer, tools.with_question())
    await first.start()
    second = runner(checkpointer, Tools().with_question())
    assert second.fingerprint == first.fingerprint
    assert (await second.resume("yes")).completed


# Pauses


async def test_resuming_an_after_pause_honours_the_next_before_gate(
    checkpointer: Checkpointer,
) -> None:
    tools = Tools()
    options = {"interrupt_after": {"a"}, "interrupt_before": {"b"}}
    outcome = await runner(checkpointer, tools.chain(), **options).start()
    assert outcome.pause is not None
    assert (outcome.pause.step, outcome.pause.kind) == ("a", "after")
    outcome = await runner(checkpointer, tools.chain(), **options).resume()
    assert outcome.pause is not None
    assert (outcome.pause.step, outcome.pause.kind) == ("b", "before")
    assert tools.calls["b"] == 0
    assert (await runner(checkpointer, tools.chain(), **options).resume()).completed


async def test_before_and_after_pauses_of_one_step_have_their_own_labels(
    checkpointer: Checkpointer,
) -> None:
    tools = Tools()
    options = {"interrupt_after": {"b"}, "interrupt_before": {"b"}}
    await runner(checkpointer, tools.chain(), **options).start()
    await runner(checkpointer, tools.chain(), **options).resume()
    await runner(checkpointer, tools.chain(), **options).resume()
    assert await labels(checkpointer) == [
        "init",
        "layer:0",
        "interrupt-before:b",
        "layer:1",
        "interrupt-after:b",
        "layer:2",
    ]


async def test_resuming_from_an_earlier_step_rolls_the_state_back(
    checkpointer: Checkpointer,
) -> None:
    tools = Tools()
    await runner(checkpointer, tools.chain(), interrupt_before={"d"}).start()
    outcome = await runner(checkpointer, tools.chain()).resume(from_step="b")
    assert outcome.completed
    assert outcome.state["log"] == ["a", "b", "c", "e", "d"]
    assert await labels(checkpointer) == [
        "init",
        "layer:0",
        "layer:1",
        "interrupt-before:d",
        "layer:1",
        "layer:2",
    ]


# Status


async def test_status_of_a_run_that_does_not_exist(checkpointer: Checkpointer) -> None:
    status = await runner(checkpointer, Tools().chain()).status()
    assert status.state == "not_found"
    assert status.super_step is None


async def test_status_while_running_names_the_lease(checkpointer: Checkpointer) -> None:
    seen = []
    observer = runner(checkpointer, [])

    async def look(ctx: StepContext) -> Writes:
        seen.append(await observer.status())
        return {"log": "looked"}

    await runner(checkpointer, [Step("look", look)], owner="worker-7").start()
    (status,) = seen
    assert status.state == "running"
    assert status.super_step == 0
    assert status.lease is not None
    assert status.lease.owner == "worker-7"
    assert status.lease.expires_at_ms > 0


async def test_status_of_a_paused_run_names_the_pause(checkpointer: Checkpointer) -> None:
    tools = Tools()
    await runner(checkpointer, tools.with_question()).start()
    status = await runner(checkpointer, tools.with_question()).status()
    assert status.state == "paused"
    assert status.pause is not None
    assert (status.pause.step, status.pause.kind) == ("ask", "inside")
    assert status.pause.payload == {"question": "ask?"}
    assert status.label == "interrupt:ask"
    assert status.lease is None


async def test_status_of_a_completed_run(checkpointer: Checkpointer) -> None:
    await runner(checkpointer, Tools().chain()).start()
    status = await runner(checkpointer, Tools().chain()).status()
    assert (status.state, status.super_step, status.pause) == ("completed", 3, None)


async def test_a_run_whose_worker_died_mid_way_is_stalled_once_its_lease_passes(
    checkpointer: Checkpointer,
) -> None:
    tools = Tools()
    tools.gate = asyncio.Event()
    crashed: Any = Crashed(checkpointer)
    doomed = asyncio.create_task(runner(crashed, tools.chain(), lease_ttl=SHORT).start())
    await tools.entered.wait()
    doomed.cancel()
    await asyncio.gather(doomed, return_exceptions=True)
    assert (await runner(checkpointer, tools.chain()).status()).state == "running"
    await asyncio.sleep(SHORT + 0.1)
    status = await runner(checkpointer, tools.chain()).status()
    assert (status.state, status.lease) == ("stalled", None)


async def test_a_fork_nobody_has_run_is_forked_until_a_worker_runs_it(
    checkpointer: Checkpointer,
) -> None:
    tools = Tools()
    await runner(checkpointer, tools.chain()).start()
    fork = await checkpointer.fork(CheckpointKey(WF, RUN, 1))
    assert (await runner(checkpointer, tools.chain(), run_id=fork).status()).state == "forked"
    await runner(checkpointer, tools.chain(), run_id=fork).run()
    assert (await runner(checkpointer, tools.chain(), run_id=fork).status()).state == "completed"


async def test_a_run_written_with_plain_save_is_idle_unless_leased(
    checkpointer: Checkpointer,
) -> None:
    await checkpointer.save(Snapshot(CheckpointKey(WF, RUN, 0), {"log": []}))
    assert (await runner(checkpointer, []).status()).state == "idle"
    await checkpointer.acquire_lease(WF, RUN, "my-own-worker", 30)
    assert (await runner(checkpointer, []).status()).state == "running"


async def test_status_of_a_failed_run_names_the_error(checkpointer: Checkpointer) -> None:
    tools = Tools()
    tools.failures["c"] = 1
    with pytest.raises(ToolFailed):
        await runner(checkpointer, tools.chain()).start()
    status = await runner(checkpointer, tools.chain()).status()
    assert status.state == "failed"
    assert status.last_error is not None
    assert (status.last_error.step, status.last_error.error_type) == ("c", "ToolFailed")
    assert status.last_error.message == "c failed"
    assert status.super_step == 1
    await runner(checkpointer, tools.chain()).run()
    assert (await runner(checkpointer, tools.chain()).status()).state == "completed"


async def test_the_bookkeeping_stays_out_of_the_values(checkpointer: Checkpointer) -> None:
    tools = Tools()
    await runner(checkpointer, tools.with_question()).start({"topic": "t"})
    latest = await checkpointer.latest(WF, RUN)
    assert latest is not None
    assert set(latest.values) == {"log", "answer", "topic"}
    assert "runner" in latest.metadata
    forked = await checkpointer.fork(latest.key)
    fork = await checkpointer.latest(WF, forked)
    assert fork is not None
    assert set(fork.values) == {"log", "answer", "topic"}
    assert (await runner(checkpointer, tools.with_question(), run_id=forked).resume("y")).completed


# Failures keep finished work; retries and timeouts


async def test_a_failed_layer_keeps_its_finished_steps(checkpointer: Checkpointer) -> None:
    tools = Tools()
    tools.failures["c"] = 1
    with pytest.raises(ToolFailed):
        await runner(checkpointer, tools.chain()).start()
    assert tools.calls == {"a": 1, "b": 1, "c": 1, "e": 1}
    assert await labels(checkpointer) == ["init", "layer:0"]
    outcome = await runner(checkpointer, tools.chain(), owner="other").run()
    assert tools.calls == {"a": 1, "b": 1, "c": 2, "e": 1, "d": 1}
    assert outcome.state["log"] == ["a", "b", "c", "e", "d"]


async def test_a_refused_call_keeps_the_finished_work_of_a_failed_layer(
    checkpointer: Checkpointer,
) -> None:
    tools = Tools()
    tools.failures["c"] = 1
    with pytest.raises(ToolFailed):
        await runner(checkpointer, tools.chain()).start()
    with pytest.raises(RunNotPausedError):
        await runner(checkpointer, tools.chain()).resume("not paused")
    with pytest.raises(CheckpointConflictError):
        await runner(checkpointer, tools.chain()).start()
    assert (await runner(checkpointer, tools.chain()).status()).state == "failed"
    await runner(checkpointer, tools.chain()).run()
    assert tools.calls == {"a": 1, "b": 1, "c": 2, "e": 1, "d": 1}


async def test_a_step_is_retried_by_its_policy(checkpointer: Checkpointer) -> None:
    tools = Tools()
    tools.failures["b"] = 2
    policy = RetryPolicy(max_attempts=3, initial_delay=0.01, jitter=False)
    steps = [tools.step("a"), tools.step("b", "a", retry=policy)]
    outcome = await runner(checkpointer, steps).start()
    assert outcome.completed
    assert tools.calls["b"] == 3
    assert [c.attempt for c in tools.contexts if c.step == "b"] == [1, 2, 3]
    assert await labels(checkpointer) == ["init", "layer:0", "layer:1"]


async def test_the_runner_retry_policy_is_the_default(checkpointer: Checkpointer) -> None:
    tools = Tools()
    tools.failures["a"] = 1
    retry = RetryPolicy(max_attempts=2, initial_delay=0)
    assert (await runner(checkpointer, [tools.step("a")], retry=retry).start()).completed
    assert tools.calls["a"] == 2


async def test_attempts_count_on_over_retries_of_the_layer(checkpointer: Checkpointer) -> None:
    tools = Tools()
    tools.failures["a"] = 1
    with pytest.raises(ToolFailed):
        await runner(checkpointer, [tools.step("a")]).start()
    await runner(checkpointer, [tools.step("a")]).run()
    assert [c.attempt for c in tools.contexts] == [1, 2]
    assert len({(c.run_id, c.super_step, c.step) for c in tools.contexts}) == 1


async def test_a_step_that_times_out_fails_with_a_typed_error(checkpointer: Checkpointer) -> None:
    async def slow(ctx: StepContext) -> Writes:
        await asyncio.sleep(5)
        return None

    with pytest.raises(StepTimeoutError, match="'slow'") as raised:
        await runner(checkpointer, [Step("slow", slow, timeout=0.05)]).start()
    assert isinstance(raised.value, TimeoutError)
    assert isinstance(raised.value, AtomrStateError)


async def test_a_timed_out_attempt_is_retried(checkpointer: Checkpointer) -> None:
    attempts = []

    async def slow_once(ctx: StepContext) -> Writes:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            await asyncio.sleep(5)
        return {"log": "ok"}

    step = Step("s", slow_once, timeout=0.05, retry=RetryPolicy(max_attempts=2, initial_delay=0))
    assert (await runner(checkpointer, [step]).start()).completed
    assert attempts == [1, 2]


def test_retry_policies_are_checked() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="initial_delay"):
        RetryPolicy(initial_delay=-1)
    assert RetryPolicy(initial_delay=1, multiplier=2, max_delay=3, jitter=False).delay(5) == 3


# Steps


def test_a_sync_step_function_is_refused_when_the_step_is_built() -> None:
    def blocking(ctx: StepContext) -> Writes:
        return None

    with pytest.raises(TypeError, match=r"'fetch'.*async"):
        Step("fetch", blocking)  # type: ignore[arg-type]


async def test_a_threaded_step_runs_sync_code(checkpointer: Checkpointer) -> None:
    def blocking(ctx: StepContext) -> Writes:
        time.sleep(0.01)
        return {"log": f"thread:{ctx.step}"}

    outcome = await runner(checkpointer, [Step.threaded("fetch", blocking)]).start()
    assert outcome.state["log"] == ["thread:fetch"]


async def test_the_step_context_names_the_run(checkpointer: Checkpointer) -> None:
    tools = Tools()
    await runner(checkpointer, tools.chain()).start()
    b = next(c for c in tools.contexts if c.step == "b")
    assert (b.workflow_id, b.run_id, b.super_step, b.attempt, b.layer) == (WF, RUN, 1, 1, 1)


async def test_an_async_on_checkpoint_is_awaited(checkpointer: Checkpointer) -> None:
    seen: list[Snapshot] = []

    async def record(snapshot: Snapshot) -> None:
        await asyncio.sleep(0)
        seen.append(snapshot)

    await runner(checkpointer, Tools().chain(), on_checkpoint=record).start()
    assert [s.label for s in seen] == ["init", "layer:0", "layer:1", "layer:2"]
    assert seen[-1].key == CheckpointKey(WF, RUN, 3)


async def test_a_stale_worker_wins_nothing_on_a_trimmed_run(backend: Backend) -> None:
    store = backend.make(keep_last=1)
    reported: list[Snapshot] = []

    async def stall(ctx: StepContext) -> Writes:
        time.sleep(SHORT + 0.2)  # noqa: ASYNC251 (a stalled event loop: no heartbeat gets out)
        return {"log": "stale"}

    tools = Tools()
    await runner(store, tools.chain(), interrupt_before={"b"}).start()
    stale_steps = [*tools.chain()]
    stale_steps[1] = Step("b", stall, ["a"])
    stale = runner(store, stale_steps, lease_ttl=SHORT, on_checkpoint=reported.append)
    with pytest.raises(LeaseLostError):
        await stale.resume()
    assert reported == []
    assert (await runner(store, tools.chain()).resume()).completed
    assert await labels(store) == ["layer:2"]


def test_the_new_errors_are_library_errors() -> None:
    for error in (LeaseHeldError, LeaseLostError, RunNotFoundError, WorkflowChangedError):
        assert issubclass(error, AtomrStateError)


async def test_two_concurrent_calls_on_one_runner_run_the_layer_once(
    checkpointer: Checkpointer,
) -> None:
    tools = Tools()
    await runner(checkpointer, tools.chain(), interrupt_before={"b"}).start()
    one = runner(checkpointer, tools.chain())
    outcomes = await asyncio.gather(one.resume(), one.resume(), return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == ["LeaseHeldError", "RunOutcome"]
    assert tools.calls == dict.fromkeys("abced", 1)


async def test_attempts_add_up_over_retries_of_a_failing_layer(checkpointer: Checkpointer) -> None:
    tools = Tools()
    tools.failures["a"] = 3
    with pytest.raises(ToolFailed):
        await runner(checkpointer, [tools.step("a")]).start()
    for _ in range(2):
        with pytest.raises(ToolFailed):
            await runner(checkpointer, [tools.step("a")]).run()
    status = await runner(checkpointer, [tools.step("a")]).status()
    assert status.last_error is not None
    assert status.last_error.attempts == 3
    assert [c.attempt for c in tools.contexts] == [1, 2, 3]
