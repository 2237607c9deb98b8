"""The fleet's safety rules, on every backend: what a worker learns when its lease is gone, runs
that outlive their ttl while leased, answers that survive failures, and cancellation.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from atomr_redis_state import (
    Answer,
    AnswerRefusedError,
    CheckpointConflictError,
    Checkpointer,
    CheckpointKey,
    Lease,
    LeaseHeldError,
    LeaseLostError,
    RedisCheckpointer,
    RunCancelledError,
    RunNotFoundError,
    Snapshot,
    StatefulRunner,
    Step,
    StepContext,
    Writes,
)
from tests.conftest import REDIS_BACKENDS, Backend
from tests.test_redis_store import DeliveredTwice
from tests.test_runner import SCHEMA, ToolFailed, Workflow
from tests.test_sql_stores import make, query, raw_write

WF = "wf-fleet"
SHORT = 0.3
"""A lease ttl short enough to wait out in a test."""


def runner(
    store: Checkpointer, steps: list[Step], run: str = "r", **options: Any
) -> StatefulRunner:
    return StatefulRunner(WF, run, steps, SCHEMA, store, **options)


def snap(run: str, step: int, **values: Any) -> Snapshot:
    return Snapshot(CheckpointKey(WF, run, step), {"step": step, **values})


async def started(cp: Checkpointer, run: str, owner: str = "w1", ttl: float = 30) -> Lease:
    """A run with super-step 0 saved under ``owner``'s lease, as a runner starts one."""
    lease = await cp.acquire_lease(WF, run, owner, ttl, must_exist=False)
    await cp.save(snap(run, 0), exclusive=True, lease=lease)
    return lease


async def taken_over(cp: Checkpointer, run: str) -> tuple[Lease, Lease]:
    """A run whose first worker's lease expired and was taken by a second: (stale, fresh)."""
    stale = await started(cp, run, ttl=SHORT)
    await asyncio.sleep(SHORT + 0.1)
    fresh = await cp.acquire_lease(WF, run, "w2", 30)
    return stale, fresh


# 1. A stale worker always gets LeaseLostError.


async def test_a_stale_worker_whose_step_the_new_owner_saved_gets_lease_lost(
    checkpointer: Checkpointer,
) -> None:
    stale, fresh = await taken_over(checkpointer, "r")
    await checkpointer.save(snap("r", 1, by="fresh"), exclusive=True, lease=fresh)
    with pytest.raises(LeaseLostError) as raised:
        await checkpointer.save(snap("r", 1, by="stale"), exclusive=True, lease=stale)
    assert raised.value.token == stale.token
    latest = await checkpointer.latest(WF, "r")
    assert latest is not None
    assert latest.values["by"] == "fresh"


async def test_the_live_owner_saving_a_step_twice_still_conflicts(
    checkpointer: Checkpointer,
) -> None:
    lease = await started(checkpointer, "r")
    await checkpointer.save(snap("r", 1, by="first"), exclusive=True, lease=lease)
    with pytest.raises(CheckpointConflictError):
        await checkpointer.save(snap("r", 1, by="second"), exclusive=True, lease=lease)


async def test_a_leased_save_sent_again_succeeds_as_the_first_did(
    checkpointer: Checkpointer,
) -> None:
    lease = await started(checkpointer, "r", ttl=SHORT)
    saved = snap("r", 1, by="w1")
    await checkpointer.save(saved, exclusive=True, lease=lease)
    await checkpointer.save(saved, exclusive=True, lease=lease)
    await asyncio.sleep(SHORT + 0.1)
    await checkpointer.acquire_lease(WF, "r", "w2", 30)
    # Sent again after the lease moved on: the write is there, so the answer is the same.
    await checkpointer.save(saved, exclusive=True, lease=lease)
    assert [m.super_step for m in await checkpointer.list(WF, "r")] == [0, 1]


# The store's answers: recorded by any process for a paused run, used by the next attempt.


async def paused_at_one(cp: Checkpointer, run: str) -> None:
    """A run whose latest checkpoint (super-step 1) waits for an answer, with nobody on it."""
    lease = await started(cp, run)
    await cp.save(snap(run, 1), exclusive=True, lease=lease, hold="forever")
    await cp.release_lease(lease)


