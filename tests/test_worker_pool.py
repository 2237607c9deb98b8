"""The fleet on every backend: submit from a client, workers claim and run, retries with
backoff, dead letters, blocked runs, answers, cancel, graceful shutdown, takeover, heartbeats."""

from __future__ import annotations

import asyncio
import sys
import time
import types
from collections import Counter
from typing import Any

import pytest

from atomr_redis_state import (
    AppendList,
    Checkpointer,
    InMemoryCheckpointer,
    StateSchema,
    Step,
    StepContext,
    Writes,
)
from atomr_redis_state.fleet import Backoff, Fleet, Registry, Worker, Workflow, load_target

WF = "wf-pool"
SCHEMA = StateSchema.builder().add("log", AppendList(), []).add_lww("answer").build()
FAST = Backoff(base=0.01, cap=0.05)


class Tools:
    """Steps that count their calls; some fail a given number of times, or wait on a gate."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self.failures: Counter[str] = Counter()
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.running = 0
        self.most_running = 0

    def open_gate(self) -> None:
        assert self.gate is not None
        self.gate.set()

    def step(self, name: str, *deps: str) -> Step:
        async def fn(ctx: StepContext) -> Writes:
            self.calls[(ctx.run_id, name)] += 1
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self.entered.set()
            try:
                if self.gate is not None:
                    await self.gate.wait()
                else:
                    await asyncio.sleep(0.01)
                if self.failures[name] > 0:
                    self.failures[name] -= 1
                    raise RuntimeError(f"{name} failed")
            finally:
                self.running -= 1
            return {"log": name}

        return Step(name, fn, deps)

    def asking(self, name: str, *deps: str) -> Step:
        async def fn(ctx: StepContext) -> Writes:
            self.calls[(ctx.run_id, name)] += 1
            answer = ctx.interrupt({"question": name})
            if self.failures[name] > 0:
                self.failures[name] -= 1
                raise RuntimeError(f"{name} failed")
            return [("log", name), ("answer", answer)]

        return Step(name, fn, deps)

    def workflow(self, *steps: Step, **options: Any) -> Workflow:
        steps = steps or (self.step("a"), self.step("b", "a"))
        return Workflow(WF, steps, SCHEMA, backoff=options.pop("backoff", FAST), **options)


async def gated_run(store: Checkpointer) -> tuple[Tools, Workflow, Fleet, str]:
    """A submitted run of a -> b whose steps wait at a gate the test opens."""
    tools = Tools()
    tools.gate = asyncio.Event()
    workflow = tools.workflow()
    fleet = Fleet(store, workflow)
    return tools, workflow, fleet, await fleet.submit(workflow)


def worker(store: Checkpointer, workflow: Workflow, **options: Any) -> Worker:
    options.setdefault("heartbeat_every", 0.2)
    options.setdefault("poll", 0.1)
    return Worker(store, [workflow], **options)


async def test_a_submitted_run_is_run_by_a_worker(checkpointer: Checkpointer) -> None:
    tools = Tools()
    workflow = tools.workflow()
    fleet = Fleet(checkpointer, [workflow])
    run_id = await fleet.submit(WF, {"log": "in"})
    assert (await fleet.status(workflow, run_id)).state == "queued"
    assert tools.calls == Counter()  # submitting runs nothing
    await worker(checkpointer, workflow).run(burst=True)
    status = await fleet.status(workflow, run_id)
    assert status.state == "completed"
    latest = await checkpointer.latest(WF, run_id)
    assert latest is not None
    assert latest.values["log"] == ["in", "a", "b"]
    assert tools.calls == {(run_id, "a"): 1, (run_id, "b"): 1}


async def test_submitting_with_the_same_run_id_runs_it_once(checkpointer: Checkpointer) -> None:
    tools = Tools()
    workflow = tools.workflow()
    fleet = Fleet(checkpointer, workflow)
    assert await fleet.submit(workflow, run_id="order-7") == "order-7"
    assert await fleet.submit(workflow, run_id="order-7") == "order-7"
    await worker(checkpointer, workflow).run(burst=True)
    assert await fleet.submit(workflow, run_id="order-7") == "order-7"
    await worker(checkpointer, workflow).run(burst=True)
    assert tools.calls == {("order-7", "a"): 1, ("order-7", "b"): 1}


async def test_many_runs_are_shared_by_workers_and_each_step_runs_once(
    checkpointer: Checkpointer,
) -> None:
    tools = Tools()
    workflow = tools.workflow()
    fleet = Fleet(checkpointer, workflow)
    runs = [await fleet.submit(workflow, run_id=f"r{i}") for i in range(12)]
    pool = [worker(checkpointer, workflow, concurrency=3) for _ in range(3)]
    await asyncio.gather(*(w.run(burst=True) for w in pool))
    assert all(count == 1 for count in tools.calls.values())
    assert len(tools.calls) == 2 * len(runs)
    assert sum(w.stats.completed for w in pool) == len(runs)
    for run_id in runs:
        assert (await fleet.status(workflow, run_id)).state == "completed"


async def test_a_worker_runs_at_most_its_concurrency(checkpointer: Checkpointer) -> None:
    tools = Tools()
    tools.gate = asyncio.Event()
    workflow = tools.workflow(tools.step("a"))
    fleet = Fleet(checkpointer, workflow)
    for i in range(8):
        await fleet.submit(workflow, run_id=f"r{i}")
    running = asyncio.ensure_future(worker(checkpointer, workflow, concurrency=3).run(burst=True))
    await _until_running(tools, 3)
    await asyncio.sleep(0.5)  # time for a fourth claim, were the limit not there
    assert tools.running == 3
    tools.open_gate()
    await asyncio.wait_for(running, 30)
    assert tools.most_running == 3
    assert len(tools.calls) == 8


async def test_a_failed_run_is_retried_with_backoff_and_completes(
    checkpointer: Checkpointer,
) -> None:
    tools = Tools()
    tools.failures["b"] = 2
    workflow = tools.workflow(max_attempts=5)
    fleet = Fleet(checkpointer, workflow)
    run_id = await fleet.submit(workflow)
    pool = worker(checkpointer, workflow)
    await asyncio.wait_for(_until_settled(pool, fleet, run_id, {"completed"}), 20)
    assert pool.stats.retried == 2
    assert tools.calls[(run_id, "a")] == 1  # the finished layer is never run again
    assert tools.calls[(run_id, "b")] == 3
    status = await fleet.status(workflow, run_id)
    assert status.queue is not None
    assert status.queue.attempts == 2


async def test_a_run_out_of_attempts_is_a_dead_letter_in_its_status(
    checkpointer: Checkpointer,
) -> None:
    tools = Tools()
    tools.failures["b"] = 100
    workflow = tools.workflow(max_attempts=3)
    fleet = Fleet(checkpointer, workflow)
    run_id = await fleet.submit(workflow)
    pool = worker(checkpointer, workflow)
    await asyncio.wait_for(_until_settled(pool, fleet, run_id, {"failed"}), 20)
    status = await fleet.status(workflow, run_id)
    assert status.state == "failed"
    assert status.queue is not None
    assert status.queue.attempts == 3
    assert status.queue.reason == {"error": "RuntimeError", "message": "b failed"}
    assert tools.calls[(run_id, "b")] == 3
    assert (await fleet.depth(workflow)).failed == 1
    # Re-submitted by hand once fixed, it completes.
    tools.failures["b"] = 0
    assert await fleet.requeue(workflow, run_id) == "queued"
    await worker(checkpointer, workflow).run(burst=True)
    assert (await fleet.status(workflow, run_id)).state == "completed"


async def test_a_run_of_a_changed_workflow_is_blocked_until_requeued(
    checkpointer: Checkpointer,
) -> None:
    tools = Tools()
    before = tools.workflow(tools.step("a"), tools.asking("ask", "a"))
    fleet = Fleet(checkpointer, before)
    run_id = await fleet.submit(before)
    await worker(checkpointer, before).run(burst=True)
    assert (await fleet.status(before, run_id)).state == "paused"
    # A deploy removes the step the run paused at.
    changed = tools.workflow(tools.step("a"), tools.step("other", "a"))
    await fleet.resume(changed, run_id, "yes")
    await worker(checkpointer, changed).run(burst=True)
    status = await fleet.status(changed, run_id)
    assert status.state == "blocked"
    assert status.queue is not None
    reason = status.queue.reason
    assert isinstance(reason, dict)
    assert reason["error"] == "WorkflowChangedError"
    assert "ask" in str(reason["changes"])
    await worker(checkpointer, changed).run(burst=True)
    assert (await fleet.status(changed, run_id)).state == "blocked"  # not retried by itself
    # Rolled back: requeued by hand, it resumes with the answer it was given.
    assert await fleet.requeue(before, run_id) == "queued"
    await worker(checkpointer, before).run(burst=True)
    assert (await fleet.status(before, run_id)).state == "completed"
    latest = await checkpointer.latest(WF, run_id)
    assert latest is not None
    assert latest.values["answer"] == "yes"


async def test_an_answer_resumes_a_paused_run_on_a_worker(checkpointer: Checkpointer) -> None:
    tools = Tools()
    workflow = tools.workflow(tools.step("a"), tools.asking("ask", "a"), tools.step("d", "ask"))
    fleet = Fleet(checkpointer, workflow)
    run_id = await fleet.submit(workflow)
    await worker(checkpointer, workflow).run(burst=True)
    status = await fleet.status(workflow, run_id)
    assert status.state == "paused"
    assert status.pause is not None
    assert status.pause.payload == {"question": "ask"}
    assert await fleet.resume(workflow, run_id, {"approved": True}) == "queued"
    await worker(checkpointer, workflow).run(burst=True)
    assert (await fleet.status(workflow, run_id)).state == "completed"
    latest = await checkpointer.latest(WF, run_id)
    assert latest is not None
    assert latest.values["answer"] == {"approved": True}
    assert tools.calls[(run_id, "a")] == 1


async def test_an_answer_survives_a_failed_attempt(checkpointer: Checkpointer) -> None:
    tools = Tools()
    workflow = tools.workflow(tools.step("a"), tools.asking("ask", "a"))
    fleet = Fleet(checkpointer, workflow)
    run_id = await fleet.submit(workflow)
    await worker(checkpointer, workflow).run(burst=True)
    tools.failures["ask"] = 1
    await fleet.resume(workflow, run_id, "yes")
    pool = worker(checkpointer, workflow)
    await asyncio.wait_for(_until_settled(pool, fleet, run_id, {"completed"}), 20)
    assert pool.stats.retried == 1
    latest = await checkpointer.latest(WF, run_id)
    assert latest is not None
    assert latest.values["answer"] == "yes"


async def test_a_cancelled_run_never_runs(checkpointer: Checkpointer) -> None:
    tools = Tools()
    workflow = tools.workflow()
    fleet = Fleet(checkpointer, workflow)
    run_id = await fleet.submit(workflow)
    assert await fleet.cancel(workflow, run_id) == "cancelled"
    await worker(checkpointer, workflow).run(burst=True)
    assert tools.calls == Counter()
    assert (await fleet.status(workflow, run_id)).state == "cancelled"


async def test_a_run_cancelled_while_running_ends_cancelled(checkpointer: Checkpointer) -> None:
    tools, workflow, fleet, run_id = await gated_run(checkpointer)
    tools.failures["a"] = 1  # the attempt in flight fails: a cancelled run is not retried
    pool = worker(checkpointer, workflow)
    running = asyncio.ensure_future(pool.run(burst=True))
    await tools.entered.wait()
    assert await fleet.cancel(workflow, run_id) == "running"
    tools.open_gate()
    await asyncio.wait_for(running, 10)
    assert (await fleet.status(workflow, run_id)).state == "cancelled"
    assert pool.stats.cancelled == 1


async def test_a_graceful_stop_releases_the_run_at_its_next_checkpoint(
    checkpointer: Checkpointer,
) -> None:
    tools, workflow, fleet, run_id = await gated_run(checkpointer)
    first = worker(checkpointer, workflow, worker_id="first")
    running = asyncio.ensure_future(first.run())
    await tools.entered.wait()
    first.stop()
    tools.open_gate()  # layer "a" finishes and is checkpointed; then the run is let go
    await asyncio.wait_for(running, 10)
    assert first.stats.released == 1
    status = await fleet.status(workflow, run_id)
    assert status.state == "queued"
    assert status.lease is None
    second = worker(checkpointer, workflow, worker_id="second")
    await asyncio.wait_for(second.run(burst=True), 10)
    assert (await fleet.status(workflow, run_id)).state == "completed"
    assert tools.calls == {(run_id, "a"): 1, (run_id, "b"): 1}


async def test_a_stop_past_the_grace_period_releases_the_run_at_once(
    checkpointer: Checkpointer,
) -> None:
    tools, workflow, fleet, run_id = await gated_run(checkpointer)  # the gate stays shut
    pool = worker(checkpointer, workflow, grace=0.2)
    running = asyncio.ensure_future(pool.run())
    await tools.entered.wait()
    pool.stop()
    await asyncio.wait_for(running, 10)
    status = await fleet.status(workflow, run_id)
    assert status.state == "queued"
    assert status.lease is None  # released, not left to expire
    tools.gate = None
    await asyncio.wait_for(worker(checkpointer, workflow).run(burst=True), 10)
    assert (await fleet.status(workflow, run_id)).state == "completed"


async def test_a_crashed_workers_run_is_taken_over_within_a_second_of_its_lease(
    checkpointer: Checkpointer,
) -> None:
    tools = Tools()
    workflow = tools.workflow()
    fleet = Fleet(checkpointer, workflow)
    run_id = await fleet.submit(workflow)
    lease_ttl = 1.0
    crashed = await checkpointer.claim(WF, "crashed", lease_ttl)  # then it dies
    assert crashed is not None
    pool = worker(checkpointer, workflow, lease_ttl=lease_ttl, poll=1.0)
    started = time.monotonic()
    running = asyncio.ensure_future(pool.run())
    try:
        await asyncio.wait_for(_until_settled(pool, fleet, run_id, {"completed"}, run=False), 10)
    finally:
        pool.stop()
        await running
    assert time.monotonic() - started < lease_ttl + 1.0 + 0.5  # + the run itself
    assert pool.stats.taken_over == 1


async def test_a_live_worker_is_listed_with_its_runs_and_gone_after_it_stops(
    checkpointer: Checkpointer,
) -> None:
    tools, workflow, _, run_id = await gated_run(checkpointer)
    pool = worker(checkpointer, workflow, worker_id="w-1")
    running = asyncio.ensure_future(pool.run())
    await tools.entered.wait()
    await asyncio.sleep(0.3)  # a heartbeat after the claim
    workers = await checkpointer.workers()
    assert [w.worker_id for w in workers] == ["w-1"]
    info = workers[0].info
    assert isinstance(info, dict)
    assert info["runs"] == [{"workflow_id": WF, "run_id": run_id}]
    assert info["workflows"] == [WF]
    pool.stop()
    tools.open_gate()
    await asyncio.wait_for(running, 10)
    assert await checkpointer.workers() == []


async def test_a_worker_target_is_loaded_from_a_module(monkeypatch: pytest.MonkeyPatch) -> None:
    tools = Tools()
    workflow = tools.workflow()
    module = types.ModuleType("pool_target")
    module.__dict__.update(
        registry=Registry([workflow]),
        workflows=[workflow],
        one=workflow,
        factory=lambda: [workflow],
        nothing=42,
    )
    monkeypatch.setitem(sys.modules, "pool_target", module)
    for attribute in ("registry", "workflows", "one", "factory"):
        assert list(await load_target(f"pool_target:{attribute}")) == [WF]
    with pytest.raises(ValueError, match=r"package\.module:attribute"):
        await load_target("pool_target")
    with pytest.raises(ValueError, match="no attribute"):
        await load_target("pool_target:missing")
    with pytest.raises(ValueError, match="cannot import"):
        await load_target("no_such_module_here:x")
    with pytest.raises(ValueError, match="not int"):
        await load_target("pool_target:nothing")


def test_a_workflow_is_checked_when_defined() -> None:
    tools = Tools()
    with pytest.raises(ValueError, match="max_attempts"):
        tools.workflow(max_attempts=0)
    with pytest.raises(ValueError, match="registered twice"):
        Registry([tools.workflow(), tools.workflow()])
    with pytest.raises(Exception, match="no step named"):
        tools.workflow(interrupt_before={"nope"})


def test_backoff_grows_exponentially_with_jitter() -> None:
    backoff = Backoff(base=1.0, cap=60.0)
    for failures, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (10, 60.0)):
        delays = [backoff.delay(failures) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


async def _until_running(tools: Tools, count: int) -> None:
    """Wait until ``count`` steps are running at once."""
    for _ in range(400):
        if tools.running >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{count} steps never ran at once")


async def _until_settled(
    pool: Worker, fleet: Fleet, run_id: str, states: set[str], *, run: bool = True
) -> None:
    """Run ``pool`` (unless ``run`` is False: it runs already) until the run is in one of
    ``states``, by its status and by its queue record (between a runner's release of its lease,
    with a failure note, and its worker's ``finish``, the status already says ``failed``)."""
    running = asyncio.ensure_future(pool.run()) if run else None
    try:
        for _ in range(1000):
            status = await fleet.status(WF, run_id)
            if status.state in states and (status.queue is None or status.queue.state in states):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"run {run_id} never reached {states}")
    finally:
        if running is not None:
            pool.stop()
            await running


