"""Four processes race exclusive saves and leases on one SQLite file and on one Postgres:
every super-step is won by exactly one of them, and so is every run's lease."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from atomr_redis_state import CheckpointKey
from atomr_redis_state.store.checkpointer import BaseCheckpointer
from atomr_redis_state.store.sql import PostgresCheckpointer, SqliteCheckpointer
from atomr_redis_state.testing import PostgresServer
from tests.sql_race_worker import RUN, WORKFLOW

PROCESSES = 4
STEPS = 60
RUNS = 40
REPO = Path(__file__).resolve().parent.parent


async def spawn(spec: str, schema: str, owner: str, start: float) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.sql_race_worker", "--store", spec, "--schema", schema,
        "--owner", owner, "--steps", str(STEPS), "--runs", str(RUNS), "--start", str(start),
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def race(store: BaseCheckpointer, spec: str, schema: str) -> None:
    start = time.time() + 3  # every process connected by then, on a loaded machine
    workers = [await spawn(spec, schema, f"w{i}", start) for i in range(PROCESSES)]
    won: dict[str, dict[str, list[int]]] = {}
    for i, worker in enumerate(workers):
        out, err = await asyncio.wait_for(worker.communicate(), timeout=90)
        assert worker.returncode == 0, err.decode()
        won[f"w{i}"] = json.loads(out)
    step_wins = Counter(step for w in won.values() for step in w["steps"])
    assert step_wins == dict.fromkeys(range(STEPS), 1)
    run_wins = Counter(run for w in won.values() for run in w["runs"])
    assert run_wins == dict.fromkeys(range(RUNS), 1)
    for owner, w in won.items():
        for step in w["steps"]:
            snapshot = await store.load(CheckpointKey(WORKFLOW, RUN, step))
            assert snapshot is not None
            assert snapshot.values == {"writer": owner}
        for run in w["runs"]:
            lease = (await store.run_record(WORKFLOW, f"leased-{run}")).lease
            assert lease is not None
            assert lease.owner == owner
    assert len(won) == PROCESSES


@pytest.mark.timeout(180)
async def test_processes_racing_on_one_sqlite_file_win_each_step_once(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    async with SqliteCheckpointer(path) as store:
        await store.setup()
        await race(store, f"sqlite:{path}", "")


@pytest.mark.timeout(180)
async def test_processes_racing_on_one_postgres_win_each_step_once(
    postgres_server: PostgresServer,
) -> None:
    schema = f"race{uuid.uuid4().hex[:8]}"
    async with PostgresCheckpointer(postgres_server.url, schema=schema) as store:
        await store.setup()
        await race(store, postgres_server.url, schema)
