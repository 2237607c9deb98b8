"""Which SQLite driver for the SQLite store: aiosqlite, or the standard library on a thread.

Runs the agent-loop workload (:mod:`benchmarks.workload`) side by side, in one process, on one
file system, alternating the contenders round by round:

- ``stdlib-thread``: :class:`~atomr_redis_state.store.sql.SqliteCheckpointer` as shipped: the
  standard library's sqlite3 on one worker thread, each operation's whole transaction in one
  hop to that thread;
- ``aiosqlite``: the same statements, tables and encoding through aiosqlite, as its API is
  used: one ``await`` (one hop to aiosqlite's thread) per statement.

    python -m benchmarks.sqlite_driver [--runs 200] [--concurrency 32] [--rounds 5]

Reports operations per second per contender (medians over rounds) and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiosqlite

from atomr_redis_state import JSON, new_run_id
from atomr_redis_state.store.codec import encode_channels, encode_meta
from atomr_redis_state.store.ids import fork_run_id
from atomr_redis_state.store.sql import SqliteCheckpointer
from atomr_redis_state.store.sql.rows import decoded_of, merged_channels, row_of
from atomr_redis_state.store.types import now_ms

from .workload import LABEL, OPS_PER_RUN, WORKFLOW, Contender, Row, StoreContender, agent_run

_LIVE_JOIN = (
    "FROM atomr_snapshots s JOIN atomr_runs r "
    "ON r.workflow_id = s.workflow_id AND r.run_id = s.run_id "
    "WHERE s.workflow_id = ? AND s.run_id = ? AND (r.deadline_ms IS NULL OR r.deadline_ms > ?)"
)


class AiosqliteContender:
    """The store's transactions, statement by statement, through aiosqlite."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        self.lock = asyncio.Lock()  # one connection: one transaction at a time

    async def _publish(self, run_id: str) -> None:
        await self.db.execute(
            "INSERT INTO atomr_events (workflow_id, run_id, payload) VALUES (?, ?, ?)",
            (WORKFLOW, run_id, b"{}"),
        )

    async def save(self, run_id: str, step: int, values: dict[str, JSON]) -> None:
        fields = encode_channels(values) + encode_meta(LABEL, now_ms())
        row = row_of(fields)
        async with self.lock:
            await self.db.execute("BEGIN IMMEDIATE")
            cursor = await self.db.execute(
                "SELECT steps FROM atomr_runs WHERE workflow_id = ? AND run_id = ?",
                (WORKFLOW, run_id),
            )
            run = await cursor.fetchone()
            cursor = await self.db.execute(
                "SELECT write_token FROM atomr_snapshots "
                "WHERE workflow_id = ? AND run_id = ? AND step = ?",
                (WORKFLOW, run_id, step),
            )
            found = await cursor.fetchone()
            await self.db.execute(
                "INSERT INTO atomr_snapshots (workflow_id, run_id, step, timestamp_ms, label, "
                "channels, metadata, write_token) VALUES (?, ?, ?, ?, ?, ?, ?, NULL) "
                "ON CONFLICT (workflow_id, run_id, step) DO UPDATE SET "
                "timestamp_ms = excluded.timestamp_ms, label = excluded.label, "
                "channels = excluded.channels, metadata = excluded.metadata",
                (WORKFLOW, run_id, step, row.timestamp_ms, row.label, row.channels.decode(), None),
            )
            steps = (0 if run is None else run[0]) + (0 if found else 1)
            await self.db.execute(
                "INSERT INTO atomr_runs (workflow_id, run_id, steps) VALUES (?, ?, ?) "
                "ON CONFLICT (workflow_id, run_id) DO UPDATE SET steps = excluded.steps",
                (WORKFLOW, run_id, steps),
            )
            await self._publish(run_id)
            await self.db.execute("COMMIT")

    async def latest(self, run_id: str) -> tuple[int, dict[str, JSON]] | None:
        cursor = await self.db.execute(
            "SELECT s.step, s.channels, s.label, s.timestamp_ms, s.metadata "
            f"{_LIVE_JOIN} ORDER BY s.step DESC LIMIT 1",
            (WORKFLOW, run_id, now_ms()),
        )
        found = await cursor.fetchone()
        if found is None:
            return None
        values = decoded_of(*found[1:]).values
        return found[0], values

    async def list(self, run_id: str) -> list[Row]:
        cursor = await self.db.execute(
            f"SELECT s.step, s.timestamp_ms, s.label {_LIVE_JOIN} ORDER BY s.step",
            (WORKFLOW, run_id, now_ms()),
        )
        return [(row[0], row[1], row[2]) for row in await cursor.fetchall()]

    async def fork(self, run_id: str, step: int, edits: dict[str, JSON]) -> str:
        target = fork_run_id(run_id)
        row = row_of(encode_channels(edits) + encode_meta(f"fork-of:{run_id}", now_ms()))
        async with self.lock:
            await self.db.execute("BEGIN IMMEDIATE")
            cursor = await self.db.execute(
                "SELECT steps FROM atomr_runs WHERE workflow_id = ? AND run_id = ?",
                (WORKFLOW, target),
            )
            if await cursor.fetchone() is not None:
                raise AssertionError("fork target exists")
            cursor = await self.db.execute(
                "SELECT channels, metadata FROM atomr_snapshots "
                "WHERE workflow_id = ? AND run_id = ? AND step = ?",
                (WORKFLOW, run_id, step),
            )
            source = await cursor.fetchone()
            assert source is not None
            await self.db.execute(
                "INSERT INTO atomr_snapshots (workflow_id, run_id, step, timestamp_ms, label, "
                "channels, metadata, write_token) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    WORKFLOW,
                    target,
                    step,
                    row.timestamp_ms,
                    row.label,
                    merged_channels(source[0], row.channels).decode(),
                    source[1],
                    target,
                ),
            )
            await self.db.execute(
                "INSERT INTO atomr_runs (workflow_id, run_id, steps) VALUES (?, ?, 1)",
                (WORKFLOW, target),
            )
            await self._publish(target)
            await self.db.execute("COMMIT")
        return target