async def test_an_answer_is_kept_in_the_run_record(checkpointer: Checkpointer) -> None:
    await paused_at_one(checkpointer, "r")
    await checkpointer.record_answer(WF, "r", {"approve": True}, super_step=1)
    record = await checkpointer.run_record(WF, "r")
    assert record.answer == Answer(1, {"approve": True})
    assert record.lease is None


async def test_an_answer_sent_again_is_the_same_answer(checkpointer: Checkpointer) -> None:
    await paused_at_one(checkpointer, "r")
    await checkpointer.record_answer(WF, "r", None, super_step=1)
    await checkpointer.record_answer(WF, "r", None, super_step=1)
    assert (await checkpointer.run_record(WF, "r")).answer == Answer(1, None)


async def test_the_first_answer_to_a_pause_wins(checkpointer: Checkpointer) -> None:
    await paused_at_one(checkpointer, "r")
    await checkpointer.record_answer(WF, "r", "yes", super_step=1)
    with pytest.raises(AnswerRefusedError, match="different answer"):
        await checkpointer.record_answer(WF, "r", "no", super_step=1)
    assert (await checkpointer.run_record(WF, "r")).answer == Answer(1, "yes")


async def test_an_answer_to_a_pause_the_run_has_left_is_refused(
    checkpointer: Checkpointer,
) -> None:
    await paused_at_one(checkpointer, "r")
    await checkpointer.save(snap("r", 2))
    with pytest.raises(AnswerRefusedError, match="at super-step 2") as raised:
        await checkpointer.record_answer(WF, "r", "late", super_step=1)
    assert raised.value.super_step == 1
    assert (await checkpointer.run_record(WF, "r")).answer is None


async def test_an_answer_to_a_missing_run_is_refused(checkpointer: Checkpointer) -> None:
    with pytest.raises(RunNotFoundError):
        await checkpointer.record_answer(WF, "missing", "yes", super_step=0)
    assert await checkpointer.run_record(WF, "missing") == (await checkpointer.run_record(WF, "x"))


async def test_an_answer_waits_while_another_worker_holds_the_run(
    checkpointer: Checkpointer,
) -> None:
    await paused_at_one(checkpointer, "r")
    await checkpointer.acquire_lease(WF, "r", "w2", 30)
    with pytest.raises(LeaseHeldError):
        await checkpointer.record_answer(WF, "r", "yes", super_step=1)
    assert (await checkpointer.run_record(WF, "r")).answer is None


async def test_the_lease_holder_replaces_the_answer_and_a_stale_one_cannot(
    checkpointer: Checkpointer,
) -> None:
    await paused_at_one(checkpointer, "r")
    await checkpointer.record_answer(WF, "r", "first", super_step=1)
    stale = await checkpointer.acquire_lease(WF, "r", "w1", SHORT)
    await asyncio.sleep(SHORT + 0.1)
    fresh = await checkpointer.acquire_lease(WF, "r", "w2", 30)
    with pytest.raises(LeaseLostError):
        await checkpointer.record_answer(WF, "r", "stale", super_step=1, lease=stale)
    await checkpointer.record_answer(WF, "r", "resumed", super_step=1, lease=fresh)
    assert (await checkpointer.run_record(WF, "r")).answer == Answer(1, "resumed")


async def test_an_answer_must_be_json(checkpointer: Checkpointer) -> None:
    await paused_at_one(checkpointer, "r")
    with pytest.raises(ValueError, match="answer"):
        await checkpointer.record_answer(WF, "r", {1, 2}, super_step=1)
    assert (await checkpointer.run_record(WF, "r")).answer is None


# Cancellation: a flag in the run's record, honoured by leased saves and reported by leases.


async def test_cancelling_a_missing_run_writes_nothing(backend: Backend) -> None:
    cp = backend.make()
    with pytest.raises(RunNotFoundError):
        await cp.cancel(WF, "missing")
    if backend.is_redis:
        assert await backend.raw_keys() == []


async def test_a_cancel_request_is_kept_with_its_first_time(checkpointer: Checkpointer) -> None:
    await started(checkpointer, "r")
    assert await checkpointer.cancel(WF, "r")
    first = (await checkpointer.run_record(WF, "r")).cancel_requested_at_ms
    assert first is not None
    await asyncio.sleep(0.01)
    assert await checkpointer.cancel(WF, "r")
    assert (await checkpointer.run_record(WF, "r")).cancel_requested_at_ms == first


