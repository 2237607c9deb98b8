"""A worker process for the SQL race test: it races other processes on one database.

Run as ``python -m tests.sql_race_worker --store sqlite:PATH|postgresql://... [--schema S]
--owner NAME --steps N --runs N --start T``. At wall-clock time ``T`` it saves every super-step
of one shared run exclusively, then acquires a lease on every one of ``--runs`` new runs; it
prints, as JSON, the steps and runs it won.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from atomr_redis_state import (
    CheckpointConflictError,
    CheckpointKey,
    LeaseHeldError,
    Snapshot,
)
from atomr_redis_state.store.checkpointer import BaseCheckpointer
from atomr_redis_state.store.sql import PostgresCheckpointer, SqliteCheckpointer

WORKFLOW = "wf-sql-race"
RUN = "raced"


def open_store(spec: str, schema: str) -> PostgresCheckpointer | SqliteCheckpointer:
    if spec.startswith("sqlite:"):
        return SqliteCheckpointer(spec.removeprefix("sqlite:"))
    return PostgresCheckpointer(spec, schema=schema)


async def race(store: BaseCheckpointer, args: argparse.Namespace) -> dict[str, list[object]]:
    await store.latest(WORKFLOW, RUN)  # connect before the start
    await asyncio.sleep(max(0.0, args.start - time.time()))
    steps: list[object] = []
    for step in range(args.steps):
        snapshot = Snapshot(CheckpointKey(WORKFLOW, RUN, step), {"writer": args.owner})
        try:
            await store.save(snapshot, exclusive=True)
            steps.append(step)
        except CheckpointConflictError:
            pass
    runs: list[object] = []
    for i in range(args.runs):
        try:
            await store.acquire_lease(WORKFLOW, f"leased-{i}", args.owner, 60, must_exist=False)
            runs.append(i)
        except LeaseHeldError:
            pass
    return {"steps": steps, "runs": runs}


async def main(args: argparse.Namespace) -> None:
    store = open_store(args.store, args.schema)
    try:
        won = await race(store, args)
    finally:
        await store.aclose()
    print(json.dumps(won))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--schema", default="atomr")
    parser.add_argument("--owner", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--start", type=float, required=True)
    asyncio.run(main(parser.parse_args()))
