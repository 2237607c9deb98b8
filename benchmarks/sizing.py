"""Memory and server CPU per operation of RedisCheckpointer (benchmarks/workload.py), and a sizing.

``python -m benchmarks.sizing --help``, and see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import uuid
from collections.abc import Sequence
from functools import partial
from typing import Any, cast

from redis.asyncio import Redis

from atomr_redis_state import CheckpointKey, RedisCheckpointer, Snapshot, new_run_id
from atomr_redis_state.testing import running_server

from . import workload
from .workload import FORK_AT, OPS_PER_RUN, STEPS, WORKFLOW, Lane, StoreContender

KEEP_LAST = 5
OPS_PER_STEP = 2  # a worker advancing a run by one super-step: one latest + one save
KIB, GIB = 1024, 1024**3


async def one_run(admin: Redis, store: RedisCheckpointer) -> list[dict[str, Any]]:
    """``MEMORY USAGE <key> SAMPLES 0`` (every element counted) of one run's keys and its fork's,
    with each hash's payload (the sum of its field and value lengths) and each key's encoding."""
    run_id = new_run_id()
    fork_id = await workload.agent_run(StoreContender(store), run_id)
    run, fork = store.keys.run(WORKFLOW, run_id), store.keys.run(WORKFLOW, fork_id)

    async def row(what: str, key: str) -> dict[str, Any]:
        payload = None
        if await admin.type(key) == b"hash":
            fields = cast(dict[bytes, bytes], await admin.hgetall(key))
            payload = sum(len(k) + len(v) for k, v in fields.items())
        size = await admin.memory_usage(key, samples=0)
        encoding = (await admin.object("ENCODING", key)).decode()
        return {"key": what, "bytes": size, "payload bytes": payload, "encoding": encoding}

    snapshots = [await row(f"snapshot hash, step {s}", run.snapshot(s)) for s in range(STEPS)]
    rows = [snapshots[s] for s in (0, 10, FORK_AT, STEPS - 1)]
    for what, scale in (("mean", 1 / STEPS), ("sum", 1)):
        totals = {k: sum(r[k] for r in snapshots) * scale for k in ("bytes", "payload bytes")}
        rows.append({"key": f"snapshot hashes, {what} of {STEPS}", **totals, "encoding": None})
    return [
        *rows,
        await row(f"steps sorted set ({STEPS} members)", run.steps),
        await row(f"fork: snapshot hash (step {FORK_AT})", fork.snapshot(FORK_AT)),
        await row("fork: steps sorted set", fork.steps),
        await row(f"run-index bucket ({await admin.zcard(run.run_index)} members)", run.run_index),
    ]


async def settled_used_memory(admin: Redis, clients: Sequence[Redis]) -> int:
    """``used_memory`` with every workload connection closed and no lazy free pending."""
    for client in clients:
        await client.connection_pool.disconnect()
    for _ in range(200):  # 10 s at most
        connected = int((await admin.info("clients"))["connected_clients"])
        memory = await admin.info("memory")
        if connected == 1 and not int(memory.get("lazyfree_pending_objects", 0)):
            return int(memory["used_memory"])
        await asyncio.sleep(0.05)
    raise RuntimeError(f"used_memory not settled: {connected} clients connected")


async def many_runs(
    admin: Redis, lane: Lane, clients: Sequence[Redis], args: argparse.Namespace
) -> dict[str, Any]:
    """The ``used_memory`` delta of ``--memory-runs`` runs, beside the sum of their keys' sizes."""
    runs = args.memory_runs
    before = await settled_used_memory(admin, clients)
    await workload.drive(lane, runs, args.concurrency)
    delta = await settled_used_memory(admin, clients) - before
    keys = [key async for key in admin.scan_iter(match=f"{lane.prefix}:*", count=1000)]
    async with admin.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.memory_usage(key, samples=0)
        sizes = dict(zip(keys, await pipe.execute(), strict=True))
    snapshots = [key for key in keys if b":snap:" in key]
    async with admin.pipeline(transaction=False) as pipe:
        for key in snapshots:
            pipe.hgetall(key)
        hashes = cast(list[dict[bytes, bytes]], await pipe.execute())
    payload = sum(len(k) + len(v) for fields in hashes for k, v in fields.items())
    await workload.delete_prefix(admin, lane.prefix)
    key_sum = sum(sizes.values())
    return {
        "contender": lane.name,
        "runs": runs,
        "used_memory Δ KiB": delta / KIB,
        "KiB per run": delta / runs / KIB,
        "KiB per snapshot kept": delta / runs / (lane.keep_last or STEPS) / KIB,
        "key sum KiB per run": key_sum / runs / KIB,
        "Δ / key sum": delta / key_sum,
        "payload KiB per run": payload / runs / KIB,
        "Δ / payload": delta / payload,
        "bucket bytes per run": sum(v for k, v in sizes.items() if k.endswith(b":runs")) / runs,
    }


