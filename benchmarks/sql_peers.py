"""The agent-loop workload on the SQL stores beside LangGraph's Postgres and SQLite savers.

One process, one throwaway Postgres (:func:`atomr_redis_state.testing.running_postgres`, on a
free loopback port, ``fsync=off`` as the tests run it), one temporary directory for the SQLite
files and one throwaway redis-server; every round runs every contender once, in an order that
rotates from round to round:

- ``PostgresCheckpointer`` (a pool of ``--pool-size`` connections, 10 as the store's default) and
  langgraph-checkpoint-postgres's ``AsyncPostgresSaver`` (over a psycopg ``AsyncConnectionPool``
  of as many connections, with the connection options its documentation gives: autocommit,
  ``prepare_threshold=0``, ``dict_row``; its saver-wide lock runs one call at a time), each in
  a fresh schema of its own per round;
- ``SqliteCheckpointer`` and langgraph-checkpoint-sqlite's ``AsyncSqliteSaver`` (an aiosqlite
  connection, WAL as its ``setup`` sets it), each on a fresh file per round, both with
  ``synchronous=NORMAL``;
- ``RedisCheckpointer`` with its defaults, for the Postgres store's ratio to Redis.

The savers are driven the way the LangGraph benchmark (``langgraph_saver.py``) drives them: one
saver shared by every run in flight on one event loop, through the calls LangGraph makes
(``aget_tuple``, ``aput`` with the channels written this step as new versions, ``alist``), see
:class:`SaverContender`. Reported per contender: ops/s (median over rounds) and the ratios of
medians (ours / peer, Postgres / Redis) with their per-round range, client CPU per operation
(SQLite included: it runs in this process), the server processes' CPU per operation (from
/proc: the server, its live children and those it reaped), and from one sequential traced run
per contender the round trips per operation (Postgres: client-to-server turns in libpq's
protocol trace; Redis: socket writes) and the SQL statements per operation (Postgres: Sync and
simple Query messages; SQLite: sqlite3's trace callback)::

    .venv/bin/pip install -e '.[dev,bench]'
    .venv/bin/python -m benchmarks.sql_peers [--runs 100] [--concurrency 32] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite
import psycopg
from langgraph.checkpoint.base import BaseCheckpointSaver, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from atomr_redis_state import JSON, Checkpointer, RedisCheckpointer, new_run_id
from atomr_redis_state.store.sql import PostgresCheckpointer, SqliteCheckpointer
from atomr_redis_state.testing import (
    PostgresServer,
    RedisServer,
    running_postgres,
    running_server,
)

from .workload import (
    LABEL,
    OPS_PER_RUN,
    Contender,
    Row,
    StoreContender,
    agent_run,
    log,
    make_client,
    median,
    options,
    report,
)

PG_OURS, PG_PEER = "PostgresCheckpointer", "AsyncPostgresSaver"
LITE_OURS, LITE_PEER = "SqliteCheckpointer", "AsyncSqliteSaver"
REDIS = "RedisCheckpointer"


class SaverContender:
    """The workload through a LangGraph saver's calls, as LangGraph makes them: a run is a
    thread (namespace ``""``); ``save`` is ``aput`` of a checkpoint holding the five channels,
    each at a new version, with the run's last checkpoint (the one ``latest`` read, as a
    resumed graph has it) as parent, and the step and label in its metadata; ``latest`` is
    ``aget_tuple``; ``list`` is ``alist`` (newest first, reversed); ``fork`` finds the step's
    checkpoint with ``alist(filter={"step": step}, limit=1)`` and ``aput``s it, with the edits,
    as the first checkpoint of a new thread (two calls)."""

    def __init__(self, saver: BaseCheckpointSaver[Any]) -> None:
        self.saver = saver
        self.heads: dict[str, tuple[Any, dict[str, Any]]] = {}
        """Per run, the config and channel versions of the checkpoint ``latest`` last read."""

    @staticmethod
    def _config(run_id: str) -> Any:
        return {"configurable": {"thread_id": run_id, "checkpoint_ns": ""}}

    async def _put(
        self, config: Any, step: int, values: dict[str, JSON], versions: dict[str, Any], label: str
    ) -> None:
        new_versions = {
            name: self.saver.get_next_version(versions.get(name), None) for name in values
        }
        checkpoint: Checkpoint = {
            "v": 4,
            "id": str(uuid6(clock_seq=step)),
            "ts": datetime.now().astimezone().isoformat(),
            "channel_values": dict(values),
            "channel_versions": {**versions, **new_versions},
            "versions_seen": {},
            "updated_channels": list(values),
        }
        metadata: CheckpointMetadata = {"source": "loop", "step": step, "parents": {}}
        metadata["label"] = label  # type: ignore[typeddict-unknown-key]
        await self.saver.aput(config, checkpoint, metadata, new_versions)

    async def save(self, run_id: str, step: int, values: dict[str, JSON]) -> None:
        config, versions = self.heads.pop(run_id, (self._config(run_id), {}))
        await self._put(config, step, values, versions, LABEL)

    async def latest(self, run_id: str) -> tuple[int, dict[str, JSON]] | None:
        found = await self.saver.aget_tuple(self._config(run_id))
        if found is None:
            return None
        self.heads[run_id] = (found.config, dict(found.checkpoint["channel_versions"]))
        return found.metadata["step"], found.checkpoint["channel_values"]

    async def list(self, run_id: str) -> list[Row]:
        rows = [
            (
                found.metadata["step"],
                int(datetime.fromisoformat(found.checkpoint["ts"]).timestamp() * 1000),
                str(found.metadata.get("label")),
            )
            async for found in self.saver.alist(self._config(run_id))
        ]
        rows.reverse()
        return rows

    async def fork(self, run_id: str, step: int, edits: dict[str, JSON]) -> str:
        found = [
            t async for t in self.saver.alist(self._config(run_id), filter={"step": step}, limit=1)
        ]
        if not found:
            raise AssertionError(f"{run_id}: nothing to fork at step {step}")
        fork_id = f"{run_id}~fork-{uuid.uuid4().hex}"
        values = {**found[0].checkpoint["channel_values"], **edits}
        await self._put(self._config(fork_id), step, values, {}, f"fork-of:{run_id}")
        self.heads.pop(run_id, None)
        return fork_id


@dataclass
class Made:
    """A contender ready to run, and what closes it; ``traces`` counts its wire and statements
    when it was made traced (:class:`Tracer`)."""

    contender: Contender
    close: Callable[[], Awaitable[None]]


@dataclass
class Tracer:
    """Counts for a traced contender: Postgres turns and statements from libpq's protocol trace
    file; SQLite statements from sqlite3's trace callback; Redis writes from the client."""

    path: Path
    sqlite_statements: int = 0
    redis: Counter[str] = field(default_factory=Counter)

    def libpq(self) -> tuple[int, int]:
        """(round trips, statements) in the trace so far: a round trip is a run of messages the
        client sent followed by the server's answer; a statement is a Sync or a simple Query."""
        if not self.path.exists():
            return 0, 0
        turns = statements = 0
        last = ""
        for line in self.path.read_text().splitlines():
            parts = line.split("\t")  # timestamp, F (client) or B (server), length, type, ...
            if len(parts) < 4:
                continue
            side, kind = parts[1], parts[3]
            if side == "F" and kind in ("Sync", "Query"):
                statements += 1
            if side == "B" and last == "F":
                turns += 1
            last = side
        return turns, statements