async def test_a_cancelled_run_refuses_its_lease_holders_saves(
    checkpointer: Checkpointer,
) -> None:
    lease = await started(checkpointer, "r")
    await checkpointer.cancel(WF, "r")
    with pytest.raises(RunCancelledError):
        await checkpointer.save(snap("r", 1), exclusive=True, lease=lease)
    assert [m.super_step for m in await checkpointer.list(WF, "r")] == [0]


async def test_leases_report_a_cancel_request(checkpointer: Checkpointer) -> None:
    lease = await started(checkpointer, "r")
    assert not lease.cancel_requested
    await checkpointer.cancel(WF, "r")
    renewed = await checkpointer.renew_lease(lease)
    assert renewed.cancel_requested
    assert (await checkpointer.run_record(WF, "r")).lease == renewed
    await checkpointer.release_lease(renewed)
    assert (await checkpointer.acquire_lease(WF, "r", "w2", 30)).cancel_requested


async def test_a_cancelled_run_takes_no_answer(checkpointer: Checkpointer) -> None:
    await paused_at_one(checkpointer, "r")
    await checkpointer.cancel(WF, "r")
    with pytest.raises(RunCancelledError):
        await checkpointer.record_answer(WF, "r", "yes", super_step=1)


async def test_deleting_a_run_forgets_its_cancel_request_and_answer(
    checkpointer: Checkpointer,
) -> None:
    await paused_at_one(checkpointer, "r")
    await checkpointer.record_answer(WF, "r", "yes", super_step=1)
    await checkpointer.cancel(WF, "r")
    await checkpointer.delete_run(WF, "r")
    record = await checkpointer.run_record(WF, "r")
    assert (record.answer, record.cancel_requested_at_ms) == (None, None)


@pytest.mark.parametrize("backend", REDIS_BACKENDS, indirect=True)
async def test_answers_and_cancels_sent_twice_give_the_same_answer(backend: Backend) -> None:
    retrying = RedisCheckpointer(DeliveredTwice(backend.client), prefix=backend.prefix)
    await paused_at_one(retrying, "r")
    await retrying.record_answer(WF, "r", ["ok"], super_step=1)
    assert (await retrying.run_record(WF, "r")).answer == Answer(1, ["ok"])
    assert await retrying.cancel(WF, "r") == "cancelled"
    record = await retrying.run_record(WF, "r")
    assert record.answer is None  # a cancelled run's pending answer is dropped
    assert record.cancel_requested_at_ms is not None


@pytest.mark.parametrize("backend", ["redis", "cluster"], indirect=True)
async def test_a_cancel_request_expires_with_its_run(backend: Backend) -> None:
    cp = backend.make(ttl=60)
    await cp.save(snap("r", 0))
    await cp.record_answer(WF, "r", "yes", super_step=0)
    await cp.cancel(WF, "r")
    ttls = {key: await backend.client.pttl(key) for key in await backend.raw_keys()}
    assert any(key.endswith(b":run") for key in ttls)
    assert all(ttl > 0 for ttl in ttls.values()), ttls


# 3. While a lease is live and renewed, the run's keys do not expire.

TTL = 0.3
"""A store ttl the tests outlast several times over."""


async def test_renewing_a_lease_keeps_its_run_past_the_ttl(backend: Backend) -> None:
    cp = backend.make(ttl=TTL)
    lease = await started(cp, "r", ttl=TTL)
    for _ in range(8):  # 1.2 s: four ttls, two past the latest a save alone keeps a run
        await asyncio.sleep(TTL / 2)
        lease = await cp.renew_lease(lease)
    await cp.save(snap("r", 1), exclusive=True, lease=lease)
    assert [m.super_step for m in await cp.list(WF, "r")] == [0, 1]
    assert await cp.list_runs(WF) == ["r"]


async def test_a_lease_taken_on_a_run_about_to_expire_keeps_it(backend: Backend) -> None:
    cp = backend.make(ttl=TTL)
    await cp.save(snap("r", 0))
    lease = await cp.acquire_lease(WF, "r", "w1", 3 * TTL)
    await asyncio.sleep(2 * TTL + 0.2)  # past the run's own deadline, within the lease
    await cp.save(snap("r", 1), exclusive=True, lease=lease)
    assert [m.super_step for m in await cp.list(WF, "r")] == [0, 1]


