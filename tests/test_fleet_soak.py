"""A soak test of the fleet with real processes: 8 ``atomr-redis-state worker`` processes on a real
redis-server, and on a 3-master cluster while ``redis-cli --cluster reshard`` moves slots back and
forth, run 1,000 runs of 4 layers (tests/soak_workflow.py) while the test SIGKILLs workers (and
starts new ones) and SIGSTOPs others for a while (then SIGCONTs them). Some steps fail on their
first executions (the fleet retries the run); some runs fail every time (dead letters).

Checked: every run ends ``completed``, or ``failed`` when its input made it fail every time; no
layer is checkpointed twice (each super-step and label once, in order); every side effect keyed
by ``(run_id, super_step, step)`` happened once, at the super-step of its step's layer, and the
checkpointed state holds the id of that one side effect. The takeover latency after each SIGKILL
(from the kill to another worker's claim of each run the killed worker held) is at most
``lease_ttl`` + 1 s; its p50 and p99 are printed.

``ATOMR_SOAK_RUNS`` scales the number of runs (default 1,000 on both; each test takes about a
minute here). Marked ``soak``: ``-m 'not soak'`` leaves them out of a quick local run; CI runs
them.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis, RedisCluster

from atomr_redis_state import RedisCheckpointer
from atomr_redis_state.fleet import Fleet
from atomr_redis_state.testing import (
    RedisClusterServers,
    RedisServer,
    cluster_node_ids,
    require_binaries,
    reshard,
    start_cluster,
)
from tests.soak_workflow import LAYERS, WORKFLOW, WORKFLOWS, effect_keys

pytestmark = pytest.mark.soak

RUNS = int(os.environ.get("ATOMR_SOAK_RUNS", "1000"))
WORKERS = 8
CONCURRENCY = 4
IN_FLIGHT = 12  # runs submitted and not ended, at most: the fleet (32 slots) keeps spare ones
LEASE_TTL = 2.0
TAKEOVER_BOUND = LEASE_TTL + 1.0
DOOMED = 0.03  # share of runs whose step fails every time
FLAKY = 0.10  # share of runs with a step failing on its first one or two executions
REPO = Path(__file__).resolve().parent.parent
LABELS = ["init", *(f"layer:{i}" for i in range(len(LAYERS)))]


@dataclass
class Plan:
    """The runs and what each was asked to do; what the chaos did; what was measured."""

    runs: dict[str, dict[str, int]]  # run id -> {step: failing executions}
    doomed: set[str]
    kills: int = 0
    stops: int = 0
    unended: set[str] = field(default_factory=set)  # submitted, not ended yet
    takeovers: list[float] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # held runs never taken over in time


def make_plan() -> Plan:
    rng = random.Random()
    runs: dict[str, dict[str, int]] = {}
    doomed = set()
    for i in range(RUNS):
        run_id = f"soak-{i:04d}"
        step = rng.choice("abcde")
        draw = rng.random()
        if draw < DOOMED:
            runs[run_id] = {step: 1000}
            doomed.add(run_id)
        elif draw < DOOMED + FLAKY:
            runs[run_id] = {step: rng.choice((1, 2))}
        else:
            runs[run_id] = {}
    return Plan(runs, doomed)


class WorkerProcesses:
    """The worker processes: started, killed, stopped and continued by the test."""

    def __init__(self, url: str, cluster: bool, prefix: str, effects: str, logs: Path) -> None:
        self.url, self.cluster, self.prefix, self.logs = url, cluster, prefix, logs
        self.env = {
            **os.environ,
            "SOAK_REDIS_URL": url,
            "SOAK_CLUSTER": "1" if cluster else "0",
            "SOAK_KEY": effects,
        }
        for name in ("ATOMR_REDIS_URL", "ATOMR_PREFIX", "ATOMR_CLUSTER"):
            self.env.pop(name, None)
        self.workers: list[asyncio.subprocess.Process] = []
        self.stopped: set[int] = set()
        self.born: dict[int, float] = {}
        self.log_of: dict[int, Path] = {}

    async def start(self) -> asyncio.subprocess.Process:
        log = self.logs / f"worker-{len(self.workers)}.log"
        with log.open("wb") as stderr:  # a file: a pipe nobody reads would block the worker
            process = await self._spawn(stderr)
        self.log_of[process.pid] = log
        self.workers.append(process)
        self.born[process.pid] = time.monotonic()
        return process

    async def _spawn(self, stderr: Any) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "atomr_redis_state.cli", "worker",
            "tests.soak_workflow:WORKFLOWS", "--concurrency", str(CONCURRENCY),
            "--lease-ttl", str(LEASE_TTL), "--redis-url", self.url, "--prefix", self.prefix,
            *(["--cluster"] if self.cluster else []),
            cwd=REPO, env=self.env, stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip

    def running(self) -> list[asyncio.subprocess.Process]:
        """Workers alive, not stopped, started more than a second ago (they have beaten)."""
        settled = time.monotonic() - 1.0
        return [
            w
            for w in self.workers
            if w.returncode is None and w.pid not in self.stopped and self.born[w.pid] < settled
        ]

    async def kill_the_rest(self) -> None:
        """SIGKILL any worker still running (after a failure) and reap every one."""
        for worker in self.workers:
            if worker.returncode is None:
                worker.kill()
            await worker.wait()

    async def shutdown(self, store: RedisCheckpointer) -> None:
        """SIGCONT the stopped; once every worker has beaten (it handles signals by then),
        SIGTERM everyone: each stops gracefully (exit 0)."""
        alive = [w for w in self.workers if w.returncode is None]
        for worker in alive:
            with suppress(ProcessLookupError):  # it exited: its exit code tells below
                worker.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 30
        while {w.pid for w in alive if w.returncode is None} - await beating(store):
            assert time.monotonic() < deadline, "a worker never sent a heartbeat"
            await asyncio.sleep(0.1)
        for worker in alive:
            with suppress(ProcessLookupError):
                worker.send_signal(signal.SIGTERM)
        for worker in self.workers:
            await asyncio.wait_for(worker.wait(), timeout=60)
            log = self.log_of[worker.pid].read_text(errors="replace")
            assert worker.returncode in (0, -signal.SIGKILL), log[-3000:]


async def chaos(
    fleet: WorkerProcesses, store: RedisCheckpointer, plan: Plan, done: asyncio.Event
) -> None:
    """Until ``done``: every second or so, SIGKILL a worker (measuring the takeover of its runs,
    and starting a new one) or SIGSTOP one for 0.5-4 s."""
    measuring: set[asyncio.Task[None]] = set()
    while not done.is_set():
        await asyncio.sleep(random.uniform(0.6, 1.4))
        candidates = fleet.running()
        if len(candidates) < 4:
            continue
        victim = random.choice(candidates)
        if random.random() < 0.5:
            owner = await owner_of(store, victim.pid)
            victim.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            plan.kills += 1
            await victim.wait()
            await fleet.start()
            if owner is not None:
                task = asyncio.create_task(measure_takeover(store, plan, owner, killed_at))
                measuring.add(task)
                task.add_done_callback(measuring.discard)
        else:
            victim.send_signal(signal.SIGSTOP)
            fleet.stopped.add(victim.pid)
            plan.stops += 1
            task = asyncio.create_task(resume_later(fleet, victim, random.uniform(0.5, 4.0)))
            measuring.add(task)
            task.add_done_callback(measuring.discard)
    await asyncio.gather(*measuring)


async def resume_later(
    fleet: WorkerProcesses, worker: asyncio.subprocess.Process, after: float
) -> None:
    await asyncio.sleep(after)
    if worker.returncode is None:
        worker.send_signal(signal.SIGCONT)
    fleet.stopped.discard(worker.pid)


async def beating(store: RedisCheckpointer) -> set[int]:
    """The pids of the workers with a live heartbeat."""
    return {int(str(w.info["pid"])) for w in await store.workers() if isinstance(w.info, dict)}


async def owner_of(store: RedisCheckpointer, pid: int) -> str | None:
    """The worker id (its leases' owner) of the worker process ``pid``, from its heartbeat."""
    for worker in await store.workers():
        if isinstance(worker.info, dict) and worker.info.get("pid") == pid:
            return worker.worker_id
    return None


async def measure_takeover(
    store: RedisCheckpointer, plan: Plan, owner: str, killed_at: float
) -> None:
    """For each run ``owner`` held when it was killed: the seconds until another worker held it
    (or it ended)."""
    held = sorted(plan.unended)
    records = await asyncio.gather(*(store.run_record(WORKFLOW, run) for run in held))
    orphans = [
        run for run, r in zip(held, records, strict=True) if r.lease and r.lease.owner == owner
    ]
    pending = set(orphans)
    while pending:
        if time.monotonic() - killed_at > TAKEOVER_BOUND + 10:
            plan.lost += sorted(pending)
            return
        await asyncio.sleep(0.02)
        runs = sorted(pending)
        records = await asyncio.gather(*(store.run_record(WORKFLOW, run) for run in runs))
        for run, record in zip(runs, records, strict=True):
            moved = record.lease is not None and record.lease.owner != owner
            if moved or (record.queue is not None and record.queue.state != "running"):
                if moved:
                    plan.takeovers.append(time.monotonic() - killed_at)
                pending.discard(run)


async def submit_all(store: RedisCheckpointer, plan: Plan) -> None:
    """Submit the runs, keeping at most IN_FLIGHT of them not ended, until all have ended."""
    fleet = Fleet(store, WORKFLOWS)
    waiting = list(plan.runs)
    unended = plan.unended
    deadline = time.monotonic() + 600
    while waiting or unended:
        assert time.monotonic() < deadline, (
            f"{len(unended)} runs never ended: {sorted(unended)[:5]}"
        )
        while waiting and len(unended) < IN_FLIGHT:
            run_id = waiting.pop()
            await fleet.submit(WORKFLOW, {"fail": plan.runs[run_id]}, run_id=run_id)
            unended.add(run_id)
        await asyncio.sleep(0.05)
        runs = sorted(unended)
        records = await asyncio.gather(*(store.run_record(WORKFLOW, run) for run in runs))
        for run, record in zip(runs, records, strict=True):
            if record.queue is not None and record.queue.state in ("completed", "failed"):
                unended.discard(run)


async def soak(url: str, cluster: bool, logs: Path) -> tuple[Plan, str, str]:
    prefix, effects = f"soak-{uuid.uuid4().hex[:8]}", f"effects-{uuid.uuid4().hex[:8]}"
    plan = make_plan()
    fleet = WorkerProcesses(url, cluster, prefix, effects, logs)
    async with RedisCheckpointer.from_url(url, cluster=cluster, prefix=prefix) as store:
        for _ in range(WORKERS):
            await fleet.start()
        done = asyncio.Event()
        troubles = asyncio.create_task(chaos(fleet, store, plan, done))
        try:
            await submit_all(store, plan)
        finally:
            done.set()
            try:
                await troubles
                await fleet.shutdown(store)
            finally:
                await fleet.kill_the_rest()
    return plan, prefix, effects


async def check(
    url: str, cluster: bool, prefix: str, effects_base: str, plan: Plan
) -> Counter[str]:
    """Every run ended as planned, each layer checkpointed once, each side effect once."""
    client: Any = RedisCluster.from_url(url) if cluster else Redis.from_url(url)
    effects_key, repeats_key, _ = effect_keys(effects_base)
    recorded = {k.decode(): v.decode() for k, v in (await client.hgetall(effects_key)).items()}
    repeats = sum(int(v) for v in (await client.hgetall(repeats_key)).values())
    await client.aclose()
    by_run: dict[str, dict[str, tuple[int, str]]] = {}
    for key, winner in recorded.items():
        run, super_step, step = key.split("|")
        assert step not in by_run.setdefault(run, {}), (
            f"{run} {step}: a side effect at two super-steps"
        )
        by_run[run][step] = (int(super_step), winner)
    layer_of = {step: i for i, layer in enumerate(LAYERS) for step in layer}
    ended: Counter[str] = Counter()
    async with RedisCheckpointer.from_url(url, cluster=cluster, prefix=prefix) as store:
        for run in plan.runs:
            record = await store.run_record(WORKFLOW, run)
            assert record.queue is not None
            state = record.queue.state
            ended[state] += 1
            assert state == ("failed" if run in plan.doomed else "completed"), (run, state)
            assert record.lease is None, run
            metas = await store.list(WORKFLOW, run)
            assert [m.super_step for m in metas] == list(range(len(metas))), run
            assert [m.label for m in metas] == LABELS[: len(metas)], (run, metas)
            done = by_run.get(run, {})
            for step, (super_step, _) in done.items():
                assert super_step == layer_of[step], (run, step, super_step)
            latest = await store.latest(WORKFLOW, run)
            assert latest is not None
            stored = latest.values["effects"]
            assert isinstance(stored, list)
            checkpointed = {
                str(e[0]): (int(str(e[1])), str(e[2])) for e in stored if isinstance(e, list)
            }
            assert len(checkpointed) == len(stored), (run, stored)
            for step, effect in checkpointed.items():
                assert done.get(step) == effect, (run, step, effect, done.get(step))
            if state == "completed":
                assert len(metas) == len(LABELS), run
                assert set(checkpointed) == set(layer_of), run
            else:
                [doomed_step] = plan.runs[run]
                assert doomed_step not in done, run
                unsaved = set(done) - set(checkpointed)
                assert all(layer_of[s] == layer_of[doomed_step] for s in unsaved), (run, unsaved)
    ended["side effects repeated (deduplicated by their key)"] = repeats
    return ended


def report(where: str, plan: Plan, ended: Counter[str], seconds: float) -> str:
    latencies = sorted(plan.takeovers)
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = (
        latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        if latencies
        else float("nan")
    )
    return (
        f"\nsoak on {where}: {RUNS} runs in {seconds:.0f} s; {plan.kills} SIGKILL, "
        f"{plan.stops} SIGSTOP; ended {dict(ended)}; takeovers after SIGKILL: "
        f"{len(latencies)}, p50 {p50:.2f} s, p99 {p99:.2f} s, max "
        f"{max(latencies, default=float('nan')):.2f} s (bound {TAKEOVER_BOUND:.1f} s)"
    )


def assert_takeovers(plan: Plan) -> None:
    assert plan.kills >= 3, "too few kills to measure takeovers"
    assert plan.lost == [], f"runs of killed workers never taken over: {plan.lost}"
    if RUNS >= 300:  # fewer runs (ATOMR_SOAK_RUNS) may end before a kill lands on a held run
        assert plan.takeovers, "no run was held by a killed worker"
    assert max(plan.takeovers) <= TAKEOVER_BOUND, sorted(plan.takeovers)[-5:]


@pytest.mark.timeout(600)
async def test_a_soak_of_1000_runs_on_redis_with_workers_killed_and_stopped(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    started = time.monotonic()
    plan, prefix, effects = await soak(redis_server.url, False, tmp_path)
    ended = await check(redis_server.url, False, prefix, effects, plan)
    with capsys.disabled():
        print(report("one redis-server", plan, ended, time.monotonic() - started))
    assert_takeovers(plan)


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    require_binaries()
    cluster = start_cluster(tmp_path / "cluster")
    yield cluster
    cluster.stop()


def reshard_until(cluster: RedisClusterServers, stop: threading.Event, moves: list[float]) -> None:
    """Move 2000 slots from the first master to the second and back, until ``stop``."""
    ids = cluster_node_ids(cluster)
    first, second = (ids[node.port] for node in cluster.nodes[:2])
    there = True
    while not stop.is_set():
        t = time.monotonic()
        reshard(cluster, *((first, second) if there else (second, first)), 2000)
        moves.append(time.monotonic() - t)
        there = not there
        stop.wait(1.0)


@pytest.mark.timeout(900)
async def test_a_soak_of_1000_runs_on_a_cluster_during_a_live_reshard(
    own_cluster: RedisClusterServers, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    started = time.monotonic()
    stop, moves = threading.Event(), list[float]()
    resharding = asyncio.create_task(asyncio.to_thread(reshard_until, own_cluster, stop, moves))
    try:
        plan, prefix, effects = await soak(own_cluster.url, True, tmp_path)
    finally:
        stop.set()
        await resharding
    ended = await check(own_cluster.url, True, prefix, effects, plan)
    with capsys.disabled():
        print(report("a 3-master cluster", plan, ended, time.monotonic() - started))
        print(f"  {len(moves)} reshards of 2000 slots during the soak")
    assert len(moves) >= 2, "the soak ended before two reshards"
    assert_takeovers(plan)