class Contenders:
    """Makes each contender fresh, on the shared servers and directory."""

    def __init__(
        self, redis: RedisServer, postgres: PostgresServer, directory: Path, size: int
    ) -> None:
        self.redis_url, self.postgres_url = redis.url, postgres.url
        self.directory, self.size = directory, size
        redis_pid = None if redis.process is None else redis.process.pid
        postgres_pid = None if postgres.process is None else postgres.process.pid
        self.server_pids = {
            PG_OURS: postgres_pid,
            PG_PEER: postgres_pid,
            LITE_OURS: None,
            LITE_PEER: None,
            REDIS: redis_pid,
        }
        """The server each contender uses (SQLite runs in this process: in cli µs/op)."""

    async def _schema(self) -> tuple[str, Callable[[], Awaitable[None]]]:
        """A fresh schema, and what drops it."""
        name = f"b{uuid.uuid4().hex[:10]}"

        async def drop() -> None:
            async with await psycopg.AsyncConnection.connect(
                self.postgres_url, autocommit=True
            ) as conn:
                await conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")

        return name, drop

    async def _pool(self, tracer: Tracer | None, **kwargs: Any) -> AsyncConnectionPool[Any]:
        trace = None if tracer is None else tracer.path.open("a")

        async def configure(conn: Any) -> None:
            if trace is not None:
                conn.pgconn.trace(trace.fileno())

        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self.postgres_url,
            min_size=1,
            max_size=1 if tracer else self.size,
            kwargs={"autocommit": True, **kwargs},
            open=False,
            configure=configure,
        )
        await pool.open(wait=True)
        return pool

    async def postgres_ours(self, tracer: Tracer | None) -> Made:
        schema, drop = await self._schema()
        pool = await self._pool(tracer)
        store = PostgresCheckpointer(pool, schema=schema)
        await store.setup()

        async def close() -> None:
            await pool.close()
            await drop()

        return Made(StoreContender(store), close)

    async def postgres_peer(self, tracer: Tracer | None) -> Made:
        schema, drop = await self._schema()
        async with await psycopg.AsyncConnection.connect(self.postgres_url, autocommit=True) as c:
            await c.execute(f"CREATE SCHEMA {schema}")
        pool = await self._pool(
            tracer, prepare_threshold=0, row_factory=dict_row, options=f"-c search_path={schema}"
        )
        saver = AsyncPostgresSaver(pool)
        await saver.setup()

        async def close() -> None:
            await pool.close()
            await drop()

        return Made(SaverContender(saver), close)

    async def sqlite_ours(self, tracer: Tracer | None) -> Made:
        store = SqliteCheckpointer(self.directory / f"{uuid.uuid4().hex}.db")
        await store.setup()
        if tracer is not None:

            def count(statement: str) -> None:
                tracer.sqlite_statements += 1

            await store._run(lambda conn: conn.set_trace_callback(count))
        return Made(StoreContender(store), store.aclose)

    async def sqlite_peer(self, tracer: Tracer | None) -> Made:
        conn = await aiosqlite.connect(self.directory / f"{uuid.uuid4().hex}.db")
        saver = AsyncSqliteSaver(conn)
        await saver.setup()
        await conn.execute("PRAGMA synchronous = NORMAL")
        if tracer is not None:

            def count(statement: str) -> None:
                tracer.sqlite_statements += 1

            await conn.set_trace_callback(count)
        return Made(SaverContender(saver), conn.close)

    async def redis(self, tracer: Tracer | None) -> Made:
        client, wire = make_client(self.redis_url, 64)
        if tracer is not None:
            tracer.redis = wire
        prefix = f"b{uuid.uuid4().hex[:8]}"
        store: Checkpointer = RedisCheckpointer(client, prefix=prefix)

        async def close() -> None:
            async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                await client.unlink(key)
            await client.aclose()

        return Made(StoreContender(store), close)

    def makers(self) -> dict[str, Callable[[Tracer | None], Awaitable[Made]]]:
        return {
            PG_OURS: self.postgres_ours,
            PG_PEER: self.postgres_peer,
            LITE_OURS: self.sqlite_ours,
            LITE_PEER: self.sqlite_peer,
            REDIS: self.redis,
        }


