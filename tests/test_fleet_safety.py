"""The fleet's safety rules, on every backend: what a worker learns when its lease is gone, runs
that outlive their ttl while leased, answers that survive failures, and cancellation.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from atomr_redis_state import (
    CheckpointConflictError,
    Checkpointer,
    CheckpointKey,
    Lease,
    LeaseLostError,
    Snapshot,
)

WF = "wf-fleet"
SHORT = 0.3
"""A lease ttl short enough to wait out in a test."""


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
