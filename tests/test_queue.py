"""The ready queue, on every backend: submit, claim, takeover, finish, retry, dead letters,
blocked runs, cancel, answers, depth, wake-ups, heartbeats and events."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from atomr_redis_state import (
    JSON,
    Answer,
    Checkpointer,
    CheckpointEvent,
    CheckpointKey,
    LeaseLostError,
    QueueStateError,
    RunNotFoundError,
    Snapshot,
)
from atomr_redis_state.graph.progress import run_status
from atomr_redis_state.store.redis.keys import bucket_of
from tests.conftest import Backend

WF = "wf-queue"
SHORT = 0.4
"""A lease ttl short enough to wait out in a test."""


DELAY = 1.5
"""A delay long enough for a few calls on a loaded machine, short enough to wait out."""


def init(run: str, **values: Any) -> Snapshot:
    return Snapshot(CheckpointKey(WF, run, 0), {"input": run, **values}, "init")


async def claim_all(cp: Checkpointer, owner: str = "w1", ttl: float = 30) -> list[str]:
    """Claim until nothing is ready; the claimed run ids in claim order."""
    claimed = []
    while (claim := await cp.claim(WF, owner, ttl)) is not None:
        claimed.append(claim.lease.run_id)
    return claimed


async def claim_within(cp: Checkpointer, seconds: float, owner: str = "w2") -> Any:
    """Claim, retrying until something is ready or ``seconds`` passed."""
    deadline = time.monotonic() + seconds
    while True:
        claim = await cp.claim(WF, owner, 30)
        if claim is not None or time.monotonic() > deadline:
            return claim
        await asyncio.sleep(0.05)


@asynccontextmanager
async def recorded(cp: Checkpointer, expected: int) -> AsyncIterator[list[CheckpointEvent]]:
    """Collect the workflow's queue events while the block runs, and after it until there are
    ``expected`` of them (or 10 s passed: a cluster delivers each node's events in turn)."""
    seen: list[CheckpointEvent] = []
    enough = asyncio.Event()
    async with cp.watch(WF) as events:

        async def collect() -> None:
            async for event in events:
                if event.kind != "saved":
                    seen.append(event)
                if len(seen) >= expected:
                    enough.set()

        task = asyncio.ensure_future(collect())
        try:
            yield seen
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(enough.wait(), 10)
            await asyncio.sleep(0.1)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_submit_creates_the_run_at_super_step_0_and_queues_it(
    checkpointer: Checkpointer,
) -> None:
    assert await checkpointer.submit(init("r1")) is True
    latest = await checkpointer.latest(WF, "r1")
    assert latest is not None
    assert latest.key.super_step == 0
    assert latest.values["input"] == "r1"
    record = await checkpointer.run_record(WF, "r1")
    assert record.queue is not None
    assert record.queue.state == "queued"
    assert record.queue.attempts == 0
    assert (await checkpointer.queue_depth(WF)).ready == 1


async def test_submitting_the_same_run_id_again_is_a_no_op(checkpointer: Checkpointer) -> None:
    assert await checkpointer.submit(init("r1"))
    assert await checkpointer.submit(init("r1", other=True)) is False
    latest = await checkpointer.latest(WF, "r1")
    assert latest is not None
    assert "other" not in latest.values
    assert await claim_all(checkpointer) == ["r1"]


async def test_submit_refuses_a_snapshot_past_super_step_0(checkpointer: Checkpointer) -> None:
    with pytest.raises(ValueError, match="super-step 0"):
        await checkpointer.submit(Snapshot(CheckpointKey(WF, "r", 1), {}))
    assert await checkpointer.latest(WF, "r") is None


async def test_a_claim_takes_the_earliest_ready_run_with_its_lease(
    checkpointer: Checkpointer,
) -> None:
    for run in ("a", "b", "c"):
        await checkpointer.submit(init(run))
        await asyncio.sleep(0.01)
    claim = await checkpointer.claim(WF, "w1", 30)
    assert claim is not None
    assert claim.lease.run_id == "a"
    assert claim.lease.owner == "w1"
    assert claim.attempts == 0
    assert not claim.taken_over
    record = await checkpointer.run_record(WF, "a")
    assert record.lease == claim.lease
    assert record.queue is not None
    assert record.queue.state == "running"
    assert await claim_all(checkpointer) == ["b", "c"]


async def test_a_claim_on_an_empty_queue_is_none(checkpointer: Checkpointer) -> None:
    assert await checkpointer.claim(WF, "w1", 30) is None


async def test_claimed_runs_are_not_claimed_again(checkpointer: Checkpointer) -> None:
    await checkpointer.submit(init("r1"))
    assert await checkpointer.claim(WF, "w1", 30) is not None
    assert await checkpointer.claim(WF, "w2", 30) is None


async def test_concurrent_claims_hand_each_run_to_one_worker(checkpointer: Checkpointer) -> None:
    runs = [f"r{i}" for i in range(20)]
    for run in runs:
        await checkpointer.submit(init(run))
    got = await asyncio.gather(*(claim_all(checkpointer, f"w{i}") for i in range(5)))
    claimed = [run for worker in got for run in worker]
    assert sorted(claimed) == sorted(runs)


async def test_a_delayed_run_is_claimable_only_from_its_time(checkpointer: Checkpointer) -> None:
    await checkpointer.submit(init("later"), not_before=timedelta(seconds=DELAY))
    assert await checkpointer.claim(WF, "w1", 30) is None
    depth = await checkpointer.queue_depth(WF)
    assert (depth.ready, depth.delayed) == (0, 1)
    claim = await claim_within(checkpointer, 5)
    assert claim is not None
    assert claim.lease.run_id == "later"


async def test_not_before_takes_an_aware_datetime(checkpointer: Checkpointer) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=DELAY)
    await checkpointer.submit(init("at"), not_before=soon)
    assert await checkpointer.claim(WF, "w1", 30) is None
    with pytest.raises(ValueError, match="timezone-aware"):
        await checkpointer.submit(init("naive"), not_before=datetime.now())


