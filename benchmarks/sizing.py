"""Sizing for the agent-loop workload of /work/shared/WORKLOAD.md (see benchmarks/README.md).

Measures, for RedisCheckpointer (default options, no ttl) on a redis-server of its own:

1. memory: ``MEMORY USAGE <key> SAMPLES 0`` of one run's keys (snapshot hashes, steps sorted
   set, run-index bucket), and the ``used_memory`` delta of many complete runs, for the default
   store and for ``keep_last=5``;
2. server CPU per operation: ``INFO commandstats`` (``evalsha`` and the sum of every command's
   ``usec``) and ``INFO cpu`` (``used_cpu_sys + used_cpu_user``) deltas around driven runs;
3. from those, a sizing for a target number of concurrent runs.

The workload, the state it saves, the store adapter and the redis-server wrapper are imported
from ``agent_loop.py``. Run it as ``.venv/bin/python benchmarks/sizing.py`` (the script's own
directory is then on ``sys.path``). It never flushes a database: each store writes under its own
random prefix and deletes exactly those keys (SCAN MATCH + UNLINK) after each phase; it starts
its own redis-server on a free loopback port and stops it by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import redis
from agent_loop import (
    _MESSAGES,
    FORK_AT,
    FORK_EDITS,
    LABEL,
    OPS_PER_RUN,
    STEPS,
    Lane,
    RedisServer,
    StoreContender,
    WorkloadError,
    _checkout,
    agent_run,
    drive,
    log,
    make_client,
    start_server,
    state,
)
from redis.asyncio import Redis
from redis.utils import HIREDIS_AVAILABLE

from atomr_redis_state import JSON, RedisCheckpointer
from atomr_redis_state.model import FORK_MARKER

KEEP_LAST = 5
SNAPSHOT_STEPS = (0, 10, 20, STEPS - 1)
"""The steps whose snapshot hash is reported one by one."""
OPS_PER_STEP = 2
"""A worker advancing a run by one super-step: one ``latest`` + one ``save``."""

# --------------------------------------------------------------------------------------------
# The keep_last variant of the workload
# --------------------------------------------------------------------------------------------


async def keep_last_run(
    contender: StoreContender, workflow_id: str, run_id: str, keep_last: int
) -> None:
    """The workload's 82 operations for a store with ``keep_last``.

    Step 20 is gone by the end of the loop, so the fork (and the fork's ``latest``) happen right
    after step 20 is saved, and ``list`` expects the last ``keep_last`` steps. Everything else is
    :func:`agent_loop.agent_run`: the same states, the same checks.
    """
    messages: list[JSON]
    for step in range(STEPS):
        if step == 0:
            messages = [_MESSAGES[0]]
        else:
            found = await contender.latest(workflow_id, run_id)
            if found is None or found[0] != step - 1:
                raise WorkloadError(f"{run_id}: latest before step {step} is {found and found[0]}")
            previous = found[1].get("messages")
            if not isinstance(previous, list) or len(previous) != step:
                raise WorkloadError(f"{run_id}: latest before step {step} has the wrong state")
            messages = [*previous, _MESSAGES[step]]
        await contender.save(workflow_id, run_id, step, state(step, messages), LABEL)
        if step == FORK_AT:
            fork_id = await contender.fork(workflow_id, run_id, FORK_AT, FORK_EDITS)
            forked = await contender.latest(workflow_id, fork_id)
            if forked is None or forked[0] != FORK_AT or forked[1].get("status") != "forked":
                raise WorkloadError(f"{fork_id}: the fork does not hold step {FORK_AT}")
    rows = await contender.list(workflow_id, run_id)
    if [row[0] for row in rows] != list(range(STEPS - keep_last, STEPS)):
        raise WorkloadError(f"{run_id}: list returned {[row[0] for row in rows]}")


async def drive_keep_last(
    contender: StoreContender, workflow_id: str, runs: int, concurrency: int, keep_last: int
) -> float:
    """:func:`agent_loop.drive` for :func:`keep_last_run`; the wall seconds."""
    run_ids = iter([f"run-{uuid.uuid4()}" for _ in range(runs)])

    async def worker() -> None:
        for run_id in run_ids:
            await keep_last_run(contender, workflow_id, run_id, keep_last)

    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, runs)):
            group.create_task(worker())
    return time.perf_counter() - t0


# --------------------------------------------------------------------------------------------
# A store under test: a checkpointer with its own client and prefix
# --------------------------------------------------------------------------------------------


@dataclass
class Variant:
    name: str
    keep_last: int | None
    client: Redis
    store: RedisCheckpointer
    lane: Lane
    """Only used for its cleanup (every key under the prefix)."""

    async def drive(self, workflow_id: str, runs: int, concurrency: int) -> float:
        contender = StoreContender(self.store)
        if self.keep_last is None:
            seconds, _cpu = await drive(contender, workflow_id, runs, concurrency)
            return seconds
        return await drive_keep_last(contender, workflow_id, runs, concurrency, self.keep_last)


def make_variant(url: str, name: str, keep_last: int | None, max_connections: int) -> Variant:
    prefix = f"sizing-{uuid.uuid4().hex[:12]}-{name}"
    client, _counter = make_client(url, max_connections)
    store = RedisCheckpointer(client, prefix=prefix, keep_last=keep_last)
    contender = StoreContender(store)
    lane = Lane(name, prefix, client, None, lambda: contender)
    return Variant(name, keep_last, client, store, lane)


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


async def memory_usage(admin: Redis, key: str) -> int:
    """``MEMORY USAGE key SAMPLES 0``: every element counted, not a sample."""
    used = await admin.memory_usage(key, samples=0)
    if used is None:
        raise RuntimeError(f"key {key!r} does not exist")
    return int(used)


async def settled_used_memory(admin: Redis, clients: Sequence[Redis]) -> int:
    """``used_memory`` with every workload connection closed and no lazy free pending."""
    for client in clients:
        await client.connection_pool.disconnect()
    deadline = time.monotonic() + 10
    while True:
        connected = int((await admin.info("clients"))["connected_clients"])
        memory = await admin.info("memory")
        pending = int(memory.get("lazyfree_pending_objects", 0))
        if connected == 1 and not pending:
            return int(memory["used_memory"])
        if time.monotonic() > deadline:
            raise RuntimeError(f"not settled: {connected} clients, {pending} lazy frees pending")
        await asyncio.sleep(0.05)


async def one_run_memory(admin: Redis, variant: Variant) -> dict[str, Any]:
    """Per-key memory of one complete run (and its fork) on a workflow of its own."""
    workflow_id, run_id = "wf-sizing-single", f"run-{uuid.uuid4()}"
    await agent_run(StoreContender(variant.store), workflow_id, run_id)
    keys = variant.store.keys.run(workflow_id, run_id)
    snapshots = [await memory_usage(admin, keys.snapshot(step)) for step in range(STEPS)]
    payloads = []
    for step in range(STEPS):
        stored = cast(dict[bytes, bytes], await admin.hgetall(keys.snapshot(step)))
        payloads.append(sum(len(k) + len(v) for k, v in stored.items()))
    members = cast(list[bytes], await admin.zrange(keys.run_index, 0, -1))
    fork_ids = [m.decode() for m in members if FORK_MARKER.encode() in m]
    if len(fork_ids) != 1:
        raise RuntimeError(f"expected one fork in the run index, found {members!r}")
    fork = variant.store.keys.run(workflow_id, fork_ids[0])

    async def encoding(key: str) -> str:
        return cast(bytes, await admin.object("ENCODING", key)).decode()

    result = {
        "snapshot_bytes_by_step": {str(step): snapshots[step] for step in SNAPSHOT_STEPS},
        "snapshot_payload_bytes_by_step": {str(step): payloads[step] for step in SNAPSHOT_STEPS},
        "snapshot_bytes_mean": statistics.fmean(snapshots),
        "snapshot_payload_bytes_mean": statistics.fmean(payloads),
        "snapshot_bytes_sum": sum(snapshots),
        "steps_zset_bytes": await memory_usage(admin, keys.steps),
        "fork_snapshot_bytes": await memory_usage(admin, fork.snapshot(FORK_AT)),
        "fork_steps_zset_bytes": await memory_usage(admin, fork.steps),
        "run_index_bucket_bytes": await memory_usage(admin, keys.run_index),
        "run_index_bucket_members": len(members),
        "encodings": {
            "snapshot step 0": await encoding(keys.snapshot(0)),
            f"snapshot step {STEPS - 1}": await encoding(keys.snapshot(STEPS - 1)),
            "steps": await encoding(keys.steps),
            "run index bucket": await encoding(keys.run_index),
        },
    }
    await variant.lane.cleanup(admin)
    return result


async def key_sums(admin: Redis, prefix: str) -> dict[str, int]:
    """``MEMORY USAGE ... SAMPLES 0`` summed over every key under ``prefix``, by kind."""
    keys = [key async for key in admin.scan_iter(match=f"{prefix}:*", count=1000)]
    sizes: list[int] = []
    for start in range(0, len(keys), 1000):
        async with admin.pipeline(transaction=False) as pipe:
            for key in keys[start : start + 1000]:
                pipe.memory_usage(key, samples=0)
            sizes += [int(size) for size in await pipe.execute()]
    fork_part = FORK_MARKER.encode()  # keys.py does not escape "~"
    sums = {
        "snapshots": 0,
        "steps_zsets": 0,
        "fork_snapshots": 0,
        "fork_steps_zsets": 0,
        "run_index_buckets": 0,
    }
    counts = dict.fromkeys(sums, 0)
    for key, size in zip(keys, sizes, strict=True):
        fork = fork_part in key
        if key.endswith(b":runs"):
            kind = "run_index_buckets"
        elif key.endswith(b":steps"):
            kind = "fork_steps_zsets" if fork else "steps_zsets"
        elif b":snap:" in key:
            kind = "fork_snapshots" if fork else "snapshots"
        else:
            raise RuntimeError(f"unexpected key {key!r}")
        sums[kind] += size
        counts[kind] += 1
    return {
        **{f"{kind}_bytes": total for kind, total in sums.items()},
        **{f"{kind}_keys": n for kind, n in counts.items()},
        "total_bytes": sum(sums.values()),
        "total_keys": len(keys),
    }


async def many_runs_memory(
    admin: Redis, variant: Variant, runs: int, concurrency: int, clients: Sequence[Redis]
) -> dict[str, Any]:
    """``used_memory`` before and after ``runs`` complete runs, and the per-key sum.

    ``clients`` are every client of this process but ``admin``: their connections are closed
    before each reading, so that ``used_memory`` holds no workload client buffers.
    """
    before = await settled_used_memory(admin, clients)
    await variant.drive(f"wf-sizing-memory-{variant.name}", runs, concurrency)
    after = await settled_used_memory(admin, clients)
    sums = await key_sums(admin, variant.store.keys.prefix)
    await variant.lane.cleanup(admin)
    snapshots_per_run = STEPS if variant.keep_last is None else variant.keep_last
    delta = after - before
    return {
        "runs": runs,
        "used_memory_before": before,
        "used_memory_after": after,
        "used_memory_delta": delta,
        "used_memory_per_run": delta / runs,
        "snapshots_per_run": snapshots_per_run,
        "used_memory_per_snapshot": delta / (runs * snapshots_per_run),
        "key_sums": sums,
        "key_sum_per_run": sums["total_bytes"] / runs,
        "run_index_bucket_share_per_run": sums["run_index_buckets_bytes"] / runs,
        "used_memory_over_key_sum": delta / sums["total_bytes"],
    }


# --------------------------------------------------------------------------------------------
# Server CPU
# --------------------------------------------------------------------------------------------


@dataclass
class CpuSample:
    evalsha_calls: int
    evalsha_usec: int
    all_calls: int
    all_usec: int
    process_cpu_s: float
    main_thread_cpu_s: float


async def cpu_sample(admin: Redis) -> CpuSample:
    stats = cast(dict[str, dict[str, Any]], await admin.info("commandstats"))
    cpu = await admin.info("cpu")
    evalsha = stats.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    others = [entry for name, entry in stats.items() if name != "cmdstat_info"]
    return CpuSample(
        evalsha_calls=int(evalsha["calls"]),
        evalsha_usec=int(evalsha["usec"]),
        all_calls=sum(int(entry["calls"]) for entry in others),
        all_usec=sum(int(entry["usec"]) for entry in others),
        process_cpu_s=float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        main_thread_cpu_s=float(cpu.get("used_cpu_sys_main_thread", cpu["used_cpu_sys"]))
        + float(cpu.get("used_cpu_user_main_thread", cpu["used_cpu_user"])),
    )


@dataclass
class CpuRound:
    round: int
    seconds: float
    ops_per_s: float
    evalsha_calls_per_op: float
    evalsha_us_per_call: float
    evalsha_us_per_op: float
    all_commands_us_per_op: float
    """Sum of every command's ``usec``: commands run inside scripts are counted twice (in
    their own entry and in ``evalsha``'s)."""
    process_cpu_us_per_op: float
    main_thread_cpu_us_per_op: float


async def cpu_round(
    admin: Redis, variant: Variant, round_no: int, runs: int, concurrency: int
) -> CpuRound:
    ops = runs * OPS_PER_RUN
    s0 = await cpu_sample(admin)
    seconds = await variant.drive(f"wf-sizing-cpu-{variant.name}-r{round_no}", runs, concurrency)
    s1 = await cpu_sample(admin)
    await variant.lane.cleanup(admin)
    evalsha_calls = s1.evalsha_calls - s0.evalsha_calls
    evalsha_usec = s1.evalsha_usec - s0.evalsha_usec
    return CpuRound(
        round=round_no,
        seconds=seconds,
        ops_per_s=ops / seconds,
        evalsha_calls_per_op=evalsha_calls / ops,
        evalsha_us_per_call=evalsha_usec / evalsha_calls if evalsha_calls else math.nan,
        evalsha_us_per_op=evalsha_usec / ops,
        all_commands_us_per_op=(s1.all_usec - s0.all_usec) / ops,
        process_cpu_us_per_op=(s1.process_cpu_s - s0.process_cpu_s) / ops * 1e6,
        main_thread_cpu_us_per_op=(s1.main_thread_cpu_s - s0.main_thread_cpu_s) / ops * 1e6,
    )


def cpu_summary(rounds: Sequence[CpuRound]) -> dict[str, Any]:
    fields = [name for name in CpuRound.__dataclass_fields__ if name not in ("round", "seconds")]
    medians = {name: statistics.median(getattr(r, name) for r in rounds) for name in fields}
    medians["max_ops_per_s_per_core"] = 1e6 / medians["process_cpu_us_per_op"]
    medians["max_ops_per_s_per_core_evalsha"] = 1e6 / medians["evalsha_us_per_op"]
    medians["process_cpu_us_per_op_min"] = min(r.process_cpu_us_per_op for r in rounds)
    medians["process_cpu_us_per_op_max"] = max(r.process_cpu_us_per_op for r in rounds)
    return {"median": medians, "rounds": [asdict(r) for r in rounds]}


# --------------------------------------------------------------------------------------------
# Sizing
# --------------------------------------------------------------------------------------------


def sizing(
    args: argparse.Namespace,
    memory_default: dict[str, Any],
    memory_keep: dict[str, Any],
    cpu: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    runs = args.target_runs
    ops_per_s = runs * OPS_PER_STEP / args.step_interval
    scenarios: dict[str, Any] = {}
    for name, memory, variant in (
        (f"all {STEPS} snapshots kept", memory_default, "default"),
        (f"keep_last={KEEP_LAST}", memory_keep, f"keep_last={KEEP_LAST}"),
    ):
        us_per_op = cpu[variant]["median"]["process_cpu_us_per_op"]
        cores_busy = ops_per_s * us_per_op / 1e6
        cores_needed = cores_busy / args.utilisation
        shards = max(1, math.ceil(cores_needed))
        total = runs * memory["used_memory_per_run"]
        scenarios[name] = {
            "memory_per_run_bytes": memory["used_memory_per_run"],
            "memory_bytes": total,
            "ops_per_s": ops_per_s,
            "server_cpu_us_per_op": us_per_op,
            "server_cores_busy": cores_busy,
            "server_cores_at_target_utilisation": cores_needed,
            "shards": shards,
            "memory_per_shard_bytes": total / shards,
        }
    return {
        "target_runs": runs,
        "step_interval_s": args.step_interval,
        "ops_per_step": OPS_PER_STEP,
        "target_utilisation": args.utilisation,
        "scenarios": scenarios,
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _size(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n:,.0f} B"


def print_report(result: dict[str, Any]) -> None:
    env = result["environment"]
    single = result["memory"]["one_run"]
    print()
    print(
        f"redis-server {env['redis_server']} ({env['allocator']}), {env['cpus']} CPUs, "
        f"Python {env['python']}, redis-py {env['redis_py']}, hiredis {env['hiredis']}, "
        f"checkout {env['checkout']}"
    )
    print()
    print("1. Memory, MEMORY USAGE <key> SAMPLES 0 (one run on a workflow of its own)")
    print(f"   {'key':<44}{'bytes':>10}{'payload':>10}")
    for step in SNAPSHOT_STEPS:
        print(
            f"   {'snapshot hash, step ' + str(step):<44}"
            f"{single['snapshot_bytes_by_step'][str(step)]:>10,}"
            f"{single['snapshot_payload_bytes_by_step'][str(step)]:>10,}"
        )
    print(
        f"   {'snapshot hash, mean of the ' + str(STEPS):<44}"
        f"{single['snapshot_bytes_mean']:>10,.0f}{single['snapshot_payload_bytes_mean']:>10,.0f}"
    )
    print(
        f"   {'snapshot hashes, sum of the ' + str(STEPS):<44}{single['snapshot_bytes_sum']:>10,}"
    )
    print(f"   {'steps sorted set (40 members)':<44}{single['steps_zset_bytes']:>10,}")
    print(f"   {'fork: snapshot hash (step 20)':<44}{single['fork_snapshot_bytes']:>10,}")
    print(f"   {'fork: steps sorted set':<44}{single['fork_steps_zset_bytes']:>10,}")
    print(
        f"   {'run-index bucket (' + str(single['run_index_bucket_members']) + ' members)':<44}"
        f"{single['run_index_bucket_bytes']:>10,}"
    )
    print(
        "   payload = sum of field + value lengths; encodings: "
        + ", ".join(f"{k} {v}" for k, v in single["encodings"].items())
    )
    print()
    print("   complete runs (40 snapshots + list + fork each), used_memory delta vs per-key sum")
    header = (
        f"   {'store':<14}{'runs':>6}{'used_memory Δ':>16}{'per run':>13}{'per snapshot':>14}"
        f"{'key sum/run':>13}{'Δ/key sum':>11}{'bucket/run':>12}"
    )
    print(header)
    for name, m in result["memory"]["runs"].items():
        print(
            f"   {name:<14}{m['runs']:>6}{_size(m['used_memory_delta']):>16}"
            f"{_size(m['used_memory_per_run']):>13}{_size(m['used_memory_per_snapshot']):>14}"
            f"{_size(m['key_sum_per_run']):>13}{m['used_memory_over_key_sum']:>11.3f}"
            f"{m['run_index_bucket_share_per_run']:>12,.0f}"
        )
    print("   per snapshot = delta / (runs x snapshots kept per run): the run's other keys and")
    print("   its fork are spread over its snapshots")
    print()
    workload = result["workload"]
    print(
        f"2. Server CPU per operation: {workload['cpu_runs']} runs x {OPS_PER_RUN} ops, "
        f"{workload['concurrency']} in flight, one event loop, median of {workload['rounds']} "
        "rounds"
    )
    header = (
        f"   {'store':<14}{'ops/s':>9}{'evalsha/op':>11}{'µs/evalsha':>11}{'all usec/op':>12}"
        f"{'cpu µs/op':>10}{'(min-max)':>14}{'main µs/op':>11}{'max ops/s/core':>15}"
    )
    print(header)
    for name, c in result["cpu"].items():
        m = c["median"]
        print(
            f"   {name:<14}{m['ops_per_s']:>9,.0f}{m['evalsha_calls_per_op']:>11.3f}"
            f"{m['evalsha_us_per_call']:>11.2f}{m['all_commands_us_per_op']:>12.2f}"
            f"{m['process_cpu_us_per_op']:>10.2f}"
            f"{m['process_cpu_us_per_op_min']:>8.1f}-{m['process_cpu_us_per_op_max']:<5.1f}"
            f"{m['main_thread_cpu_us_per_op']:>11.2f}"
            f"{m['max_ops_per_s_per_core']:>15,.0f}"
        )
    print("   µs/evalsha = commandstats usec per script call (time inside the command only);")
    print("   all usec/op = every command's usec summed (commands run by scripts counted twice);")
    print("   cpu µs/op = used_cpu_sys + used_cpu_user of the server process (network I/O and")
    print("   event loop included); max ops/s/core = 1e6 / cpu µs/op")
    print()
    s = result["sizing"]
    print(
        f"3. Sizing for {s['target_runs']:,} concurrent runs, one super-step every "
        f"{s['step_interval_s']:g} s, {s['ops_per_step']} ops per step (latest + save), "
        f"{s['target_utilisation']:.0%} target utilisation"
    )
    for name, sc in s["scenarios"].items():
        print(f"   {name}:")
        print(
            f"     memory  {s['target_runs']:,} runs x {_size(sc['memory_per_run_bytes'])} "
            f"= {_size(sc['memory_bytes'])}"
        )
        print(
            f"     ops/s   {s['target_runs']:,} runs x {s['ops_per_step']} ops / "
            f"{s['step_interval_s']:g} s = {sc['ops_per_s']:,.0f} ops/s"
        )
        print(
            f"     CPU     {sc['ops_per_s']:,.0f} ops/s x {sc['server_cpu_us_per_op']:.2f} µs "
            f"= {sc['server_cores_busy']:.3f} core; / {s['target_utilisation']:.0%} = "
            f"{sc['server_cores_at_target_utilisation']:.3f} core -> {sc['shards']} shard(s) "
            f"(one core each), {_size(sc['memory_per_shard_bytes'])} per shard"
        )
    print(
        "   (memory assumes every run holds all its snapshots, i.e. completed runs: runs in "
        "flight hold fewer;"
    )
    share = (2 * STEPS - 1) / OPS_PER_RUN
    print(f"   CPU uses the workload's mix of operations, {share:.0%} of which are latest + save)")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    binary = shutil.which(args.redis_server)
    if binary is None:
        raise SystemExit(f"{args.redis_server} not found: install Redis >= 7")
    directory = Path(tempfile.mkdtemp(prefix="sizing-redis-"))
    server = start_server(directory, binary)
    admin = Redis.from_url(server.url, decode_responses=False)
    max_connections = args.concurrency + 16
    variants = {
        "default": make_variant(server.url, "default", None, max_connections),
        f"keep_last={KEEP_LAST}": make_variant(server.url, "keep5", KEEP_LAST, max_connections),
    }
    try:
        return await measure_all(args, server, admin, variants)
    finally:
        for variant in variants.values():
            await variant.lane.cleanup(admin)
            await variant.client.aclose()
        await admin.aclose()
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def measure_all(
    args: argparse.Namespace, server: RedisServer, admin: Redis, variants: dict[str, Variant]
) -> dict[str, Any]:
    info = await admin.info("server")
    memory_info = await admin.info("memory")
    environment = {
        "redis_server": str(info.get("redis_version")),
        "allocator": str(memory_info.get("mem_allocator")),
        "url": server.url,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "hiredis": HIREDIS_AVAILABLE,
        "checkout": _checkout(),
    }
    log(args, f"redis-server {environment['redis_server']} at {server.url} (own server)")

    for variant in variants.values():  # loads the scripts, opens the connections
        await variant.drive(f"wf-sizing-warmup-{variant.name}", args.warmup, args.concurrency)
        await variant.lane.cleanup(admin)

    default = variants["default"]
    log(args, "memory: one run ...")
    one_run = await one_run_memory(admin, default)
    memory_runs: dict[str, Any] = {}
    for name, variant in variants.items():
        log(args, f"memory: {args.memory_runs} runs, {name} ...")
        memory_runs[name] = await many_runs_memory(
            admin,
            variant,
            args.memory_runs,
            args.concurrency,
            [v.client for v in variants.values()],
        )

    rounds: dict[str, list[CpuRound]] = {name: [] for name in variants}
    order = list(variants)
    for round_no in range(1, args.rounds + 1):
        for name in order if round_no % 2 else order[::-1]:
            r = await cpu_round(admin, variants[name], round_no, args.cpu_runs, args.concurrency)
            rounds[name].append(r)
            log(
                args,
                f"cpu round {round_no} {name}: {r.ops_per_s:,.0f} ops/s, "
                f"{r.process_cpu_us_per_op:.2f} server µs/op",
            )
    cpu = {name: cpu_summary(rs) for name, rs in rounds.items()}

    return {
        "workload": {
            "steps_per_run": STEPS,
            "ops_per_run": OPS_PER_RUN,
            "memory_runs": args.memory_runs,
            "cpu_runs": args.cpu_runs,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "warmup_runs": args.warmup,
            "keep_last": KEEP_LAST,
        },
        "environment": environment,
        "memory": {"one_run": one_run, "runs": memory_runs},
        "cpu": cpu,
        "sizing": sizing(args, memory_runs["default"], memory_runs[f"keep_last={KEEP_LAST}"], cpu),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--memory-runs", type=int, default=200, help="runs per memory phase")
    parser.add_argument("--cpu-runs", type=int, default=200, help="runs per CPU round")
    parser.add_argument("--concurrency", type=int, default=32, help="runs in flight")
    parser.add_argument("--rounds", type=int, default=3, help="CPU rounds (stores alternate)")
    parser.add_argument("--warmup", type=int, default=32, help="untimed runs per store first")
    parser.add_argument("--target-runs", type=int, default=10_000, help="runs to size for")
    parser.add_argument(
        "--step-interval", type=float, default=2.0, help="seconds between a run's super-steps"
    )
    parser.add_argument(
        "--utilisation", type=float, default=0.5, help="target server CPU utilisation"
    )
    parser.add_argument("--redis-server", default="redis-server", help="redis-server binary")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    for name in ("memory_runs", "cpu_runs", "concurrency", "rounds", "warmup", "target_runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.step_interval <= 0 or not 0 < args.utilisation <= 1:
        parser.error("--step-interval must be > 0 and --utilisation in (0, 1]")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    result = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)


if __name__ == "__main__":
    main()