async def test_max_in_flight_caps_the_whole_fleet(checkpointer: Checkpointer) -> None:
    tools = Tools()
    tools.gate = asyncio.Event()
    workflow = tools.workflow(tools.step("a"), max_in_flight=2)
    fleet = Fleet(checkpointer, workflow)
    runs = [await fleet.submit(workflow, run_id=f"r{i}") for i in range(6)]
    pool = [worker(checkpointer, workflow, concurrency=4) for _ in range(2)]
    running = [asyncio.ensure_future(w.run()) for w in pool]
    try:
        await _until_running(tools, 2)
        await asyncio.sleep(0.5)  # time for a third claim, were the cap not there
        assert tools.running == 2
        tools.open_gate()
        for run_id in runs:
            await asyncio.wait_for(
                _until_settled(pool[0], fleet, run_id, {"completed"}, run=False), 30
            )
    finally:
        for w in pool:
            w.stop()
        await asyncio.gather(*running)
    assert tools.most_running == 2
    assert len(tools.calls) == 6


async def test_a_worker_archives_the_runs_it_completes(checkpointer: Checkpointer) -> None:
    tools = Tools()
    workflow = tools.workflow()
    fleet = Fleet(checkpointer, [workflow])
    archive = InMemoryCheckpointer()
    done = await fleet.submit(WF, {"log": "in"})
    pool = worker(checkpointer, workflow, archive_to=archive)
    await pool.run(burst=True)
    assert pool.stats.archived == 1
    assert await checkpointer.latest(WF, done) is None  # moved, not copied
    archived = await archive.latest(WF, done)
    assert archived is not None
    assert archived.values["log"] == ["in", "a", "b"]
    assert [m.label for m in await archive.list(WF, done)] == ["init", "layer:0", "layer:1"]


async def test_a_cancelled_run_stops_mid_step_at_its_next_renewal(
    checkpointer: Checkpointer,
) -> None:
    tools, workflow, fleet, run_id = await gated_run(checkpointer)  # the gate stays shut
    pool = worker(checkpointer, workflow, lease_ttl=0.6)  # renewed every 0.2 s
    running = asyncio.ensure_future(pool.run())
    try:
        await tools.entered.wait()
        assert await fleet.cancel(workflow, run_id) == "running"
        await asyncio.wait_for(_until_settled(pool, fleet, run_id, {"cancelled"}, run=False), 10)
    finally:
        pool.stop()
        await asyncio.wait_for(running, 10)
    assert pool.stats.cancelled == 1
    assert tools.calls == {(run_id, "a"): 1}  # stopped inside "a"; "b" never ran
    record = await checkpointer.run_record(WF, run_id)
    assert record.lease is None