async def test_a_run_held_by_an_inline_runner_is_skipped(checkpointer: Checkpointer) -> None:
    await checkpointer.submit(init("r1"))
    await checkpointer.acquire_lease(WF, "r1", "inline", 30)
    assert await checkpointer.claim(WF, "w1", 30) is None


async def test_an_expired_lease_is_claimed_again_as_a_takeover(
    checkpointer: Checkpointer,
) -> None:
    await checkpointer.submit(init("r1"))
    first = await checkpointer.claim(WF, "crashed", SHORT)
    assert first is not None
    assert await checkpointer.claim(WF, "w2", 30) is None
    second = await claim_within(checkpointer, 3)
    assert second is not None
    assert second.lease.run_id == "r1"
    assert second.taken_over
    assert second.lease.token > first.lease.token
    with pytest.raises(LeaseLostError):
        await checkpointer.finish(first.lease, "completed")


async def test_a_renewed_lease_is_not_taken_over(checkpointer: Checkpointer) -> None:
    await checkpointer.submit(init("r1"))
    claim = await checkpointer.claim(WF, "w1", SHORT)
    assert claim is not None
    lease = claim.lease
    for _ in range(4):
        await asyncio.sleep(SHORT / 3)
        lease = await checkpointer.renew_lease(lease)
        assert await checkpointer.claim(WF, "w2", 30) is None


async def test_completing_a_run_takes_it_out_of_the_queue(checkpointer: Checkpointer) -> None:
    await checkpointer.submit(init("r1"))
    claim = await checkpointer.claim(WF, "w1", 30)
    assert claim is not None
    assert await checkpointer.finish(claim.lease, "completed") == "completed"
    record = await checkpointer.run_record(WF, "r1")
    assert record.lease is None
    assert record.queue is not None
    assert record.queue.state == "completed"
    assert await checkpointer.queue_depth(WF) == type(await checkpointer.queue_depth(WF))()
    assert await checkpointer.claim(WF, "w1", 30) is None


