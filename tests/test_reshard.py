"""A live reshard: on a fresh 3-master cluster of its own, 4 worker processes save (exclusive)
and fork on runs whose slots the test moves with ``redis-cli --cluster reshard`` (3000 slots from
one master to another and back, twice) while they work. Two of the workers use the store's
defaults, two a client with no redis-py retries and a near-zero ``retry_for``, so that whatever
the reshard does to a call reaches the worker's own retry loop.

Checked: no worker saw an exception other than StoreUnavailableError (which it retries with the
same arguments); nothing is lost (every acknowledged save and fork is there, as written);
nothing is doubled (each run holds exactly the steps acknowledged, a retried exclusive save never
conflicted with its own write, a retried fork made one fork); no orphan or partial keys (every
snapshot hash has ``:label`` and ``:ts`` and belongs to a step of its run's steps set)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from atomr_redis_state import CheckpointKey, RedisCheckpointer
from atomr_redis_state.store.redis.keys import bucket_of
from atomr_redis_state.testing import (
    RedisClusterServers,
    cluster_node_ids,
    cluster_slot_owner,
    require_binaries,
    reshard,
    start_cluster,
)

WF = "wf-reshard"
WORKERS = 4
RUNS_PER_WORKER = 3
MOVED_SLOTS = 3000
REPO = Path(__file__).resolve().parent.parent


def slot_of(run_id: str) -> int:
    return key_slot(f"{{{bucket_of(WF, run_id):02x}}}".encode())


def runs_in_slots(low: int, high: int, count: int) -> list[str]:
    """``count`` run ids whose keys live in slots low..high (the slots the test moves)."""
    found = []
    for i in range(100_000):
        run = f"run-{i}"
        if low <= slot_of(run) <= high:
            found.append(run)
            if len(found) == count:
                return found
    raise AssertionError("not enough runs in the moved slots")


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    require_binaries()
    cluster = start_cluster(tmp_path / "cluster")
    yield cluster
    cluster.stop()


async def spawn(
    url: str, prefix: str, runs: list[str], worker: int, barrier: Path
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.reshard_worker",
        "--url", url, "--prefix", prefix, "--workflow", WF, "--runs", ",".join(runs),
        "--worker", str(worker), "--barrier", str(barrier), "--deadline", "60", "--pause", "0.01",
        *(["--impatient"] if worker % 2 else []),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


@pytest.mark.timeout(90)
async def test_saves_and_forks_survive_a_live_reshard_there_and_back(
    own_cluster: RedisClusterServers, tmp_path: Path
) -> None:
    started = time.monotonic()
    cluster = own_cluster
    ids = cluster_node_ids(cluster)
    source_port = cluster_slot_owner(cluster, 0)
    target_port = next(port for port in ids if port != source_port)
    # The slots reshard moves: the lowest MOVED_SLOTS the source owns (0.. on a fresh cluster).
    runs = runs_in_slots(0, MOVED_SLOTS - 1, WORKERS * RUNS_PER_WORKER)
    assert {cluster_slot_owner(cluster, slot_of(run)) for run in runs} == {source_port}

    prefix = f"reshard-{uuid.uuid4().hex[:8]}"
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    workers = [
        await spawn(
            cluster.url, prefix, runs[w * RUNS_PER_WORKER : (w + 1) * RUNS_PER_WORKER], w, barrier
        )
        for w in range(WORKERS)
    ]
    reshard_seconds: list[float] = []
    try:
        deadline = time.monotonic() + 30
        while len(list(barrier.glob("ready-*"))) < WORKERS:
            assert time.monotonic() < deadline, "the workers did not start"
            assert all(w.returncode is None for w in workers), "a worker exited early"
            await asyncio.sleep(0.02)
        (barrier / "go").touch()
        await asyncio.sleep(1.0)
        there, back = (source_port, target_port), (target_port, source_port)
        for source, target in [there, back, there, back]:
            t = time.monotonic()
            await asyncio.to_thread(reshard, cluster, ids[source], ids[target], MOVED_SLOTS)
            reshard_seconds.append(time.monotonic() - t)
            moved_to = {cluster_slot_owner(cluster, slot_of(run)) for run in runs}
            assert moved_to == {target}, "the runs' slots did not move"
        await asyncio.sleep(1.0)
    finally:
        (barrier / "stop").touch()
    reports = []
    for process in workers:
        out, err = await asyncio.wait_for(process.communicate(), timeout=30)
        assert process.returncode == 0, err.decode()
        reports.append(json.loads(out))

    failures = {r["worker"]: r["failures"] for r in reports if r["failures"]}
    assert failures == {}, (
        f"workers saw untyped errors or conflicts with their own writes: {failures}"
    )

    async with RedisCheckpointer.from_url(cluster.url, cluster=True, prefix=prefix) as store:
        await check_everything_acknowledged_is_there_once(store, reports)
    await check_no_orphan_or_partial_keys(cluster, prefix)
    saves = sum(len(r["saves"]) for r in reports)
    print(  # shown with -s
        f"reshard {MOVED_SLOTS} slots: {', '.join(f'{s:.1f} s' for s in reshard_seconds)}; "
        f"{saves} saves, {sum(len(r['forks']) for r in reports)} forks, "
        f"{sum(r['unavailable'] for r in reports)} StoreUnavailableError, "
        f"{sum(len(r['retried']) for r in reports)} retried ops; "
        f"test {time.monotonic() - started:.1f} s"
    )
    assert saves > 100, "too little work happened during the reshard"


async def check_everything_acknowledged_is_there_once(
    store: RedisCheckpointer, reports: list[dict[str, Any]]
) -> None:
    acked: dict[str, list[int]] = defaultdict(list)
    for report in reports:
        for run, step in report["saves"]:
            acked[run].append(step)
    for run, steps in acked.items():
        stored = [m.super_step for m in await store.list(WF, run)]
        assert stored == sorted(steps), f"{run}: stored {stored}, acked {sorted(steps)}"
        assert stored == list(range(len(stored)))
    checks: list[Callable[[], Awaitable[None]]] = []
    for report in reports:
        worker = report["worker"]
        checks += [partial(check_save, store, worker, *save) for save in report["saves"]]
        checks += [partial(check_fork, store, worker, *fork) for fork in report["forks"]]
    for i in range(0, len(checks), 500):
        await asyncio.gather(*(check() for check in checks[i : i + 500]))
    expected_runs = set(acked) | {f for r in reports for f, _, _ in r["forks"]}
    listed: list[str] = []
    while page := await store.list_runs(WF, limit=1000, after=listed[-1] if listed else None):
        listed += page
    assert sorted(listed) == sorted(expected_runs)


async def check_save(store: RedisCheckpointer, worker: int, run: str, step: int) -> None:
    snapshot = await store.load(CheckpointKey(WF, run, step))
    assert snapshot is not None, f"lost: {run}@{step}"
    assert snapshot.values == {"worker": worker, "run": run, "step": step}


async def check_fork(
    store: RedisCheckpointer, worker: int, fork_id: str, run: str, step: int
) -> None:
    forked = await store.list(WF, fork_id)
    assert [m.super_step for m in forked] == [step], f"fork {fork_id}"
    assert forked[0].label == f"fork-of:{run}"
    snapshot = await store.load(CheckpointKey(WF, fork_id, step))
    assert snapshot is not None
    assert snapshot.values == {"worker": worker, "run": run, "step": step, "forked": True}


async def check_no_orphan_or_partial_keys(cluster: RedisClusterServers, prefix: str) -> None:
    for node in cluster.nodes:
        client = Redis(host="127.0.0.1", port=node.port)
        try:
            async for key in client.scan_iter(match=f"{prefix}:*:snap:*", count=1000):
                fields = await client.hkeys(key)
                assert b":label" in fields, f"partial {key!r}: {fields}"
                assert b":ts" in fields, f"partial {key!r}: {fields}"
                run_part, _, step = key.rpartition(b":snap:")
                steps_key = run_part + b":steps"
                assert await client.zscore(steps_key, step) is not None, f"orphan {key!r}"
            async for steps_key in client.scan_iter(match=f"{prefix}:*:steps", count=1000):
                run_part = steps_key[: -len(b":steps")]
                for step in await client.zrange(steps_key, 0, -1):
                    assert await client.exists(run_part + b":snap:" + step), (steps_key, step)
        finally:
            await client.aclose()
