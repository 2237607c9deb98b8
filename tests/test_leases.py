"""Run leases with fencing, on every backend: one worker per run at a time, enforced by the store.

A lease is taken on the store's clock, carries a fencing token that only grows, and every save
that carries it is refused once it is lost; the lease lives and expires with its run.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from atomr_redis_state import (
    AtomrStateError,
    CheckpointConflictError,
    Checkpointer,
    CheckpointKey,
    Lease,
    LeaseHeldError,
    LeaseLostError,
    RedisCheckpointer,
    RunNotFoundError,
    RunRecord,
    Snapshot,
)
from tests.conftest import REDIS_BACKENDS, Backend
from tests.test_redis_store import DeliveredTwice

WF = "wf-lease"
SHORT = 0.3
"""A lease ttl short enough to wait out in a test."""


def snap(run: str, step: int, **values: Any) -> Snapshot:
    return Snapshot(CheckpointKey(WF, run, step), {"step": step, **values})


async def started(cp: Checkpointer, run: str, owner: str = "w1", ttl: float = 30) -> Lease:
    """A run with super-step 0 saved under ``owner``'s lease, as a runner starts one."""
    lease = await cp.acquire_lease(WF, run, owner, ttl, must_exist=False)
    await cp.save(snap(run, 0), exclusive=True, lease=lease)
    return lease


async def steps(cp: Checkpointer, run: str) -> list[int]:
    return [m.super_step for m in await cp.list(WF, run)]


async def test_a_lease_names_its_owner_and_a_token(checkpointer: Checkpointer) -> None:
    lease = await started(checkpointer, "r")
    assert (lease.workflow_id, lease.run_id, lease.owner) == (WF, "r", "w1")
    assert lease.token >= 1
    record = await checkpointer.run_record(WF, "r")
    assert record.lease == lease


async def test_another_owner_cannot_take_a_live_lease(checkpointer: Checkpointer) -> None:
    lease = await started(checkpointer, "r")
    with pytest.raises(LeaseHeldError) as raised:
        await checkpointer.acquire_lease(WF, "r", "w2", 30)
    assert raised.value.owner == "w1"
    assert raised.value.expires_at_ms == lease.expires_at_ms
    assert isinstance(raised.value, AtomrStateError)


async def test_the_same_owner_acquiring_again_keeps_its_token(checkpointer: Checkpointer) -> None:
    first = await started(checkpointer, "r")
    again = await checkpointer.acquire_lease(WF, "r", "w1", 30)
    assert again.token == first.token
    assert again.expires_at_ms >= first.expires_at_ms


async def test_a_released_lease_can_be_taken_with_a_larger_token(
    checkpointer: Checkpointer,
) -> None:
    first = await started(checkpointer, "r")
    assert await checkpointer.release_lease(first)
    second = await checkpointer.acquire_lease(WF, "r", "w2", 30)
    assert second.token > first.token
    assert (await checkpointer.run_record(WF, "r")).lease == second


async def test_an_expired_lease_is_taken_over_not_before(checkpointer: Checkpointer) -> None:
    first = await started(checkpointer, "r", ttl=SHORT)
    with pytest.raises(LeaseHeldError):
        await checkpointer.acquire_lease(WF, "r", "w2", 30)
    await asyncio.sleep(SHORT + 0.1)
    assert (await checkpointer.run_record(WF, "r")).lease is None
    second = await checkpointer.acquire_lease(WF, "r", "w2", 30)
    assert second.token > first.token


async def test_a_lost_lease_cannot_save_and_nothing_is_written(
    checkpointer: Checkpointer,
) -> None:
    stale = await started(checkpointer, "r", ttl=SHORT)
    await asyncio.sleep(SHORT + 0.1)
    fresh = await checkpointer.acquire_lease(WF, "r", "w2", 30)
    with pytest.raises(LeaseLostError) as raised:
        await checkpointer.save(snap("r", 1, by="stale"), exclusive=True, lease=stale)
    assert raised.value.token == stale.token
    assert await steps(checkpointer, "r") == [0]
    await checkpointer.save(snap("r", 1, by="fresh"), exclusive=True, lease=fresh)
    assert await steps(checkpointer, "r") == [0, 1]