async def test_finishing_twice_answers_the_same(checkpointer: Checkpointer) -> None:
    await checkpointer.submit(init("r1"))
    claim = await checkpointer.claim(WF, "w1", 30)
    assert claim is not None
    assert await checkpointer.finish(claim.lease, "retry", max_attempts=5) == "queued"
    assert await checkpointer.finish(claim.lease, "retry", max_attempts=5) == "queued"
    record = await checkpointer.run_record(WF, "r1")
    assert record.queue is not None
    assert record.queue.attempts == 1


async def test_a_released_run_is_claimable_at_once(checkpointer: Checkpointer) -> None:
    await checkpointer.submit(init("r1"))
    first = await checkpointer.claim(WF, "w1", 30)
    assert first is not None
    assert await checkpointer.finish(first.lease, "released") == "queued"
    second = await claim_within(checkpointer, 2)
    assert second is not None
    assert second.lease.run_id == "r1"
    assert not second.taken_over


async def test_a_failed_attempt_is_retried_after_its_backoff(checkpointer: Checkpointer) -> None:
    await checkpointer.submit(init("r1"))
    claim = await checkpointer.claim(WF, "w1", 30)
    assert claim is not None
    state = await checkpointer.finish(
        claim.lease, "retry", reason={"error": "boom"}, retry_in=DELAY, max_attempts=3
    )
    assert state == "queued"
    assert await checkpointer.claim(WF, "w1", 30) is None
    record = await checkpointer.run_record(WF, "r1")
    assert record.queue is not None
    assert record.queue.attempts == 1
    assert record.queue.reason == {"error": "boom"}
    assert record.queue.ready_at_ms is not None
    assert (await checkpointer.queue_depth(WF)).delayed == 1
    again = await claim_within(checkpointer, 5)
    assert again is not None
    assert again.attempts == 1


async def test_a_run_out_of_attempts_is_a_dead_letter(checkpointer: Checkpointer) -> None:
    await checkpointer.submit(init("r1"))
    for attempt in range(1, 3):
        claim = await claim_within(checkpointer, 2)
        assert claim is not None
        state = await checkpointer.finish(
            claim.lease, "retry", reason="boom", retry_in=0.01, max_attempts=2
        )
        assert state == ("queued" if attempt == 1 else "failed")
    record = await checkpointer.run_record(WF, "r1")
    assert record.queue is not None
    assert (record.queue.state, record.queue.attempts, record.queue.reason) == ("failed", 2, "boom")
    assert (await checkpointer.queue_depth(WF)).failed == 1
    await asyncio.sleep(0.05)
    assert await checkpointer.claim(WF, "w1", 30) is None


async def test_a_dead_letter_can_be_requeued_by_hand(checkpointer: Checkpointer) -> None:
    await checkpointer.submit(init("r1"))
    claim = await checkpointer.claim(WF, "w1", 30)
    assert claim is not None
    assert await checkpointer.finish(claim.lease, "failed", reason="bad") == "failed"
    assert await checkpointer.requeue(WF, "r1") == "queued"
    record = await checkpointer.run_record(WF, "r1")
    assert record.queue is not None
    assert (record.queue.state, record.queue.attempts, record.queue.reason) == ("queued", 0, None)
    assert await claim_all(checkpointer) == ["r1"]


async def test_a_blocked_run_waits_until_requeued(checkpointer: Checkpointer) -> None:
    await checkpointer.submit(init("r1"))
    claim = await checkpointer.claim(WF, "w1", 30)
    assert claim is not None
    reason: JSON = {"changes": ["step 'x' was added"]}
    assert await checkpointer.finish(claim.lease, "blocked", reason=reason) == "blocked"
    record = await checkpointer.run_record(WF, "r1")
    assert record.queue is not None
    assert (record.queue.state, record.queue.reason) == ("blocked", reason)
    assert (await checkpointer.queue_depth(WF)).blocked == 1
    assert await checkpointer.claim(WF, "w1", 30) is None
    assert await checkpointer.requeue(WF, "r1") == "queued"
    assert await claim_all(checkpointer) == ["r1"]


async def test_requeue_refuses_a_completed_run(checkpointer: Checkpointer) -> None:
    await checkpointer.submit(init("r1"))
    claim = await checkpointer.claim(WF, "w1", 30)
    assert claim is not None
    await checkpointer.finish(claim.lease, "completed")
    with pytest.raises(QueueStateError) as raised:
        await checkpointer.requeue(WF, "r1")
    assert raised.value.state == "completed"
    with pytest.raises(RunNotFoundError):
        await checkpointer.requeue(WF, "nope")


