"""Throughput of a worker fleet: single-step runs through the fleet's worker pool vs arq and saq.

``python -m benchmarks.fleet_throughput --help``, and see benchmarks/README.md. Needs saq (the
``bench-queues`` extra) and arq, installed without its pins (it caps redis-py below 6, whose
asyncio client lacks the sharded pub/sub the fleet's wake-ups use):
``pip install -e '.[cli,bench-queues]' && pip install --no-deps 'arq>=0.28'``.

Every contender drains the same number of jobs of the same trivial function (it counts its call
in a counter shared by the processes and returns) from a queue filled beforehand, with 1, 2 and
4 worker processes of ``--concurrency`` jobs in flight each, on one redis-server:

- **fleet**: single-step runs submitted with ``submit`` and run by the fleet's worker pool, which
  claims each run, checkpoints its step and finishes it (one durable checkpoint per run);
- **arq**: ``enqueue_job`` and arq's ``Worker`` (``max_jobs`` = concurrency), once with its
  default ``poll_delay`` of 0.5 s and once with 0.01 s, as a user chasing throughput would set;
- **saq**: ``Queue.enqueue`` and saq's ``Worker`` (``concurrency``), with its defaults.

A round of one contender: fill the queue (timed apart, as ``enqueue/s``), start the processes,
wait until each has built its worker, release them at once, and stop the clock when the shared
counter reaches the number of jobs. Then stop the workers, check every job ran exactly once and
left nothing queued, and delete the contender's keys. Contenders alternate within each process
count, in an order that rotates from round to round; the report gives medians over the rounds
and their ratios to arq and saq.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier, Event
from typing import Any

from redis.asyncio import Redis

from atomr_redis_state import RedisCheckpointer, StateSchema, Step, StepContext, Writes
from atomr_redis_state.fleet import Fleet, Worker, Workflow
from atomr_redis_state.store.types import QueueDepth
from atomr_redis_state.testing import running_server

from . import workload

FLEET, ARQ, ARQ_FAST, SAQ = "fleet", "arq", "arq poll 0.01 s", "saq"

_tally: Tally | None = None  # set in each worker process


@dataclass(frozen=True)
class Tally:
    """Calls of the trivial function across processes: per job, and jobs called at least once."""

    calls: Any  # a shared array of one int per job (multiprocessing.RawArray)
    once: Synchronized[int]  # its lock guards ``calls`` too

    def duplicates(self) -> int:
        return sum(max(0, count - 1) for count in self.calls)


def trivial(i: int) -> None:
    """The work of every job: count the call of job ``i``."""
    assert _tally is not None, "not in a worker process"
    with _tally.once.get_lock():
        _tally.calls[i] += 1
        if _tally.calls[i] == 1:
            _tally.once.value += 1


class BenchmarkError(AssertionError):
    """A contender lost, repeated or left behind a job."""


@dataclass(frozen=True)
class Round:
    """What one worker process needs to know: where, which queue, how much in flight."""

    url: str
    tag: str  # a name of this round's queue, fresh per round
    concurrency: int


Serve = Callable[[Round, Callable[[], Awaitable[None]], Event], Awaitable[None]]
"""In a worker process: build the worker, await ``ready()`` (every process ready: go), work
until ``stop`` is set, then stop the worker."""


@dataclass(frozen=True)
class Contender:
    name: str
    enqueue: Callable[[Round, int], Awaitable[None]]  # in the parent: queue ``jobs`` jobs
    serve: Serve
    check: Callable[[Round, int], Awaitable[None]]  # in the parent, after the workers stopped
    keys: Callable[[Round], str]  # the prefix of every key it writes (deleted after each round)


async def _until(stop: Event) -> None:
    await asyncio.to_thread(stop.wait)


# the fleet


async def fleet_step(ctx: StepContext) -> Writes:
    value = ctx.read("i")
    assert isinstance(value, int)
    trivial(value)
    return {"done": True}


FLEET_WORKFLOW = Workflow(
    "bench-trivial",
    [Step("trivial", fleet_step)],
    StateSchema.builder().add_lww("i").add_lww("done").build(),
)


async def fleet_enqueue(run: Round, jobs: int) -> None:
    async with RedisCheckpointer.from_url(run.url, prefix=run.tag) as store:
        fleet = Fleet(store, FLEET_WORKFLOW)
        await _batched(jobs, lambda i: fleet.submit(FLEET_WORKFLOW, {"i": i}, run_id=f"job-{i}"))


async def fleet_serve(run: Round, ready: Callable[[], Awaitable[None]], stop: Event) -> None:
    async with RedisCheckpointer.from_url(run.url, prefix=run.tag) as store:
        worker = Worker(store, FLEET_WORKFLOW, concurrency=run.concurrency)
        await ready()
        working = asyncio.create_task(worker.run())
        await _until(stop)
        worker.stop()
        await working


async def fleet_check(run: Round, jobs: int) -> None:
    async with RedisCheckpointer.from_url(run.url, prefix=run.tag) as store:
        depth = await store.queue_depth(FLEET_WORKFLOW.id)
        ended: Counter[str] = Counter()
        for start in range(0, jobs, 256):
            records = await asyncio.gather(
                *(
                    store.run_record(FLEET_WORKFLOW.id, f"job-{i}")
                    for i in range(start, min(jobs, start + 256))
                )
            )
            ended.update(r.queue.state if r.queue else "unqueued" for r in records)
    if depth != QueueDepth() or ended != Counter({"completed": jobs}):
        raise BenchmarkError(f"fleet: queue {depth}, runs ended {dict(ended)}")


# arq


async def arq_noop(ctx: dict[str, Any], i: int) -> int:
    trivial(i)
    return i


def _arq_queue(run: Round) -> str:
    return f"arq:queue:{run.tag}"


async def arq_enqueue(run: Round, jobs: int) -> None:
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings.from_dsn(run.url), default_queue_name=_arq_queue(run))
    try:
        await _batched(jobs, lambda i: pool.enqueue_job("noop", i, _job_id=f"{run.tag}-{i}"))
    finally:
        await pool.aclose()


def arq_serve(poll_delay: float) -> Serve:
    async def serve(run: Round, ready: Callable[[], Awaitable[None]], stop: Event) -> None:
        from arq.connections import RedisSettings
        from arq.worker import Worker, func

        worker = Worker(
            functions=[func(arq_noop, name="noop")],
            redis_settings=RedisSettings.from_dsn(run.url),
            queue_name=_arq_queue(run),
            max_jobs=run.concurrency,
            poll_delay=poll_delay,
            handle_signals=False,
        )
        await ready()
        main = asyncio.create_task(worker.main())
        await _until(stop)
        main.cancel()
        await asyncio.gather(main, return_exceptions=True)
        await worker.close()

    return serve


async def arq_check(run: Round, jobs: int) -> None:
    async with Redis.from_url(run.url) as client:
        left = await client.zcard(_arq_queue(run))
        results = len([k async for k in client.scan_iter(match=f"arq:result:{run.tag}-*")])
    if left or results != jobs:
        raise BenchmarkError(f"arq: {left} jobs left queued, {results} results of {jobs}")


# saq


async def saq_noop(ctx: Any, *, i: int) -> int:
    trivial(i)
    return i


async def saq_enqueue(run: Round, jobs: int) -> None:
    from saq import Queue

    queue = Queue.from_url(run.url, name=run.tag)
    await queue.connect()
    try:
        await _batched(jobs, lambda i: queue.enqueue("noop", i=i))
    finally:
        await queue.disconnect()


async def saq_serve(run: Round, ready: Callable[[], Awaitable[None]], stop: Event) -> None:
    from saq import Queue, Worker

    queue = Queue.from_url(run.url, name=run.tag)
    await queue.connect()
    worker = Worker(queue, functions=[("noop", saq_noop)], concurrency=run.concurrency)
    await ready()
    started = asyncio.create_task(worker.start())
    await _until(stop)
    await worker.stop()
    await started
    await queue.disconnect()


async def saq_check(run: Round, jobs: int) -> None:
    from saq import Queue

    queue = Queue.from_url(run.url, name=run.tag)
    try:
        left = {kind: await queue.count(kind) for kind in ("queued", "active", "incomplete")}
    finally:
        await queue.disconnect()
    if any(left.values()):
        raise BenchmarkError(f"saq: jobs left behind: {left}")


CONTENDERS = {
    c.name: c
    for c in [
        Contender(FLEET, fleet_enqueue, fleet_serve, fleet_check, lambda run: run.tag),
        Contender(ARQ, arq_enqueue, arq_serve(0.5), arq_check, lambda _: "arq"),
        Contender(ARQ_FAST, arq_enqueue, arq_serve(0.01), arq_check, lambda _: "arq"),
        Contender(SAQ, saq_enqueue, saq_serve, saq_check, lambda _: "saq"),
    ]
}


async def _batched(jobs: int, call: Callable[[int], Awaitable[Any]], in_flight: int = 64) -> None:
    """``call(i)`` for every job, ``in_flight`` at a time."""
    for start in range(0, jobs, in_flight):
        await asyncio.gather(*(call(i) for i in range(start, min(jobs, start + in_flight))))


# The worker processes and the rounds.


def _worker_process(
    name: str, run: Round, tally: Tally, go: Barrier, stop: Event, cpu: Any
) -> None:
    """One worker process: build the contender's worker, wait for the others, work until told."""
    global _tally
    _tally = tally

    async def main() -> None:
        used = 0.0

        async def ready() -> None:
            nonlocal used
            await asyncio.to_thread(go.wait)
            used = time.process_time()

        await CONTENDERS[name].serve(run, ready, stop)
        cpu.put(time.process_time() - used)

    asyncio.run(main())


