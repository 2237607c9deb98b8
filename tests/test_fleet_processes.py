"""A fleet of real worker processes on one Redis (and on a cluster), some killed with SIGKILL
mid-layer: every run completes, no layer is checkpointed twice, and every step's side effect
is counted exactly once for the layer attempt that was checkpointed."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from atomr_redis_state import RedisCheckpointer
from atomr_redis_state.testing import RedisClusterServers, RedisServer

WORKERS = 4
KILLS = 4
RUNS = [f"run-{i:02d}" for i in range(24)]
WORKFLOW = "wf-fleet-processes"
REPO = Path(__file__).resolve().parent.parent


async def spawn(url: str, cluster: bool, prefix: str, effects: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fleet_worker",
        "--url", url, *(["--cluster"] if cluster else []),
        "--prefix", prefix, "--workflow", WORKFLOW, "--runs", ",".join(RUNS),
        "--effects", str(effects), "--lease-ttl", "1.0",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def run_fleet(url: str, cluster: bool, effects: Path) -> tuple[str, int]:
    """Run the workers, SIGKILL one every so often and start a fresh one; the kills made."""
    prefix = f"fleet-{uuid.uuid4().hex[:8]}"
    workers = [await spawn(url, cluster, prefix, effects) for _ in range(WORKERS)]
    killed = 0
    while killed < KILLS:
        await asyncio.sleep(random.uniform(0.2, 0.5))
        alive = [w for w in workers if w.returncode is None]
        if not alive:
            break
        victim = random.choice(alive)
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        workers.remove(victim)
        killed += 1
        workers.append(await spawn(url, cluster, prefix, effects))
    for worker in workers:
        _, err = await asyncio.wait_for(worker.communicate(), timeout=110)
        assert worker.returncode == 0, err.decode()
    return prefix, killed


async def check(store: RedisCheckpointer, effects: Path) -> None:
    lines = (await asyncio.to_thread(effects.read_text)).splitlines()
    recorded = Counter(tuple(line.split("\t")[:3]) for line in lines)
    assert set(recorded.values()) == {1}, "an effect id was recorded twice"
    for run in RUNS:
        labels = [m.label for m in await store.list(WORKFLOW, run)]
        assert labels == ["init", "layer:0", "layer:1", "layer:2"], (run, labels)
        latest = await store.latest(WORKFLOW, run)
        assert latest is not None
        pairs = latest.values["effects"]
        assert isinstance(pairs, list)
        merged = [(str(pair[0]), str(pair[1])) for pair in pairs if isinstance(pair, list)]
        assert sorted(step for step, _ in merged) == ["a", "b", "c", "d"], (run, merged)
        for step, effect_id in merged:
            assert recorded[run, step, effect_id] == 1, (run, step, effect_id)
        assert (await store.run_record(WORKFLOW, run)).lease is None


@pytest.mark.timeout(240)
async def test_a_fleet_with_workers_killed_mid_layer_completes_every_run_once(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.tsv"
    prefix, killed = await run_fleet(redis_server.url, False, effects)
    assert killed >= 2
    async with RedisCheckpointer.from_url(redis_server.url, prefix=prefix) as store:
        await check(store, effects)


@pytest.mark.timeout(240)
async def test_a_fleet_on_a_cluster_with_workers_killed_mid_layer_completes_every_run_once(
    redis_cluster: RedisClusterServers, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.tsv"
    prefix, killed = await run_fleet(redis_cluster.url, True, effects)
    assert killed >= 2
    async with RedisCheckpointer.from_url(redis_cluster.url, cluster=True, prefix=prefix) as store:
        await check(store, effects)