def server_cpu_s(pid: int | None) -> float:
    """CPU seconds used so far by the server process ``pid``, its live children and the children
    it has reaped (from /proc; 0 without a pid)."""
    if pid is None:
        return 0.0
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if entry.name == str(pid):  # utime, stime, cutime, cstime
            ticks += sum(int(value) for value in fields[11:15])
        elif fields[1] == str(pid):
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


async def drive(contender: Contender, runs: int, concurrency: int) -> tuple[float, float]:
    """``runs`` agent runs, ``concurrency`` in flight: (ops/s, client CPU µs per operation)."""
    run_ids = iter([new_run_id() for _ in range(runs)])

    async def worker() -> None:
        for run_id in run_ids:
            await agent_run(contender, run_id)

    gc.collect()
    cpu, start = time.process_time(), time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, runs)):
            group.create_task(worker())
    ops = runs * OPS_PER_RUN
    return ops / (time.perf_counter() - start), (time.process_time() - cpu) / ops * 1e6


async def traced(
    name: str, make: Callable[[Tracer | None], Awaitable[Made]], directory: Path
) -> dict[str, float | None]:
    """One sequential run of the contender made traced, after one untraced-warm-up run: its
    round trips and statements per operation."""
    tracer = Tracer(directory / f"{name}.trace")
    made = await make(tracer)
    await agent_run(made.contender, new_run_id())
    turns0, statements0 = tracer.libpq()
    lite0, wire0 = tracer.sqlite_statements, Counter(tracer.redis)
    await agent_run(made.contender, new_run_id())
    turns, statements = tracer.libpq()
    wire = tracer.redis - wire0
    await made.close()
    if name in (PG_OURS, PG_PEER):
        return {
            "rt/op": (turns - turns0) / OPS_PER_RUN,
            "stmt/op": (statements - statements0) / OPS_PER_RUN,
        }
    if name == REDIS:
        return {"rt/op": wire["round_trips"] / OPS_PER_RUN, "stmt/op": None}
    return {"rt/op": None, "stmt/op": (tracer.sqlite_statements - lite0) / OPS_PER_RUN}