async def test_an_answer_queues_a_paused_run_and_reaches_the_next_claim(
    checkpointer: Checkpointer,
) -> None:
    await checkpointer.submit(init("r1"))
    claim = await checkpointer.claim(WF, "w1", 30)
    assert claim is not None
    assert await checkpointer.finish(claim.lease, "paused") == "paused"
    assert (await checkpointer.queue_depth(WF)).paused == 1
    assert await checkpointer.claim(WF, "w1", 30) is None
    assert await checkpointer.resume_run(WF, "r1", {"approved": True}) == "queued"
    assert await checkpointer.resume_run(WF, "r1", {"approved": True}) == "queued"
    resumed = await claim_within(checkpointer, 2)
    assert resumed is not None
    record = await checkpointer.run_record(WF, "r1")
    assert record.answer == Answer(0, {"approved": True})


async def test_an_answer_survives_a_failed_attempt(checkpointer: Checkpointer) -> None:
    await checkpointer.submit(init("r1"))
    claim = await checkpointer.claim(WF, "w1", 30)
    assert claim is not None
    await checkpointer.finish(claim.lease, "paused")
    await checkpointer.resume_run(WF, "r1", "yes")
    failed = await claim_within(checkpointer, 2)
    assert failed is not None
    await checkpointer.finish(failed.lease, "retry", retry_in=0.01, max_attempts=3)
    again = await claim_within(checkpointer, 2)
    assert again is not None
    assert (await checkpointer.run_record(WF, "r1")).answer == Answer(0, "yes")
    await checkpointer.finish(again.lease, "completed")
    record = await checkpointer.run_record(WF, "r1")
    assert record.queue is not None
    assert record.answer is None


async def test_an_answer_for_a_run_not_paused_is_refused(checkpointer: Checkpointer) -> None:
    await checkpointer.submit(init("r1"))
    with pytest.raises(QueueStateError) as raised:
        await checkpointer.resume_run(WF, "r1", "yes")
    assert raised.value.state == "queued"
    with pytest.raises(RunNotFoundError):
        await checkpointer.resume_run(WF, "nope", "yes")


async def test_cancelling_a_queued_run_takes_it_out_of_the_queue(
    checkpointer: Checkpointer,
) -> None:
    await checkpointer.submit(init("r1"))
    assert await checkpointer.cancel(WF, "r1") == "cancelled"
    assert await checkpointer.cancel(WF, "r1") == "cancelled"
    assert await checkpointer.claim(WF, "w1", 30) is None
    record = await checkpointer.run_record(WF, "r1")
    assert record.queue is not None
    assert record.queue.state == "cancelled"
    with pytest.raises(QueueStateError):
        await checkpointer.requeue(WF, "r1")
    with pytest.raises(RunNotFoundError):
        await checkpointer.cancel(WF, "nope")


async def test_cancelling_a_running_run_flags_it_until_its_worker_lets_go(
    checkpointer: Checkpointer,
) -> None:
    await checkpointer.submit(init("r1"))
    claim = await checkpointer.claim(WF, "w1", 30)
    assert claim is not None
    assert await checkpointer.cancel(WF, "r1") == "running"
    record = await checkpointer.run_record(WF, "r1")
    assert record.queue is not None
    assert record.cancel_requested_at_ms is not None
    assert await checkpointer.finish(claim.lease, "retry", max_attempts=3) == "cancelled"
    assert await checkpointer.claim(WF, "w1", 30) is None


async def test_a_cancelled_run_whose_worker_died_ends_cancelled(
    checkpointer: Checkpointer,
) -> None:
    await checkpointer.submit(init("r1"))
    assert await checkpointer.claim(WF, "crashed", SHORT) is not None
    assert await checkpointer.cancel(WF, "r1") == "running"
    await asyncio.sleep(SHORT + 0.1)
    assert await claim_within(checkpointer, 1.5) is None
    record = await checkpointer.run_record(WF, "r1")
    assert record.queue is not None
    assert record.queue.state == "cancelled"


