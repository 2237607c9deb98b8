"""What an idle fleet costs Redis: commands per second of N worker processes with nothing to do.

``python -m benchmarks.fleet_idle --help``, and see benchmarks/README.md. The arq and saq
contenders need them installed (see benchmarks/fleet_throughput.py); ``--contenders fleet``
runs without.

Per contender (those of benchmarks/fleet_throughput.py), one after the other on one
redis-server: start ``--processes`` worker processes on an empty queue, let them settle for
``--settle`` seconds, then read ``INFO commandstats`` before and after ``--seconds`` seconds;
report the commands per second the server ran (by the whole fleet, and per worker process) and
the busiest commands. Commands run inside Lua scripts count too.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
import uuid
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from atomr_redis_state.testing import running_server

from . import workload
from .fleet_throughput import CONTENDERS, Round, Tally, _worker_process


async def idle(name: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    """The commands per second ``args.processes`` idle workers of ``name`` make."""
    context = multiprocessing.get_context("spawn")
    run = Round(url, f"r{uuid.uuid4().hex[:10]}", args.concurrency)
    tally = Tally(context.RawArray("i", 1), context.Value("q", 0))
    go, stop, cpu = context.Barrier(args.processes + 1), context.Event(), context.Queue()
    workers = [
        context.Process(target=_worker_process, args=(name, run, tally, go, stop, cpu))
        for _ in range(args.processes)
    ]
    admin = Redis.from_url(url)
    for process in workers:
        process.start()
    try:
        await asyncio.to_thread(go.wait, 120)
        await asyncio.sleep(args.settle)
        before, t0 = await workload.server_sample(admin), time.perf_counter()
        await asyncio.sleep(args.seconds)
        after, seconds = await workload.server_sample(admin), time.perf_counter() - t0
    finally:
        stop.set()
        for process in workers:
            await asyncio.to_thread(process.join, 60)
            if process.exitcode is None:
                process.kill()
        await workload.delete_prefix(admin, CONTENDERS[name].keys(run))
        await admin.aclose()
    calls = {k[6:]: v for k, v in (after - before).items() if k.startswith("calls ")}
    total = sum(calls.values()) / seconds
    busiest = sorted(calls.items(), key=lambda kv: -kv[1])[:4]
    return {
        "contender": name,
        "processes": args.processes,
        "commands/s": total,
        "per process": total / args.processes,
        "busiest (commands/s)": ", ".join(f"{k} {v / seconds:.1f}" for k, v in busiest),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--processes", type=int, default=8, help="idle worker processes (8)")
    add("--concurrency", type=int, default=10, help="runs in flight per process (10)")
    add("--seconds", type=float, default=10.0, help="seconds measured (10)")
    add("--settle", type=float, default=3.0, help="seconds after start-up not measured (3)")
    names = ",".join(CONTENDERS)
    add("--contenders", type=lambda s: s.split(","), default=list(CONTENDERS), help=names)
    add("--json", action="store_true", help="print the results as JSON (progress on stderr)")
    args = parser.parse_args(argv)
    unknown = set(args.contenders) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders {sorted(unknown)}: pick from {names}")

    async def every() -> list[dict[str, Any]]:
        rows = []
        for name in args.contenders:
            rows.append(await idle(name, server.url, args))
            workload.log(f"{name}: {rows[-1]['commands/s']:,.1f} commands/s idle")
        return rows

    with running_server() as server:
        rows = asyncio.run(every())
    workload.report({"idle fleet": rows}, args.json)


if __name__ == "__main__":
    main()