def ratio(rates: dict[str, list[float]], a: str, b: str) -> dict[str, Any]:
    """The ratio of ``a``'s median ops/s to ``b``'s, and the range of the per-round ratios."""
    per_round = [x / y for x, y in zip(rates[a], rates[b], strict=True)]
    return {
        "ratio": f"{a} / {b}",
        "of medians": statistics.median(rates[a]) / statistics.median(rates[b]),
        "min round": min(per_round),
        "max round": max(per_round),
    }


async def benchmark(
    args: argparse.Namespace, redis: RedisServer, postgres: PostgresServer, directory: Path
) -> dict[str, Any]:
    made = Contenders(redis, postgres, directory, args.pool_size)
    makers = made.makers()
    names = list(makers)
    rates: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    server: dict[str, list[float | None]] = {name: [] for name in names}
    ops = args.runs * OPS_PER_RUN
    load_before = os.getloadavg()[0]
    for n in range(args.rounds):
        for name in names[n % len(names) :] + names[: n % len(names)]:
            one = await makers[name](None)
            await drive(one.contender, args.warmup, args.concurrency)
            pid = made.server_pids[name]
            server_before = server_cpu_s(pid)
            rate, cpu_us = await drive(one.contender, args.runs, args.concurrency)
            await one.close()
            await asyncio.sleep(0.3)  # the closed pool's backends exit and are reaped
            server[name].append(
                None if pid is None else (server_cpu_s(pid) - server_before) / ops * 1e6
            )
            rates[name].append(rate)
            cpu[name].append(cpu_us)
            log(f"round {n + 1}: {name} {rate:,.0f} ops/s, {cpu_us:,.0f} cli µs/op")
    load_after = os.getloadavg()[0]
    wire = {name: await traced(name, makers[name], directory) for name in names}
    return {
        "environment": {
            "runs": args.runs,
            "concurrency": args.concurrency,
            "pool size": args.pool_size,
            "rounds": args.rounds,
            "CPUs": os.cpu_count(),
            "load before": load_before,
            "load after": load_after,
        },
        "contenders (medians over rounds; rt/op and stmt/op from one sequential traced run)": [
            {
                "contender": name,
                "ops/s": statistics.median(rates[name]),
                "cli µs/op": statistics.median(cpu[name]),
                "srv µs/op": median(server[name]),
                **wire[name],
            }
            for name in names
        ],
        "ratios of medians (per-round range)": [
            ratio(rates, PG_OURS, PG_PEER),
            ratio(rates, LITE_OURS, LITE_PEER),
            ratio(rates, PG_OURS, REDIS),
            ratio(rates, LITE_OURS, REDIS),
        ],
        "ops/s by round": [
            {"contender": name, **{f"round {i + 1}": r for i, r in enumerate(rates[name])}}
            for name in names
        ],
    }


def main() -> None:
    parser = options(__doc__, "runs per contender per round (100)")
    parser.set_defaults(runs=100, rounds=5, warmup=4)
    parser.add_argument(
        "--pool-size",
        type=int,
        default=10,
        help="connections per Postgres pool, ours and the peer's (10: the store's default)",
    )
    args = parser.parse_args()
    with (
        running_server() as redis_server,
        running_postgres() as postgres_server,
        tempfile.TemporaryDirectory(dir=Path.cwd(), prefix=".bench-sql-") as directory,
    ):
        result = asyncio.run(benchmark(args, redis_server, postgres_server, Path(directory)))
    report(result, args.json)


if __name__ == "__main__":
    main()
