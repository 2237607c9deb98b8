"""The agent-loop workload on every store: Redis, Postgres, SQLite and in memory, side by side.

One process, alternating the stores round by round, each on a throwaway server of its own on
loopback (a redis-server, and a Postgres from Debian's postgresql started by
:mod:`atomr_redis_state.testing`, with ``fsync=off`` as the tests run it) or a file in a
temporary directory (SQLite, WAL, ``synchronous=NORMAL``):

    python -m benchmarks.sql_stores [--runs 200] [--concurrency 32] [--rounds 3]

Reports operations per second per store (medians over rounds) and each one's ratio to Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from atomr_redis_state import Checkpointer, InMemoryCheckpointer, RedisCheckpointer, new_run_id
from atomr_redis_state.store.sql import PostgresCheckpointer, SqliteCheckpointer
from atomr_redis_state.testing import running_postgres, running_server

from .workload import OPS_PER_RUN, StoreContender, agent_run


async def drive(store: Checkpointer, runs: int, concurrency: int) -> float:
    """Operations per second of ``runs`` agent runs, ``concurrency`` in flight."""
    gate = asyncio.Semaphore(concurrency)
    contender = StoreContender(store)

    async def one() -> None:
        async with gate:
            await agent_run(contender, new_run_id())

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    return runs * OPS_PER_RUN / (time.perf_counter() - start)


async def benchmark(
    args: argparse.Namespace, redis_url: str, postgres_url: str, directory: Path
) -> dict[str, float]:
    async def redis() -> tuple[Checkpointer, Callable[[], Awaitable[None]]]:
        store = RedisCheckpointer.from_url(redis_url, prefix=uuid.uuid4().hex[:8])
        return store, store.aclose

    async def postgres() -> tuple[Checkpointer, Callable[[], Awaitable[None]]]:
        store = PostgresCheckpointer(postgres_url, schema=f"b{uuid.uuid4().hex[:8]}", max_size=32)
        await store.setup()
        return store, store.aclose

    async def sqlite() -> tuple[Checkpointer, Callable[[], Awaitable[None]]]:
        store = SqliteCheckpointer(directory / f"{uuid.uuid4().hex}.db")
        await store.setup()
        return store, store.aclose

    async def memory() -> tuple[Checkpointer, Callable[[], Awaitable[None]]]:
        async def nothing() -> None:
            return None

        return InMemoryCheckpointer(), nothing

    makers = {"redis": redis, "postgres": postgres, "sqlite": sqlite, "memory": memory}
    rates: dict[str, list[float]] = {name: [] for name in makers}
    for round_ in range(args.rounds):
        order = list(makers) if round_ % 2 == 0 else list(reversed(makers))
        for name in order:
            store, close = await makers[name]()
            rate = await drive(store, args.runs, args.concurrency)
            await close()
            rates[name].append(rate)
            print(f"round {round_}: {name:9} {rate:8.0f} ops/s", flush=True)
    return {name: statistics.median(values) for name, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with (
        running_server() as redis_server,
        running_postgres() as postgres_server,
        tempfile.TemporaryDirectory() as directory,
    ):
        medians = asyncio.run(
            benchmark(args, redis_server.url, postgres_server.url, Path(directory))
        )
    for name, rate in medians.items():
        print(f"{name:9} {rate:8.0f} ops/s (median)  {rate / medians['redis']:.2f}x Redis")


if __name__ == "__main__":
    main()
