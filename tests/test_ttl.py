"""Ephemeral runs: with a ttl, a run's keys expire together, between ttl and 2*ttl after its
last save; without one, runs are kept forever."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from atomr_redis_state import CheckpointKey, InMemoryCheckpointer, Snapshot
from tests.conftest import REDIS_BACKENDS, Backend

WF = "wf-ttl"
TTL = 0.4


def snap(run: str, step: int) -> Snapshot:
    return Snapshot(CheckpointKey(WF, run, step), {"step": step})


async def test_a_run_with_a_ttl_expires_whole(backend: Backend) -> None:
    cp = backend.make(ttl=TTL)
    for step in range(5):
        await cp.save(snap("r", step))
    await asyncio.sleep(2 * TTL + 0.15)
    assert await cp.latest(WF, "r") is None
    assert await cp.list(WF, "r") == []
    assert await cp.load(CheckpointKey(WF, "r", 0)) is None
    assert await cp.list_runs(WF) == []


async def test_a_run_lives_at_least_ttl_after_its_last_save(backend: Backend) -> None:
    cp = backend.make(ttl=TTL)
    for step in range(6):  # 6 saves over 3 * TTL: longer than the first deadline
        await cp.save(snap("r", step))
        await asyncio.sleep(TTL / 2)
    await asyncio.sleep(TTL / 2 - 0.1)
    assert [m.super_step for m in await cp.list(WF, "r")] == list(range(6))
    assert await cp.load(CheckpointKey(WF, "r", 0)) is not None


async def test_a_fork_expires_too(backend: Backend) -> None:
    cp = backend.make(ttl=TTL)
    await cp.save(snap("r", 0))
    forked = await cp.fork(CheckpointKey(WF, "r", 0))
    await asyncio.sleep(2 * TTL + 0.15)
    assert await cp.latest(WF, forked) is None


async def test_without_a_ttl_runs_are_kept(backend: Backend) -> None:
    cp = backend.make()
    await cp.save(snap("r", 0))
    await asyncio.sleep(0.2)
    assert await cp.latest(WF, "r") is not None


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), timedelta(0)], ids=repr)
def test_ttl_must_be_positive(backend: Backend, ttl: float | timedelta) -> None:
    with pytest.raises(ValueError, match="ttl"):
        backend.make(ttl=ttl)


def test_ttl_must_be_a_duration(backend: Backend) -> None:
    with pytest.raises(TypeError, match="ttl"):
        backend.make(ttl="10")  # type: ignore[arg-type]


async def test_in_memory_expiry_follows_its_clock() -> None:
    now = [1_000_000]
    cp = InMemoryCheckpointer(ttl=10, clock=lambda: now[0])
    await cp.save(snap("r", 0))
    now[0] += 19_999
    assert await cp.latest(WF, "r") is not None
    await cp.save(snap("r", 1))  # less than ttl left: the deadline moves to now + 2 * ttl
    now[0] += 19_999
    assert await cp.latest(WF, "r") is not None
    now[0] += 1
    assert await cp.latest(WF, "r") is None


# Redis only: what is stored, and when it goes.


async def expiry_times(backend: Backend) -> dict[bytes, int]:
    keys = await backend.raw_keys()
    times = [await backend.client.pexpiretime(key) for key in keys]
    return dict(zip(keys, times, strict=True))


@pytest.mark.parametrize("backend", REDIS_BACKENDS, indirect=True)
async def test_every_key_of_a_run_and_its_forks_has_one_deadline(backend: Backend) -> None:
    cp = backend.make(ttl=60)
    for step in range(3):
        await cp.save(snap("r", step))
    forked = await cp.fork(CheckpointKey(WF, "r", 1))
    await cp.save(snap(forked, 2))
    times = await expiry_times(backend)
    # hashes, steps, meta, the fork's, the run index, the workflow registry
    assert len(times) == 3 + 1 + 1 + 2 + 1 + 1 + 1 + 1
    assert all(t > 0 for t in times.values()), times
    run_keys = {k: t for k, t in times.items() if b":r:" in k}
    assert len(set(run_keys.values())) == 1, run_keys


@pytest.mark.parametrize("backend", REDIS_BACKENDS, indirect=True)
async def test_a_fork_does_not_inherit_its_sources_ttl(backend: Backend) -> None:
    await backend.make(ttl=60).save(snap("r", 0))
    forked = await backend.make().fork(CheckpointKey(WF, "r", 0))
    times = await expiry_times(backend)
    fork_keys = [t for k, t in times.items() if forked.encode() in k]
    assert fork_keys == [-1, -1, -1]  # its hash, steps set and meta hash


@pytest.mark.parametrize("backend", REDIS_BACKENDS, indirect=True)
async def test_a_save_within_the_deadline_leaves_older_keys_alone(backend: Backend) -> None:
    cp = backend.make(ttl=60)
    for step in range(50):
        await cp.save(snap("r", step))
    before = await expiry_times(backend)
    await asyncio.sleep(0.01)
    await cp.save(snap("r", 50))
    after = await expiry_times(backend)
    assert {k: after[k] for k in before} == before


@pytest.mark.parametrize("backend", REDIS_BACKENDS, indirect=True)
async def test_a_refresh_moves_every_key_of_the_run_together(backend: Backend) -> None:
    cp = backend.make(ttl=TTL)
    for step in range(10):
        await cp.save(snap("r", step))
    await asyncio.sleep(TTL + 0.05)  # less than ttl left: the next save refreshes
    await cp.save(snap("r", 10))
    times = await expiry_times(backend)
    indexes = (b":runs", b":workflows")
    run_times = {t for k, t in times.items() if not k.endswith(indexes)}
    assert len(run_times) == 1
    run_time = run_times.pop()
    for suffix in indexes:
        assert next(t for k, t in times.items() if k.endswith(suffix)) >= run_time


@pytest.mark.parametrize("backend", REDIS_BACKENDS, indirect=True)
async def test_nothing_is_left_after_expiry(backend: Backend) -> None:
    cp = backend.make(ttl=TTL)
    await cp.save(snap("r", 0))
    await cp.fork(CheckpointKey(WF, "r", 0))
    await asyncio.sleep(2 * TTL + 0.15)
    assert await backend.raw_keys() == []


async def test_list_runs_never_shows_an_expired_run(backend: Backend) -> None:
    cp = backend.make(ttl=TTL)
    await cp.save(snap("r", 0))
    await asyncio.sleep(TTL * 1.2)
    forked = await cp.fork(CheckpointKey(WF, "r", 0))  # outlives r, and so does the run index
    await asyncio.sleep(TTL * 0.9)
    assert await cp.list_runs(WF) == [forked]


async def test_list_workflows_never_shows_a_workflow_whose_runs_expired(
    backend: Backend,
) -> None:
    store = backend.make(ttl=TTL)
    await store.save(snap("r", 0))
    await store.save(Snapshot(CheckpointKey("wf-kept", "r", 0), {}), hold="forever")
    assert await store.list_workflows() == sorted([WF, "wf-kept"])
    await asyncio.sleep(2 * TTL + 0.15)
    assert await store.list_workflows() == ["wf-kept"]


@pytest.mark.parametrize("backend", REDIS_BACKENDS, indirect=True)
async def test_list_runs_prunes_expired_runs_from_the_index(backend: Backend) -> None:
    cp = backend.make(ttl=TTL)
    await cp.save(snap("r", 0))
    await asyncio.sleep(TTL * 1.2)
    forked = await cp.fork(CheckpointKey(WF, "r", 0))
    await asyncio.sleep(TTL * 0.9)
    await cp.list_runs(WF)
    [index] = [k for k in await backend.raw_keys() if k.endswith(b":runs")]
    assert await backend.client.zrange(index, 0, -1) == [forked.encode()]