async def test_an_expired_lease_cannot_save_even_when_nobody_took_over(
    checkpointer: Checkpointer,
) -> None:
    stalled = await started(checkpointer, "r", ttl=SHORT)
    await asyncio.sleep(SHORT + 0.1)
    with pytest.raises(LeaseLostError):
        await checkpointer.save(snap("r", 1), exclusive=True, lease=stalled)
    with pytest.raises(LeaseLostError):
        await checkpointer.renew_lease(stalled)
    assert await steps(checkpointer, "r") == [0]


async def test_renewing_moves_the_deadline(checkpointer: Checkpointer) -> None:
    lease = await started(checkpointer, "r", ttl=SHORT)
    for _ in range(3):
        await asyncio.sleep(SHORT / 2)
        lease = await checkpointer.renew_lease(lease)
    await checkpointer.save(snap("r", 1), exclusive=True, lease=lease)
    assert await steps(checkpointer, "r") == [0, 1]


async def test_a_save_without_the_lease_is_refused_while_it_is_held(
    checkpointer: Checkpointer,
) -> None:
    await started(checkpointer, "r")
    with pytest.raises(LeaseHeldError):
        await checkpointer.save(snap("r", 1))
    assert await steps(checkpointer, "r") == [0]


async def test_an_unleased_run_saves_as_before(checkpointer: Checkpointer) -> None:
    lease = await started(checkpointer, "r")
    await checkpointer.release_lease(lease)
    await checkpointer.save(snap("r", 1))
    assert await steps(checkpointer, "r") == [0, 1]


async def test_continuing_a_missing_run_is_refused_and_writes_nothing(backend: Backend) -> None:
    cp = backend.make()
    with pytest.raises(RunNotFoundError):
        await cp.acquire_lease(WF, "nothing", "w1", 30)
    assert await cp.run_record(WF, "nothing") == RunRecord(None, None)
    if backend.is_redis:
        assert await backend.raw_keys() == []


async def test_a_run_deleted_under_its_lease_does_not_come_back(
    checkpointer: Checkpointer,
) -> None:
    lease = await started(checkpointer, "r")
    assert await checkpointer.delete_run(WF, "r")
    with pytest.raises(LeaseLostError):
        await checkpointer.save(snap("r", 1), exclusive=True, lease=lease)
    assert await checkpointer.list_runs(WF) == []
    assert await checkpointer.latest(WF, "r") is None


async def test_a_run_that_expired_after_its_lease_does_not_come_back(backend: Backend) -> None:
    cp = backend.make(ttl=SHORT)
    lease = await started(cp, "r", ttl=SHORT)  # never renewed
    await asyncio.sleep(2 * SHORT + 0.15)
    with pytest.raises((LeaseLostError, RunNotFoundError)):
        await cp.save(snap("r", 1), exclusive=True, lease=lease)
    assert await cp.list_runs(WF) == []


async def test_with_keep_last_a_stale_worker_cannot_win_a_trimmed_step(backend: Backend) -> None:
    cp = backend.make(keep_last=2)
    stale = await started(cp, "r", ttl=SHORT)
    await asyncio.sleep(SHORT + 0.1)
    fresh = await cp.acquire_lease(WF, "r", "w2", 30)
    for step in (1, 2, 3):
        await cp.save(snap("r", step), exclusive=True, lease=fresh)
    with pytest.raises(LeaseLostError):
        await cp.save(snap("r", 1, by="stale"), exclusive=True, lease=stale)
    assert await steps(cp, "r") == [2, 3]


async def test_a_release_leaves_a_note(checkpointer: Checkpointer) -> None:
    lease = await started(checkpointer, "r")
    assert await checkpointer.release_lease(lease, note={"failed": "tool", "pending": [1, 2]})
    assert await checkpointer.run_record(WF, "r") == RunRecord(
        None, {"failed": "tool", "pending": [1, 2]}
    )
    second = await checkpointer.acquire_lease(WF, "r", "w2", 30)
    assert await checkpointer.release_lease(second)
    assert await checkpointer.run_record(WF, "r") == RunRecord(None, None)