async def test_a_released_run_expires_again(backend: Backend) -> None:
    cp = backend.make(ttl=TTL)
    lease = await started(cp, "r", ttl=TTL)
    await cp.release_lease(await cp.renew_lease(lease))
    await asyncio.sleep(2 * TTL + 2 * TTL + 0.2)  # its deadline: at most the lease's, plus a ttl
    assert await cp.latest(WF, "r") is None


@pytest.mark.parametrize("backend", ["redis", "redis-acl", "cluster"], indirect=True)
async def test_a_renewal_moves_every_key_of_the_run_to_one_deadline(backend: Backend) -> None:
    cp = backend.make(ttl=60)
    lease = await started(cp, "r", ttl=30)
    await cp.save(snap("r", 1), exclusive=True, lease=lease)
    await cp.acquire_lease(WF, "r", "w1", 600)  # a lease longer than the run's deadline
    deadlines = {key: await backend.client.pexpiretime(key) for key in await backend.raw_keys()}
    # steps, meta, record, run index, workflow registry, two snapshots
    assert len(deadlines) == 7, deadlines
    assert len(set(deadlines.values())) == 1, deadlines
    assert min(deadlines.values()) > lease.expires_at_ms + 500_000


async def test_a_layer_longer_than_the_ttl_completes(backend: Backend) -> None:
    cp = backend.make(ttl=TTL)
    w = Workflow()

    async def slow(ctx: StepContext) -> Writes:
        await asyncio.sleep(5 * TTL)
        return {"log": "slow"}

    steps = [w.step("a"), Step("slow", slow, ["a"]), w.step("b", "slow")]
    outcome = await runner(cp, steps, lease_ttl=TTL).start()
    assert outcome.completed
    assert outcome.state["log"] == ["a", "slow", "b"]


# 4. A human's answer survives a failed resume and is used by the next attempt.


class Approval:
    """a -> (approve, b) -> d: ``approve`` asks a human, and can be made to fail once answered."""

    def __init__(self) -> None:
        self.w = Workflow()
        self.fail_after_answer = 0
        self.answers: list[object] = []

    def steps(self) -> list[Step]:
        async def approve(ctx: StepContext) -> Writes:
            answer = ctx.interrupt({"question": "approve?"})
            self.answers.append(answer)
            if self.fail_after_answer:
                self.fail_after_answer -= 1
                raise ToolFailed("the tool failed after the answer")
            return [("log", "approve"), ("answer", answer)]

        w = self.w
        return [
            w.step("a"),
            Step("approve", approve, ["a"]),
            w.step("b", "a"),
            w.step("d", "approve"),
        ]


async def test_an_answer_survives_a_failed_resume_and_the_next_attempt_uses_it(
    checkpointer: Checkpointer,
) -> None:
    flow = Approval()
    assert (await runner(checkpointer, flow.steps()).start()).paused
    flow.fail_after_answer = 1
    with pytest.raises(ToolFailed):
        await runner(checkpointer, flow.steps()).resume({"ok": True})
    status = await runner(checkpointer, flow.steps()).status()
    assert status.state == "failed"  # waiting for a retry, not for a human
    outcome = await runner(checkpointer, flow.steps()).run()
    assert outcome.completed
    assert outcome.state["answer"] == {"ok": True}
    assert flow.answers == [{"ok": True}, {"ok": True}]
    assert flow.w.calls["b"] == 1


async def test_an_answer_recorded_by_another_process_is_used_by_the_next_run(
    checkpointer: Checkpointer,
) -> None:
    flow = Approval()
    paused = await runner(checkpointer, flow.steps()).start()
    await checkpointer.record_answer(WF, "r", "yes", super_step=paused.super_step)
    status = await runner(checkpointer, flow.steps()).status()
    assert status.state == "stalled"  # nobody holds it: runnable by any worker
    outcome = await runner(checkpointer, flow.steps()).run()
    assert outcome.completed
    assert outcome.state["answer"] == "yes"
    assert flow.answers == ["yes"]