async def long_run_list(admin: Redis, store: RedisCheckpointer, steps: int) -> dict[str, Any]:
    """Server time of ``list`` on one run of ``steps`` snapshots (small ones: the time is in
    reading the timestamps and labels), from ``INFO commandstats`` around 20 lists."""
    run_id = new_run_id()
    for step in range(steps):
        await store.save(Snapshot(CheckpointKey(WORKFLOW, run_id, step), {"k": step}, "label"))
    await store.list(WORKFLOW, run_id)  # loads whatever it needs
    lists = 20
    before = await workload.server_sample(admin)
    for _ in range(lists):
        assert len(await store.list(WORKFLOW, run_id)) == steps
    ran = await workload.server_sample(admin) - before
    await store.delete_run(WORKFLOW, run_id)
    usec = {k[5:]: v / lists for k, v in ran.items() if k.startswith("usec ") and v}
    return {
        "snapshots": steps,
        # the commands a list sends (a script's time includes the commands it calls)
        "server µs per list": sum(usec.get(c, 0) for c in ("evalsha", "hgetall", "zcard")),
        "server CPU µs per list": ran["main_cpu_us"] / lists,
        "commands (µs each per list)": ", ".join(f"{k} {v:.1f}" for k, v in sorted(usec.items())),
    }


def sizing(memory: dict[str, Any], cpu: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Memory if every run holds its snapshots; server cores at the target utilisation."""
    ops_per_s = args.target_runs * OPS_PER_STEP / args.step_interval
    gib = args.target_runs * memory["KiB per run"] * KIB / GIB
    cores = ops_per_s * cpu["cpu µs/op"] / 1e6 / args.utilisation
    shards = max(1, math.ceil(cores))
    return {
        "contender": memory["contender"],
        "GiB": gib,
        "ops/s": ops_per_s,
        f"cores at {args.utilisation:.0%}": cores,
        "shards (a core each)": shards,
        "GiB per shard": gib / shards,
    }


async def measure(args: argparse.Namespace, url: str) -> dict[str, Any]:
    admin, token = Redis.from_url(url), uuid.uuid4().hex[:12]
    stores: list[RedisCheckpointer] = []
    lanes: list[Lane] = []
    clients: list[Redis] = []
    for name, keep_last in (("default", None), (f"keep_last={KEEP_LAST}", KEEP_LAST)):
        client, wire = workload.make_client(url, args.concurrency + 16)
        prefix = f"sizing-{token}-{len(lanes)}"
        clients.append(client)
        stores.append(RedisCheckpointer(client, prefix=prefix, keep_last=keep_last))
        lanes.append(Lane(name, partial(StoreContender, stores[-1]), prefix, wire, keep_last))
    try:
        env = await workload.environment(admin, clients[0])
        ops = args.runs * OPS_PER_RUN
        by_round = []
        for row, server in await workload.rounds(admin, lanes, args):
            usec, calls = server["usec evalsha"], server["calls evalsha"]
            by_round.append(row | {"cpu µs/op": server["cpu_us"] / ops, "µs/evalsha": usec / calls})
        cpu = workload.medians(by_round, "contender")
        for row in cpu:
            row["ops/s per core"] = 1e6 / row["cpu µs/op"]
        workload.log("memory ...")
        single = await one_run(admin, stores[0])
        await workload.delete_prefix(admin, lanes[0].prefix)
        memory = [await many_runs(admin, lane, clients, args) for lane in lanes]
        listing = [await long_run_list(admin, stores[0], n) for n in (40, 1000)]
        await workload.delete_prefix(admin, lanes[0].prefix)
        per_step = f"{args.target_runs:,} runs, each a step every {args.step_interval:g} s"
        return {
            "environment": env,
            "workload": {k: v for k, v in vars(args).items() if k != "json"},
            "server CPU per operation, by round": by_round,
            "server CPU per operation, median over rounds": cpu,
            "memory of one run and its fork (MEMORY USAGE)": single,
            "memory of complete runs (used_memory)": memory,
            "list of one long run (server time)": listing,
            f"sizing for {per_step}": [
                sizing(m, c, args) for m, c in zip(memory, cpu, strict=True)
            ],
        }
    finally:
        for lane, client in zip(lanes, clients, strict=True):
            await workload.delete_prefix(admin, lane.prefix)
            await client.aclose()
        await admin.aclose()


def main(argv: Sequence[str] | None = None) -> None:
    parser = workload.options(__doc__, "runs per store per CPU round (200)")
    add = parser.add_argument
    add("--memory-runs", type=int, default=200, help="runs per memory phase (200)")
    add("--target-runs", type=int, default=10_000, help="concurrent runs to size for (10,000)")
    add("--step-interval", type=float, default=2.0, help="seconds between a run's steps (2)")
    add("--utilisation", type=float, default=0.5, help="target server CPU utilisation (0.5)")
    args = parser.parse_args(argv)
    with running_server() as server:
        workload.report(asyncio.run(measure(args, server.url)), args.json)


if __name__ == "__main__":
    main()