async def test_a_release_can_keep_the_note_there_is(checkpointer: Checkpointer) -> None:
    lease = await started(checkpointer, "r")
    await checkpointer.release_lease(lease, note={"failed": "tool"})
    again = await checkpointer.acquire_lease(WF, "r", "w2", 30)
    assert await checkpointer.release_lease(again, keep_note=True)
    assert await checkpointer.run_record(WF, "r") == RunRecord(None, {"failed": "tool"})
    with pytest.raises(ValueError, match="not both"):
        await checkpointer.release_lease(again, note="x", keep_note=True)


async def test_a_lost_lease_cannot_leave_a_note(checkpointer: Checkpointer) -> None:
    stale = await started(checkpointer, "r", ttl=SHORT)
    await asyncio.sleep(SHORT + 0.1)
    await checkpointer.acquire_lease(WF, "r", "w2", 30)
    assert not await checkpointer.release_lease(stale)
    with pytest.raises(LeaseLostError):
        await checkpointer.release_lease(stale, note={"lost": True})
    assert (await checkpointer.run_record(WF, "r")).note is None


async def test_a_released_lease_released_again_gives_the_same_answer(
    checkpointer: Checkpointer,
) -> None:
    lease = await started(checkpointer, "r")
    assert await checkpointer.release_lease(lease, note="done")
    assert await checkpointer.release_lease(lease, note="done")
    assert (await checkpointer.run_record(WF, "r")).note == "done"


@pytest.mark.parametrize("backend", REDIS_BACKENDS, indirect=True)
async def test_lease_calls_retried_after_a_lost_reply_give_the_same_answer(
    backend: Backend,
) -> None:
    retrying = RedisCheckpointer(DeliveredTwice(backend.client), prefix=backend.prefix)
    lease = await retrying.acquire_lease(WF, "r", "w1", 30, must_exist=False)
    await retrying.save(snap("r", 0), exclusive=True, lease=lease)
    assert (await retrying.acquire_lease(WF, "r", "w1", 30)).token == lease.token
    renewed = await retrying.renew_lease(lease)
    assert renewed.token == lease.token
    assert await retrying.release_lease(lease, note={"ok": 1})
    assert await retrying.run_record(WF, "r") == RunRecord(None, {"ok": 1})


async def test_a_start_that_never_saved_lets_go_with_its_lease(checkpointer: Checkpointer) -> None:
    await checkpointer.acquire_lease(WF, "r", "w1", SHORT, must_exist=False)
    await asyncio.sleep(SHORT + 0.1)
    lease = await checkpointer.acquire_lease(WF, "r", "w2", 30, must_exist=False)
    await checkpointer.save(snap("r", 0), exclusive=True, lease=lease)
    assert await steps(checkpointer, "r") == [0]


async def test_only_super_step_zero_can_create_a_run_under_a_lease(
    checkpointer: Checkpointer,
) -> None:
    lease = await checkpointer.acquire_lease(WF, "r", "w1", 30, must_exist=False)
    with pytest.raises(RunNotFoundError):
        await checkpointer.save(snap("r", 3), exclusive=True, lease=lease)
    assert await checkpointer.latest(WF, "r") is None


async def test_an_exclusive_leased_save_still_conflicts(checkpointer: Checkpointer) -> None:
    lease = await started(checkpointer, "r")
    with pytest.raises(CheckpointConflictError):
        await checkpointer.save(snap("r", 0, by="someone else"), exclusive=True, lease=lease)


async def test_a_lease_of_another_run_is_refused_before_anything_is_sent(
    checkpointer: Checkpointer,
) -> None:
    lease = await started(checkpointer, "r")
    with pytest.raises(ValueError, match="lease is on run 'r'"):
        await checkpointer.save(snap("other", 0), lease=lease)
    assert await checkpointer.latest(WF, "other") is None