async def test_a_paused_run_without_an_answer_still_waits(checkpointer: Checkpointer) -> None:
    flow = Approval()
    await runner(checkpointer, flow.steps()).start()
    outcome = await runner(checkpointer, flow.steps()).run()
    assert outcome.paused
    assert flow.answers == []
    assert (await runner(checkpointer, flow.steps()).status()).state == "paused"


async def test_a_resume_answer_must_be_json(checkpointer: Checkpointer) -> None:
    flow = Approval()
    await runner(checkpointer, flow.steps()).start()
    with pytest.raises(ValueError, match="answer"):
        await runner(checkpointer, flow.steps()).resume(object())
    assert flow.answers == []
    assert (await runner(checkpointer, flow.steps()).status()).state == "paused"


# 5. Cancellation: a running runner stops at its next renewal or checkpoint.


async def test_a_cancel_stops_a_running_step_at_the_next_renewal(
    checkpointer: Checkpointer,
) -> None:
    w = Workflow()
    entered, cancelled = asyncio.Event(), asyncio.Event()

    async def long(ctx: StepContext) -> Writes:
        entered.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {"log": "long"}

    steps = [w.step("a"), Step("long", long, ["a"]), w.step("b", "long")]
    task = asyncio.create_task(runner(checkpointer, steps, lease_ttl=SHORT).start())
    await entered.wait()
    assert await checkpointer.cancel(WF, "r")
    with pytest.raises(RunCancelledError):
        await asyncio.wait_for(task, timeout=10)
    assert cancelled.is_set()
    assert [m.label for m in await checkpointer.list(WF, "r")] == ["init", "layer:0"]
    status = await runner(checkpointer, steps).status()
    assert (status.state, status.lease) == ("cancelled", None)


async def test_a_cancel_stops_the_run_at_its_next_checkpoint(checkpointer: Checkpointer) -> None:
    w = Workflow()

    async def cancelling(ctx: StepContext) -> Writes:
        await checkpointer.cancel(WF, "r")  # as if from another process, mid-layer
        return {"log": "cancelling"}

    steps = [w.step("a"), Step("cancelling", cancelling, ["a"]), w.step("b", "cancelling")]
    with pytest.raises(RunCancelledError):
        await runner(checkpointer, steps).start()  # a 30 s lease: no renewal in between
    assert [m.label for m in await checkpointer.list(WF, "r")] == ["init", "layer:0"]
    assert w.calls["b"] == 0
    assert (await runner(checkpointer, steps).status()).state == "cancelled"


async def test_a_cancelled_run_runs_nothing_again(checkpointer: Checkpointer) -> None:
    flow = Approval()
    await runner(checkpointer, flow.steps()).start()
    await checkpointer.cancel(WF, "r")
    with pytest.raises(RunCancelledError):
        await runner(checkpointer, flow.steps()).resume("yes")
    with pytest.raises(RunCancelledError):
        await runner(checkpointer, flow.steps()).run()
    assert flow.answers == []
    assert (await checkpointer.run_record(WF, "r")).lease is None


async def test_a_completed_run_stays_completed_when_cancelled(checkpointer: Checkpointer) -> None:
    w = Workflow()
    await runner(checkpointer, [w.step("a")]).start()
    assert await checkpointer.cancel(WF, "r")
    assert (await runner(checkpointer, [w.step("a")]).run()).completed
    assert (await runner(checkpointer, [w.step("a")]).status()).state == "completed"


# 2. A compatible change never re-runs a finished step, and the idempotency key holds.