async def measure(
    contender: Contender, admin: Redis, url: str, processes: int, args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One round of one contender with ``processes`` worker processes: its row, and the
    commands per job the server ran, by command (the busiest first)."""
    context = multiprocessing.get_context("spawn")
    run = Round(url, f"r{uuid.uuid4().hex[:10]}", args.concurrency)
    t0 = time.perf_counter()
    await contender.enqueue(run, args.jobs)
    enqueue_seconds = time.perf_counter() - t0
    tally = Tally(context.RawArray("i", args.jobs), context.Value("q", 0))
    go, stop, cpu = context.Barrier(processes + 1), context.Event(), context.Queue()
    workers = [
        context.Process(target=_worker_process, args=(contender.name, run, tally, go, stop, cpu))
        for _ in range(processes)
    ]
    for process in workers:
        process.start()
    try:
        await asyncio.to_thread(go.wait, 120)
        before = await workload.server_sample(admin)
        t0 = time.perf_counter()
        deadline = t0 + args.timeout
        while tally.once.value < args.jobs:
            if time.perf_counter() > deadline:
                raise BenchmarkError(f"{contender.name}: {tally.once.value} of {args.jobs} in time")
            await asyncio.sleep(0.001)
        seconds = time.perf_counter() - t0
        server = await workload.server_sample(admin) - before
    finally:
        stop.set()
        for process in workers:
            await asyncio.to_thread(process.join, 30)
            if process.exitcode is None:  # measured already; its CPU time is lost
                workload.log(f"{contender.name}: a worker process did not stop: killed")
                process.kill()
                await asyncio.to_thread(process.join)
    failed = [process.exitcode for process in workers if process.exitcode not in (0, -9)]
    if failed:
        raise BenchmarkError(f"{contender.name}: worker processes failed, exit codes {failed}")
    stopped = [process for process in workers if process.exitcode == 0]
    used = [cpu.get(timeout=10) for _ in stopped]
    client_cpu = sum(used) / len(used) * len(workers) if used else None
    await contender.check(run, args.jobs)
    await workload.delete_prefix(admin, contender.keys(run))
    calls = {k[6:]: v / args.jobs for k, v in server.items() if k.startswith("calls ") and v}
    busiest = dict(sorted(calls.items(), key=lambda kv: -kv[1]))
    return {
        "processes": processes,
        "contender": contender.name,
        "jobs/s": args.jobs / seconds,
        "enqueue/s": args.jobs / enqueue_seconds,
        "cli µs/job": None if client_cpu is None else client_cpu / args.jobs * 1e6,
        "srv cmd/job": sum(v for k, v in server.items() if k.startswith("calls ")) / args.jobs,
        "srv µs/job": server["main_cpu_us"] / args.jobs,
        "repeated": tally.duplicates(),
    }, busiest


async def benchmark(args: argparse.Namespace, url: str) -> dict[str, Any]:
    admin = Redis.from_url(url)
    contenders = [CONTENDERS[name] for name in args.contenders]
    try:
        server = await admin.info("server")
        env = {"redis-server": server["redis_version"], **_versions()}
        workload.log(", ".join(f"{k} {v}" for k, v in env.items()))
        warm = argparse.Namespace(**{**vars(args), "jobs": args.warmup})
        for contender in contenders:
            await measure(contender, admin, url, 1, warm)
        rows, commands = [], []
        for processes in args.processes:
            for n in range(args.rounds):
                turn = n % len(contenders)
                for contender in contenders[turn:] + contenders[:turn]:
                    row, busiest = await measure(contender, admin, url, processes, args)
                    if processes == args.processes[0] and n == 0:
                        line = ", ".join(f"{k} {v:.2f}" for k, v in list(busiest.items())[:8])
                        commands.append({"contender": contender.name, "commands/job": line})
                    workload.log(
                        f"x{processes} round {n + 1}: {contender.name} {row['jobs/s']:,.0f} jobs/s"
                    )
                    rows.append(row | {"round": n + 1})
        return {
            "environment": env,
            "workload": {k: vars(args)[k] for k in ("jobs", "concurrency", "rounds", "warmup")},
            "by round": rows,
            "median over rounds": _table(rows),
            f"server commands per job, by command ({args.processes[0]} process, round 1)": (
                commands
            ),
        }
    finally:
        await admin.aclose()


def _table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per process count and contender the medians, and their ratios to arq's and saq's."""
    table = []
    for processes in sorted({r["processes"] for r in rows}):
        group = workload.medians([r for r in rows if r["processes"] == processes], "contender")
        speed = {row["contender"]: row["jobs/s"] for row in group}
        for row in group:
            ratios = {f"/{p}": row["jobs/s"] / speed[p] for p in (ARQ, ARQ_FAST, SAQ) if p in speed}
            table.append({"processes": processes, **row, **ratios})
    return table


def _versions() -> dict[str, str]:
    import importlib.metadata

    names = ("atomr-redis-state", "redis", "hiredis", "arq", "saq")
    return {name: importlib.metadata.version(name) for name in names}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add = parser.add_argument
    add("--jobs", type=int, default=1000, help="jobs (runs) per contender per round (1000)")
    add("--concurrency", type=int, default=10, help="jobs in flight per worker process (10)")
    add("--processes", type=_counts, default=[1, 2, 4], help="worker processes (1,2,4)")
    add("--rounds", type=int, default=3, help="rounds; the contenders' order rotates (3)")
    add("--warmup", type=int, default=100, help="untimed jobs per contender first (100)")
    add("--timeout", type=float, default=300, help="seconds a round may take (300)")
    names = ",".join(CONTENDERS)
    add("--contenders", type=lambda s: s.split(","), default=list(CONTENDERS), help=names)
    add("--json", action="store_true", help="print the results as JSON (progress on stderr)")
    args = parser.parse_args(argv)
    unknown = set(args.contenders) - set(CONTENDERS)
    if unknown:
        parser.error(f"unknown contenders {sorted(unknown)}: pick from {names}")
    with running_server() as server:
        result = asyncio.run(benchmark(args, server.url))
    workload.report(result, args.json)


def _counts(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


if __name__ == "__main__":
    main()