async def test_a_completed_run_stays_completed_when_cancelled(checkpointer: Checkpointer) -> None:
    await checkpointer.submit(init("r1"))
    claim = await checkpointer.claim(WF, "w1", 30)
    assert claim is not None
    await checkpointer.cancel(WF, "r1")
    assert await checkpointer.finish(claim.lease, "completed") == "completed"
    assert await checkpointer.cancel(WF, "r1") == "completed"


async def test_a_deleted_run_leaves_the_queue(checkpointer: Checkpointer) -> None:
    await checkpointer.submit(init("r1"))
    await checkpointer.delete_run(WF, "r1")
    assert await checkpointer.claim(WF, "w1", 30) is None


async def test_the_queue_announces_what_happens(checkpointer: Checkpointer) -> None:
    async with recorded(checkpointer, 12) as seen:
        await checkpointer.submit(init("r1"))
        claim = await checkpointer.claim(WF, "w1", 30)
        assert claim is not None
        await checkpointer.finish(claim.lease, "released")
        claim = await claim_within(checkpointer, 2, "w1")
        assert claim is not None
        await checkpointer.finish(claim.lease, "retry", retry_in=0.01, max_attempts=2)
        claim = await claim_within(checkpointer, 2, "w1")
        assert claim is not None
        await checkpointer.finish(claim.lease, "retry", retry_in=0.01, max_attempts=2)
        await checkpointer.submit(init("r2"))
        await checkpointer.cancel(WF, "r2")
        await checkpointer.submit(init("r3"))
        claim = await claim_within(checkpointer, 2, "w1")
        assert claim is not None
        await checkpointer.finish(claim.lease, "completed")
    # Each run's events in order (runs in other slots may interleave differently on a cluster).
    by_run: dict[str, list[str]] = {}
    for event in seen:
        by_run.setdefault(event.run_id, []).append(event.kind)
    assert by_run == {
        "r1": ["queued", "claimed", "released", "claimed", "retrying", "claimed", "failed"],
        "r2": ["queued", "cancelled"],
        "r3": ["queued", "claimed", "completed"],
    }
    claimed = next(e for e in seen if e.kind == "claimed")
    assert claimed.label == "w1"
    assert claimed.workflow_id == WF


async def test_a_takeover_is_announced(checkpointer: Checkpointer) -> None:
    async with recorded(checkpointer, 4) as seen:
        await checkpointer.submit(init("r1"))
        assert await checkpointer.claim(WF, "crashed", SHORT) is not None
        assert await claim_within(checkpointer, 3) is not None
    assert [e.kind for e in seen] == ["queued", "claimed", "lease_expired", "claimed"]


async def test_a_wake_up_comes_when_work_is_submitted(checkpointer: Checkpointer) -> None:
    async with checkpointer.wake_ups([WF]) as wake:
        await checkpointer.claim(WF, "w1", 30)  # idle: learns there is nothing to do
        started = time.monotonic()
        waiting = asyncio.ensure_future(wake.wait(at_most=5))
        await asyncio.sleep(0.1)
        await checkpointer.submit(init("r1"))
        await asyncio.wait_for(waiting, 3)
        assert time.monotonic() - started < 3
        assert await claim_within(checkpointer, 1) is not None


async def test_heartbeats_list_live_workers(checkpointer: Checkpointer) -> None:
    await checkpointer.heartbeat("w1", {"runs": ["r1"]}, 30)
    await checkpointer.heartbeat("w2", {"runs": []}, SHORT)
    workers = await checkpointer.workers()
    assert [(w.worker_id, w.info) for w in workers] == [
        ("w1", {"runs": ["r1"]}),
        ("w2", {"runs": []}),
    ]
    await asyncio.sleep(SHORT + 0.1)
    assert [w.worker_id for w in await checkpointer.workers()] == ["w1"]
    await checkpointer.forget_worker("w1")
    assert await checkpointer.workers() == []


