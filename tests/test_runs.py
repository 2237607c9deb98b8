"""Run management: paginated history, listing and deleting runs, and retention (keep_last)."""

from __future__ import annotations

import pytest

from atomr_redis_state import Checkpointer, CheckpointKey, Snapshot
from tests.conftest import REDIS_BACKENDS, Backend

WF = "wf-runs"


def snap(run: str, step: int, wf: str = WF) -> Snapshot:
    return Snapshot(CheckpointKey(wf, run, step), {"step": step}, label=f"s{step}")


async def steps_of(cp: Checkpointer, run: str, **page: int) -> list[int]:
    return [m.super_step for m in await cp.list(WF, run, **page)]


async def test_list_with_a_limit_is_the_newest_steps_ascending(checkpointer: Checkpointer) -> None:
    for step in range(10):
        await checkpointer.save(snap("r", step))
    assert await steps_of(checkpointer, "r", limit=3) == [7, 8, 9]


async def test_list_before_a_step_excludes_it(checkpointer: Checkpointer) -> None:
    for step in (0, 2, 4, 6):
        await checkpointer.save(snap("r", step))
    assert await steps_of(checkpointer, "r", before=4) == [0, 2]
    assert await steps_of(checkpointer, "r", before=0) == []


async def test_list_pages_walk_the_whole_history_backwards(checkpointer: Checkpointer) -> None:
    for step in range(11):
        await checkpointer.save(snap("r", step))
    pages: list[list[int]] = []
    page = await steps_of(checkpointer, "r", limit=4)
    while page:
        pages.append(page)
        page = await steps_of(checkpointer, "r", limit=4, before=page[0])
    assert pages == [[7, 8, 9, 10], [3, 4, 5, 6], [0, 1, 2]]


@pytest.mark.parametrize("page", [{"limit": 0}, {"limit": -1}, {"before": -1}], ids=repr)
async def test_list_refuses_bad_pages(checkpointer: Checkpointer, page: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"limit|super_step"):
        await checkpointer.list(WF, "r", **page)


async def test_list_runs_is_every_run_with_a_snapshot_in_order(checkpointer: Checkpointer) -> None:
    for run in ("b", "a", "c:1", "\u4e2d"):
        await checkpointer.save(snap(run, 0))
    await checkpointer.save(snap("other-workflow-run", 0, wf="wf-other"))
    assert await checkpointer.list_runs(WF) == ["a", "b", "c:1", "\u4e2d"]
    assert await checkpointer.list_runs("wf-none") == []


async def test_list_runs_includes_forks(checkpointer: Checkpointer) -> None:
    await checkpointer.save(snap("r", 0))
    forked = await checkpointer.fork(CheckpointKey(WF, "r", 0))
    assert await checkpointer.list_runs(WF) == sorted(["r", forked])


async def test_list_runs_pages(checkpointer: Checkpointer) -> None:
    runs = [f"run-{i:03d}" for i in range(25)]
    for run in reversed(runs):
        await checkpointer.save(snap(run, 0))
    seen: list[str] = []
    page = await checkpointer.list_runs(WF, limit=10)
    while page:
        assert len(page) <= 10
        seen += page
        page = await checkpointer.list_runs(WF, limit=10, after=page[-1])
    assert seen == runs


async def test_delete_run_removes_every_snapshot(checkpointer: Checkpointer) -> None:
    for step in range(3):
        await checkpointer.save(snap("r", step))
    assert await checkpointer.delete_run(WF, "r") is True
    assert await checkpointer.latest(WF, "r") is None
    assert await checkpointer.list(WF, "r") == []
    assert await checkpointer.load(CheckpointKey(WF, "r", 0)) is None
    assert await checkpointer.list_runs(WF) == []


async def test_delete_of_an_unknown_run_is_false(checkpointer: Checkpointer) -> None:
    assert await checkpointer.delete_run(WF, "never") is False


async def test_delete_run_leaves_other_runs_and_forks(checkpointer: Checkpointer) -> None:
    await checkpointer.save(snap("r", 0))
    await checkpointer.save(snap("keep", 0))
    forked = await checkpointer.fork(CheckpointKey(WF, "r", 0))
    await checkpointer.delete_run(WF, "r")
    assert await checkpointer.list_runs(WF) == sorted(["keep", forked])
    copy = await checkpointer.latest(WF, forked)
    assert copy is not None
    assert copy.values == {"step": 0}


async def test_a_deleted_run_can_start_again(checkpointer: Checkpointer) -> None:
    await checkpointer.save(snap("r", 5))
    await checkpointer.delete_run(WF, "r")
    await checkpointer.save(snap("r", 0), exclusive=True)
    assert await steps_of(checkpointer, "r") == [0]


async def test_keep_last_trims_the_oldest_steps_on_save(backend: Backend) -> None:
    cp = backend.make(keep_last=3)
    for step in range(6):
        await cp.save(snap("r", step))
    assert await steps_of(cp, "r") == [3, 4, 5]
    assert await cp.load(CheckpointKey(WF, "r", 2)) is None
    assert await cp.load(CheckpointKey(WF, "r", 3)) is not None


async def test_keep_last_keeps_the_highest_steps(backend: Backend) -> None:
    cp = backend.make(keep_last=2)
    for step in (5, 9, 1):
        await cp.save(snap("r", step))
    assert await steps_of(cp, "r") == [5, 9]


@pytest.mark.parametrize("keep_last", [0, -2, True, 1.5], ids=repr)
def test_keep_last_must_be_a_positive_int(backend: Backend, keep_last: int) -> None:
    with pytest.raises((TypeError, ValueError), match="keep_last"):
        backend.make(keep_last=keep_last)


@pytest.mark.parametrize("backend", REDIS_BACKENDS, indirect=True)
async def test_keep_last_leaves_no_trimmed_hash_behind(backend: Backend) -> None:
    cp = backend.make(keep_last=2)
    for step in range(5):
        await cp.save(snap("r", step))
    snapshot_keys = [k for k in await backend.raw_keys() if b":snap:" in k]
    assert sorted(k.rsplit(b":", 1)[1] for k in snapshot_keys) == [b"3", b"4"]


@pytest.mark.parametrize("backend", REDIS_BACKENDS, indirect=True)
async def test_delete_run_leaves_only_a_short_lived_marker_behind(backend: Backend) -> None:
    cp = backend.make()
    for step in range(3):
        await cp.save(snap("r", step))
    await cp.delete_run(WF, "r")
    (marker,) = await backend.raw_keys()
    assert marker.endswith(b":r:deleted")
    assert 0 < await backend.client.pttl(marker) <= 60_000
