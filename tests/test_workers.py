"""Many worker processes share runs through Redis and race with exclusive saves: every step of
every run is saved exactly once, nothing is lost, and the losers see CheckpointConflictError."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from atomr_redis_state import CheckpointKey, RedisCheckpointer
from atomr_redis_state.testing import RedisClusterServers, RedisServer

WORKERS = 4
RUNS = ["run-a", "run-b", "run-c"]
STEPS = 40
REPO = Path(__file__).resolve().parent.parent


def ready_workers(barrier: Path) -> int:
    return len(list(barrier.glob("ready-*")))


async def race(url: str, cluster: bool, barrier: Path) -> tuple[str, list[dict[str, object]]]:
    prefix, workflow = f"workers-{uuid.uuid4().hex[:8]}", "wf-race"
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.worker",
            "--url", url, *(["--cluster"] if cluster else []),
            "--prefix", prefix, "--workflow", workflow, "--runs", ",".join(RUNS),
            "--steps", str(STEPS), "--worker", str(worker), "--barrier", str(barrier),
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        for worker in range(WORKERS)
    ]  # fmt: skip
    for _ in range(3000):
        if ready_workers(barrier) == WORKERS or any(p.returncode is not None for p in processes):
            break
        await asyncio.sleep(0.01)
    (barrier / "go").touch()
    reports = []
    for process in processes:
        out, err = await asyncio.wait_for(process.communicate(), timeout=50)
        assert process.returncode == 0, err.decode()
        reports.append(json.loads(out))
    return prefix, reports


async def check_outcome(cp: RedisCheckpointer, reports: list[dict[str, object]]) -> None:
    winners = {
        (run, step): report["worker"]
        for report in reports
        for run, step in report["wins"]  # type: ignore[attr-defined]
    }
    won = Counter(
        (run, step)
        for report in reports
        for run, step in report["wins"]  # type: ignore[attr-defined]
    )
    assert set(won) == {(run, step) for run in RUNS for step in range(STEPS)}
    assert set(won.values()) == {1}, "a step was saved by two workers"
    assert sum(report["conflicts"] for report in reports) > 0  # type: ignore[misc]
    for run in RUNS:
        assert [m.super_step for m in await cp.list("wf-race", run)] == list(range(STEPS))
        for step in range(STEPS):
            snapshot = await cp.load(CheckpointKey("wf-race", run, step))
            assert snapshot is not None
            assert snapshot.values == {"worker": winners[run, step], "step": step}


async def test_worker_processes_racing_on_redis_save_each_step_once(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix, reports = await race(redis_server.url, False, tmp_path)
    async with RedisCheckpointer.from_url(redis_server.url, prefix=prefix) as cp:
        await check_outcome(cp, reports)


@pytest.mark.timeout(120)
async def test_worker_processes_racing_on_a_cluster_save_each_step_once(
    redis_cluster: RedisClusterServers, tmp_path: Path
) -> None:
    prefix, reports = await race(redis_cluster.url, True, tmp_path)
    async with RedisCheckpointer.from_url(redis_cluster.url, cluster=True, prefix=prefix) as cp:
        await check_outcome(cp, reports)