class Recorded:
    """Steps that record every execution's idempotency key, (run_id, super_step, step)."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, int, str]] = []
        self.fail: dict[str, int] = {}

    def step(self, name: str, *deps: str, asks: bool = False) -> Step:
        async def fn(ctx: StepContext) -> Writes:
            self.keys.append((ctx.run_id, ctx.super_step, name))
            answer = ctx.interrupt({"question": f"{name}?"}) if asks else None
            if self.fail.get(name):
                self.fail[name] -= 1
                raise ToolFailed(f"{name} failed")
            return [("log", name), ("answer", answer)] if asks else {"log": name}

        return Step(name, fn, deps)

    def runs_of(self, name: str) -> list[tuple[str, int, str]]:
        return [key for key in self.keys if key[2] == name]


def deployed(r: Recorded, *, added: bool, asks: bool) -> list[Step]:
    """a -> (ask or c, b) -> d; the deploy adds ``x``, independent, to the first layer."""
    middle = r.step("ask", "a", asks=True) if asks else r.step("c", "a")
    steps = [r.step("a"), middle, r.step("b", "a"), r.step("d", middle.name, "b")]
    return [*steps, r.step("x")] if added else steps


async def test_a_step_added_to_an_earlier_layer_does_not_rerun_a_paused_runs_finished_sibling(
    checkpointer: Checkpointer,
) -> None:
    r = Recorded()
    assert (await runner(checkpointer, deployed(r, added=False, asks=True)).start()).paused
    outcome = await runner(checkpointer, deployed(r, added=True, asks=True)).resume("yes")
    assert outcome.completed
    assert outcome.state["answer"] == "yes"
    assert sorted(cast(list[str], outcome.state["log"])) == ["a", "ask", "b", "d", "x"]
    assert len(r.runs_of("b")) == 1
    assert len(r.runs_of("x")) == 1
    asked = r.runs_of("ask")
    assert len(asked) == 2  # it paused, then was resumed: one idempotency key
    assert len(set(asked)) == 1


async def test_a_step_added_to_an_earlier_layer_does_not_rerun_a_failed_layers_finished_step(
    checkpointer: Checkpointer,
) -> None:
    r = Recorded()
    r.fail["c"] = 1
    with pytest.raises(ToolFailed):
        await runner(checkpointer, deployed(r, added=False, asks=False)).start()
    outcome = await runner(checkpointer, deployed(r, added=True, asks=False)).run()
    assert outcome.completed
    assert sorted(cast(list[str], outcome.state["log"])) == ["a", "b", "c", "d", "x"]
    assert len(r.runs_of("b")) == 1
    retried = r.runs_of("c")
    assert len(retried) == 2
    assert len(set(retried)) == 1


async def test_an_added_step_failing_keeps_the_finished_writes(checkpointer: Checkpointer) -> None:
    r = Recorded()
    assert (await runner(checkpointer, deployed(r, added=False, asks=True)).start()).paused
    r.fail["x"] = 1
    with pytest.raises(ToolFailed):
        await runner(checkpointer, deployed(r, added=True, asks=True)).resume("yes")
    outcome = await runner(checkpointer, deployed(r, added=True, asks=True)).run()
    assert outcome.completed
    assert outcome.state["answer"] == "yes"
    assert len(r.runs_of("b")) == 1
    assert len(set(r.runs_of("ask"))) == 1


async def test_an_answer_owed_past_an_added_layer_survives_a_failure(
    checkpointer: Checkpointer,
) -> None:
    r = Recorded()
    assert (await runner(checkpointer, deployed(r, added=False, asks=True)).start()).paused
    r.fail["ask"] = 1
    with pytest.raises(ToolFailed):
        await runner(checkpointer, deployed(r, added=True, asks=True)).resume("yes")
    # The added step's layer was checkpointed first: the answer is kept in that checkpoint.
    labels = [m.label for m in await checkpointer.list(WF, "r")]
    assert labels[-2:] == ["interrupt:ask", "layer:0"]
    outcome = await runner(checkpointer, deployed(r, added=True, asks=True)).run()
    assert outcome.completed
    assert outcome.state["answer"] == "yes"
    assert [len(r.runs_of(name)) for name in ("b", "x", "ask")] == [1, 1, 3]
    assert len(set(r.runs_of("ask"))) == 1


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_setup_brings_a_first_version_postgres_store_to_answers(
    backend: Backend,
) -> None:
    store = make(backend)
    await store.save(snap("r", 0))
    for column in ("answer_step", "answer", "cancel_ms"):
        await raw_write(store, f"ALTER TABLE {{s}}.atomr_runs DROP COLUMN {column}")
    await raw_write(store, "UPDATE {s}.atomr_schema SET version = 1")
    await make(backend).setup()
    assert await query(store, "SELECT version FROM {s}.atomr_schema") == [(2,)]
    migrated = make(backend)
    await migrated.record_answer(WF, "r", "yes", super_step=0)
    assert (await migrated.run_record(WF, "r")).answer == Answer(0, "yes")
