"""Throughput of the agent-loop workload (benchmarks/workload.py): store vs floor vs memory.

``python -m benchmarks.agent_loop --help``, and see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import orjson
import redis
from redis.asyncio import Redis, RedisCluster

from atomr_redis_state import JSON, InMemoryCheckpointer, RedisCheckpointer, new_run_id
from atomr_redis_state.testing import running_cluster, running_server

from . import workload
from .workload import WORKFLOW, Contender, Lane, StoreContender, median

STORE, FLOOR, MEMORY = "RedisCheckpointer", "floor", "InMemoryCheckpointer"


class FloorContender:
    """The fewest redis-py calls for the same work, with the same data in Redis: per run a sorted
    set of steps and per step a hash of ``orjson.dumps`` channels (see benchmarks/README.md)."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self.client, self.prefix = client, prefix

    async def _write(self, run_id: str, step: int, fields: dict[Any, Any]) -> None:
        run = f"{self.prefix}:{WORKFLOW}:{run_id}"
        fields |= {b":ts": time.time_ns() // 10**6}
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(f"{run}:snap:{step}", mapping=fields)
            pipe.zadd(f"{run}:steps", {str(step): step})
            await pipe.execute()

    async def save(self, run_id: str, step: int, values: dict[str, JSON]) -> None:
        fields = {name: orjson.dumps(value) for name, value in values.items()}
        await self._write(run_id, step, {**fields, b":label": workload.LABEL})

    async def latest(self, run_id: str) -> tuple[int, dict[str, JSON]] | None:
        run = f"{self.prefix}:{WORKFLOW}:{run_id}"
        top = cast(list[bytes], await self.client.zrevrange(f"{run}:steps", 0, 0))
        if not top:
            return None
        stored = cast(dict[bytes, bytes], await self.client.hgetall(f"{run}:snap:{int(top[0])}"))
        return int(top[0]), {k.decode(): orjson.loads(v) for k, v in stored.items() if k[0] != 58}

    async def list(self, run_id: str) -> list[workload.Row]:
        run = f"{self.prefix}:{WORKFLOW}:{run_id}"
        steps = cast(list[bytes], await self.client.zrange(f"{run}:steps", 0, -1))
        async with self.client.pipeline(transaction=False) as pipe:
            for step in steps:
                pipe.hmget(f"{run}:snap:".encode() + step, [b":ts", b":label"])
            metas = cast(list[list[bytes]], await pipe.execute())
        return [(int(s), int(ts), lb.decode()) for s, (ts, lb) in zip(steps, metas, strict=True)]

    async def fork(self, run_id: str, step: int, edits: dict[str, JSON]) -> str:
        key = f"{self.prefix}:{WORKFLOW}:{run_id}:snap:{step}"
        fields = cast(dict[bytes, bytes], await self.client.hgetall(key))
        if not fields:
            raise workload.WorkloadError(f"{run_id}: nothing to fork at step {step}")
        fields |= {name.encode(): orjson.dumps(value) for name, value in edits.items()}
        fork_id = f"{run_id}~fork-{uuid.uuid4().hex}"
        await self._write(fork_id, step, fields | {b":label": f"fork-of:{run_id}".encode()})
        return fork_id


class Probe:
    """Wraps a contender to count per kind of operation the round trips, the commands sent and
    the commands the server ran; used for one sequential run, so the deltas are exact."""

    def __init__(self, inner: Contender, wire: Counter[str], admin: Redis) -> None:
        self.inner, self.wire, self.admin = inner, wire, admin
        self.counts: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def __getattr__(self, op: str) -> Callable[..., Awaitable[Any]]:
        async def counted(*args: Any) -> Any:
            sent, before = Counter(self.wire), await workload.server_sample(self.admin)
            result = await getattr(self.inner, op)(*args)
            ran = await workload.server_sample(self.admin) - before
            self.counts[op].update({k[6:]: v for k, v in ran.items() if k.startswith("calls ")})
            self.counts[op].update({f" {k}": v for k, v in (self.wire - sent).items()}, n=1)
            return result

        return counted

    def rows(self, name: str) -> list[dict[str, Any]]:
        rows = []
        for op, c in self.counts.items():
            n, rt, cmd = c.pop("n"), c.pop(" round_trips", 0), c.pop(" commands", 0)
            ran = ", ".join(f"{k} {v / n:g}" for k, v in sorted(c.items()))
            row = {"contender": name, "op": op, "rt": rt / n, "cmd": cmd / n, "srv": c.total() / n}
            rows.append(row | {"ran": ran})
        return rows


async def benchmark(args: argparse.Namespace, url: str) -> dict[str, Any]:
    admin, token = Redis.from_url(url), uuid.uuid4().hex[:12]
    (store_client, store_wire), (floor_client, floor_wire) = (
        workload.make_client(url, args.concurrency + 16) for _ in "ab"
    )
    store = RedisCheckpointer(store_client, prefix=f"agentloop-{token}-store")
    floor = FloorContender(floor_client, f"agentloop-{token}-floor")
    lanes = [
        Lane(STORE, lambda: StoreContender(store), store.keys.prefix, store_wire),
        Lane(FLOOR, lambda: floor, floor.prefix, floor_wire),
        Lane(MEMORY, lambda: StoreContender(InMemoryCheckpointer())),  # a fresh one per round
    ]
    try:
        env = await workload.environment(admin, store_client)
        rows = [row for row, _ in await workload.rounds(admin, lanes, args)]
        floor_ops = {r["round"]: r["ops/s"] for r in rows if r["contender"] == FLOOR}
        for row in rows:
            row["/floor"] = row["ops/s"] / floor_ops[row["round"]]
        table = workload.medians(rows, "contender")
        for row in table:  # the median of the per-round ratios, then the ratio of the medians
            row["/floor by round"] = row["/floor"]
            row["/floor"] = row["ops/s"] / median(floor_ops.values())

        per_operation = []
        for lane in lanes[:2]:  # the Redis contenders
            probe = Probe(lane.make(), lane.wire, admin)
            await workload.agent_run(cast(Contender, probe), new_run_id())
            await workload.delete_prefix(admin, lane.prefix)
            per_operation += probe.rows(lane.name)

        if args.profile:  # one more round of the store alone, its stats to a .prof file
            with cProfile.Profile() as profiler:
                await workload.drive(lanes[0], args.runs, args.concurrency)
            profiler.dump_stats(args.profile)
            workload.log(f"wrote {args.profile}: python -m pstats {args.profile}, or snakeviz it")
        return {
            "environment": env,
            "workload": {k: vars(args)[k] for k in ("runs", "concurrency", "warmup")},
            "by round": rows,
            "median over rounds": table,
            "per kind of operation, one sequential run": per_operation,
        }
    finally:
        for lane in lanes:
            await workload.delete_prefix(admin, lane.prefix)
        for client in (store_client, floor_client, admin):
            await client.aclose()


# Scaling: the same workload from 1, 2, 4... client processes against one server (or cluster).


def _process(
    url: str,
    cluster: bool,
    name: str,
    prefix: str,
    args: argparse.Namespace,
    start: Any,
    results: Any,
) -> None:
    """One client process: warm up, wait for the others, drive ``--runs`` runs, report."""

    async def go() -> None:
        client: Any
        if cluster:
            client = RedisCluster.from_url(url, max_connections=args.concurrency + 16)
        else:
            client = Redis.from_url(url, max_connections=args.concurrency + 16)
        contender: Contender
        if name == STORE:
            contender = StoreContender(RedisCheckpointer(client, prefix=prefix))
        else:
            contender = FloorContender(client, prefix)
        lane = Lane(name, lambda: contender, prefix)
        await workload.drive(lane, args.warmup, args.concurrency)
        start.wait()
        seconds, cpu = await workload.drive(lane, args.runs, args.concurrency)
        results.put((seconds, cpu))
        await client.aclose()

    asyncio.run(go())


def _server_cpu(ports: Sequence[int]) -> float:
    """The main-thread CPU microseconds of every server (every cluster node) so far."""
    used = 0.0
    for port in ports:
        with redis.Redis(host="127.0.0.1", port=port) as admin:
            cpu = cast(dict[str, Any], admin.info("cpu"))
        used += float(cpu["used_cpu_sys_main_thread"]) + float(cpu["used_cpu_user_main_thread"])
    return used * 1e6


def scaling(args: argparse.Namespace, url: str, ports: Sequence[int], cluster: bool) -> list[Any]:
    """Per contender and number of processes: aggregate ops/s, and its ratio to one process."""
    target = "3-master cluster" if cluster else "one server"
    contenders = [STORE] if cluster else [STORE, FLOOR]  # the floor's keys span slots
    context = multiprocessing.get_context("spawn")
    rows: list[dict[str, Any]] = []
    for n in args.scaling:
        for name in contenders:
            measured = []
            for _ in range(args.rounds):
                prefix = f"scaling-{uuid.uuid4().hex[:12]}"
                start, results = context.Barrier(n), context.Queue()
                procs = [
                    context.Process(
                        target=_process,
                        args=(url, cluster, name, f"{prefix}-{i}", args, start, results),
                    )
                    for i in range(n)
                ]
                cpu0 = _server_cpu(ports)
                for proc in procs:
                    proc.start()
                got = [results.get(timeout=600) for _ in procs]
                for proc in procs:
                    proc.join()
                server_us = _server_cpu(ports) - cpu0
                _cleanup(ports, prefix)
                ops = n * args.runs * workload.OPS_PER_RUN
                wall = max(seconds for seconds, _ in got)
                measured.append(
                    {
                        "ops/s": ops / wall,
                        "cli µs/op": sum(cpu for _, cpu in got) / ops * 1e6,
                        "srv µs/op": server_us / ops,
                    }
                )
                workload.log(f"{target}: {name} x{n}: {ops / wall:,.0f} ops/s")
            row = {"target": target, "contender": name, "processes": n}
            rows.append(row | {k: median(m[k] for m in measured) for k in measured[0]})
    for row in rows:
        one = next(
            r["ops/s"]
            for r in rows
            if r["processes"] == args.scaling[0] and r["contender"] == row["contender"]
        )
        row[f"x {args.scaling[0]} process"] = row["ops/s"] / one
    return rows


def _cleanup(ports: Sequence[int], prefix: str) -> None:
    """Delete the keys of one scaling round on every server (SCAN MATCH + UNLINK, no FLUSH)."""
    for port in ports:
        with redis.Redis(host="127.0.0.1", port=port) as admin:
            while keys := list(admin.scan_iter(match=f"{prefix}*", count=1000)):
                with admin.pipeline(transaction=False) as pipe:
                    for key in keys:  # one key a command: a cluster node's keys span slots
                        pipe.unlink(key)
                    pipe.execute()


def main(argv: Sequence[str] | None = None) -> None:
    parser = workload.options(__doc__, "runs per contender per round (200)")
    profile = "then profile RedisCheckpointer alone into PROFILE (agent_loop.prof)"
    parser.add_argument("--profile", nargs="?", const="agent_loop.prof", help=profile)
    processes = "then drive the workload from 1, 2, 4... processes at once (e.g. 1,2,4)"
    parser.add_argument("--scaling", type=_counts, default=[], help=processes)
    cluster = "with --scaling: also against a 3-master Redis Cluster"
    parser.add_argument("--cluster", action="store_true", help=cluster)
    only = "with --scaling: skip the side-by-side rounds"
    parser.add_argument("--scaling-only", action="store_true", help=only)
    args = parser.parse_args(argv)
    with running_server() as server:
        result: dict[str, Any] = {}
        if not args.scaling_only:
            result = asyncio.run(benchmark(args, server.url))
        if args.scaling:
            result["scaling, one server"] = scaling(args, server.url, [server.port], False)
    if args.scaling and args.cluster:
        with running_cluster() as servers:
            ports = [node.port for node in servers.nodes]
            result["scaling, cluster"] = scaling(args, servers.url, ports, True)
    workload.report(result, args.json)


def _counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


if __name__ == "__main__":
    main()