@pytest.mark.parametrize(
    ("owner", "ttl", "error"),
    [
        ("", 30, ValueError),
        (7, 30, TypeError),
        ("w", 0, ValueError),
        ("w", -1, ValueError),
        ("w", timedelta.max, ValueError),
        ("w", float("nan"), ValueError),
    ],
    ids=repr,
)
async def test_bad_lease_arguments_are_refused(
    checkpointer: Checkpointer, owner: Any, ttl: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await checkpointer.acquire_lease(WF, "r", owner, ttl, must_exist=False)
    assert (await checkpointer.run_record(WF, "r")).lease is None


async def test_hold_forever_keeps_a_run_past_its_ttl(backend: Backend) -> None:
    cp = backend.make(ttl=SHORT)
    await cp.save(snap("r", 0))
    await cp.save(snap("r", 1), hold="forever")
    await asyncio.sleep(2 * SHORT + 0.15)
    assert await steps(cp, "r") == [0, 1]
    assert await cp.list_runs(WF) == ["r"]
    await cp.save(snap("r", 2))  # back on the ttl
    await asyncio.sleep(2 * SHORT + 0.15)
    assert await cp.latest(WF, "r") is None


async def test_a_hold_for_a_while_outlasts_the_ttl(backend: Backend) -> None:
    cp = backend.make(ttl=SHORT)
    await cp.save(snap("r", 0), hold=timedelta(seconds=2 * SHORT + 0.6))
    await asyncio.sleep(2 * SHORT + 0.15)
    assert await steps(cp, "r") == [0]
    await asyncio.sleep(0.6)
    assert await cp.latest(WF, "r") is None


@pytest.mark.parametrize("hold", ["always", 0, -5, timedelta.max], ids=repr)
async def test_bad_holds_are_refused(checkpointer: Checkpointer, hold: Any) -> None:
    with pytest.raises(ValueError, match="hold"):
        await checkpointer.save(snap("r", 0), hold=hold)
    assert await checkpointer.latest(WF, "r") is None


@pytest.mark.parametrize("backend", ["redis", "cluster"], indirect=True)
async def test_the_lease_record_expires_with_its_run(backend: Backend) -> None:
    cp = backend.make(ttl=60)
    await started(cp, "r")
    keys = await backend.raw_keys()
    ttls = [await backend.client.pttl(key) for key in keys]
    assert any(key.endswith(b":run") for key in keys)
    assert all(ttl > 0 for ttl in ttls), dict(zip(keys, ttls, strict=True))
    await cp.save(snap("r", 1), hold="forever", lease=await cp.acquire_lease(WF, "r", "w1", 30))
    assert all([await backend.client.pttl(key) == -1 for key in await backend.raw_keys()])


@pytest.mark.parametrize("backend", ["redis", "cluster"], indirect=True)
async def test_every_key_expires_again_once_a_hold_ends(backend: Backend) -> None:
    cp = backend.make(ttl=60)
    await cp.save(snap("held", 0), hold="forever")
    await cp.save(snap("other", 0))
    assert -1 in [await backend.client.pttl(key) for key in await backend.raw_keys()]
    await cp.save(snap("held", 1))
    ttls = {key: await backend.client.pttl(key) for key in await backend.raw_keys()}
    assert all(ttl > 0 for ttl in ttls.values()), ttls


async def test_a_lease_from_before_a_run_was_deleted_and_started_again_is_lost(
    checkpointer: Checkpointer,
) -> None:
    old = await started(checkpointer, "r", owner="w1")
    assert await checkpointer.delete_run(WF, "r")
    new = await started(checkpointer, "r", owner="w2")
    assert new.token > old.token
    with pytest.raises(LeaseLostError):
        await checkpointer.save(snap("r", 1, by="stale"), exclusive=True, lease=old)
    with pytest.raises(LeaseLostError):
        await checkpointer.renew_lease(old)
    assert not await checkpointer.release_lease(old)
    assert (await checkpointer.run_record(WF, "r")).lease == new


async def test_forking_into_an_existing_run_is_refused(checkpointer: Checkpointer) -> None:
    await checkpointer.save(snap("r", 0))
    await checkpointer.save(snap("r", 1))
    fork_id = await checkpointer.fork(CheckpointKey(WF, "r", 0))
    with pytest.raises(CheckpointConflictError):
        await checkpointer.fork(CheckpointKey(WF, "r", 1), run_id=fork_id)
    assert [m.super_step for m in await checkpointer.list(WF, fork_id)] == [0]