async def test_claims_are_spread_over_buckets(checkpointer: Checkpointer) -> None:
    """Runs of many buckets are all claimed, whatever bucket each lives in."""
    cp = checkpointer
    runs = [f"r{i}" for i in range(40)]
    assert len({bucket_of(WF, run) for run in runs}) > 20
    for run in runs:
        await cp.submit(init(run))
    assert sorted(await claim_all(cp)) == sorted(runs)
    depth = await cp.queue_depth(WF)
    assert (depth.ready, depth.running) == (0, 40)


async def test_permits_cap_runs_in_flight_across_the_fleet(checkpointer: Checkpointer) -> None:
    assert await checkpointer.take_permit(WF, "w1/a", 2, 30)
    assert await checkpointer.take_permit(WF, "w2/b", 2, 30)
    assert not await checkpointer.take_permit(WF, "w3/c", 2, 30)
    assert await checkpointer.take_permit(WF, "w1/a", 2, 30)  # its own: extended
    await checkpointer.drop_permit(WF, "w1/a")
    assert await checkpointer.take_permit(WF, "w3/c", 2, 30)


async def test_a_permit_not_renewed_expires(checkpointer: Checkpointer) -> None:
    assert await checkpointer.take_permit(WF, "kept", 2, SHORT)
    assert await checkpointer.take_permit(WF, "crashed", 2, SHORT)
    for _ in range(3):
        await asyncio.sleep(SHORT / 2)
        assert await checkpointer.renew_permits(WF, ["kept"], SHORT) == 1
    assert await checkpointer.take_permit(WF, "new", 2, 30)
    assert not await checkpointer.take_permit(WF, "more", 2, 30)
    assert await checkpointer.renew_permits(WF, ["crashed"], 30) == 0


async def test_a_failed_attempt_not_yet_settled_is_not_a_dead_letter(
    checkpointer: Checkpointer,
) -> None:
    """Between a runner's failed layer and its worker's finish, the run is not 'failed'."""
    await checkpointer.submit(init("r1"))
    claim = await checkpointer.claim(WF, "w1", 30)
    assert claim is not None
    failure: JSON = {
        "failed": {
            "super_step": 0,
            "step": "a",
            "error_type": "RuntimeError",
            "message": "boom",
            "attempts": 1,
            "at_ms": 1,
        }
    }
    await checkpointer.release_lease(claim.lease, note=failure)
    assert (await run_status(checkpointer, WF, "r1")).state == "stalled"
    await checkpointer.finish(claim.lease, "failed", reason="boom")
    assert (await run_status(checkpointer, WF, "r1")).state == "failed"


async def test_finish_stores_clears_or_keeps_the_note_as_release_lease_does(
    checkpointer: Checkpointer,
) -> None:
    await checkpointer.submit(init("r1"))
    claim = await checkpointer.claim(WF, "w1", 30)
    assert claim is not None
    await checkpointer.finish(claim.lease, "retry", retry_in=0.01, max_attempts=5, note={"n": 1})
    record = await checkpointer.run_record(WF, "r1")
    assert record.note == {"n": 1}
    assert record.lease is None
    claim = await claim_within(checkpointer, 2)
    assert claim is not None
    await checkpointer.finish(claim.lease, "released")  # keeps it
    assert (await checkpointer.run_record(WF, "r1")).note == {"n": 1}
    claim = await claim_within(checkpointer, 2)
    assert claim is not None
    await checkpointer.finish(claim.lease, "completed", keep_note=False)
    assert (await checkpointer.run_record(WF, "r1")).note is None


@pytest.mark.timeout(240)  # 300 claims one by one after the burst: slow on a loaded machine
async def test_many_concurrent_submits_share_the_pipeline(
    backend: Backend, checkpointer: Checkpointer
) -> None:
    """300 submits at once (each with its hint update) on a client of 100 connections: the
    automatic pipeline batches them; the store never takes a connection per call."""
    if backend.name not in ("redis", "redis-acl"):
        pytest.skip("only a pipelined standalone client batches calls")
    runs = [f"r{i}" for i in range(300)]
    created = await asyncio.gather(*(checkpointer.submit(init(run)) for run in runs))
    assert all(created)
    assert (await checkpointer.queue_depth(WF)).ready == len(runs)
    assert sorted(await claim_all(checkpointer)) == sorted(runs)