async def drive(contender: Contender, runs: int, concurrency: int) -> float:
    """Operations per second of ``runs`` agent runs, ``concurrency`` in flight."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await agent_run(contender, new_run_id())

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(runs)))
    return runs * OPS_PER_RUN / (time.perf_counter() - start)


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, list[float]] = {"stdlib-thread": [], "aiosqlite": []}
    with tempfile.TemporaryDirectory() as directory:
        for round_ in range(args.rounds):
            for name in results if round_ % 2 == 0 else reversed(list(results)):
                path = Path(directory) / f"{name}-{round_}.db"
                store = SqliteCheckpointer(path)
                await store.setup()
                if name == "stdlib-thread":
                    rate = await drive(StoreContender(store), args.runs, args.concurrency)
                else:
                    async with aiosqlite.connect(path, isolation_level=None) as db:
                        await db.execute("PRAGMA synchronous = NORMAL")
                        rate = await drive(AiosqliteContender(db), args.runs, args.concurrency)
                await store.aclose()
                results[name].append(rate)
                print(f"round {round_}: {name:14} {rate:8.0f} ops/s", flush=True)
    medians = {name: statistics.median(rates) for name, rates in results.items()}
    return {
        "ops_per_s": medians,
        "stdlib_over_aiosqlite": medians["stdlib-thread"] / medians["aiosqlite"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    result = asyncio.run(benchmark(parser.parse_args()))
    for name, rate in result["ops_per_s"].items():
        print(f"{name:14} {rate:8.0f} ops/s (median)")
    print(f"stdlib-thread / aiosqlite: {result['stdlib_over_aiosqlite']:.2f}x")


if __name__ == "__main__":
    main()
