"""A worker process for the live-reshard test: it saves and forks on a Redis Cluster while the
test moves the slots of its runs between nodes.

Run as ``python -m tests.reshard_worker --url URL ...``. It announces itself ready, waits for the
go signal, then, round-robin over its own runs, saves the next super-step exclusively, and every
few steps forks the step it just saved (with a fork id of its own making, reused on retry),
until the stop signal. An operation that fails with StoreUnavailableError is retried with the
very same arguments (the same Snapshot object, the same fork id) until it is acknowledged. Any
other exception is recorded as a failure. It prints what was acknowledged as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from redis.asyncio import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from atomr_redis_state import (
    JSON,
    CheckpointKey,
    RedisCheckpointer,
    Snapshot,
    StoreUnavailableError,
)
from atomr_redis_state.store.ids import fork_run_id

T = TypeVar("T")
FORK_EVERY = 8


class Report:
    def __init__(self, worker: int) -> None:
        self.worker = worker
        self.saves: list[tuple[str, int]] = []
        self.forks: list[tuple[str, str, int]] = []
        self.retried: list[str] = []
        self.unavailable = 0
        self.failures: list[str] = []

    def as_json(self) -> dict[str, Any]:
        return {
            "worker": self.worker,
            "saves": self.saves,
            "forks": self.forks,
            "retried": self.retried,
            "unavailable": self.unavailable,
            "failures": self.failures,
        }


async def until_acknowledged(
    report: Report, what: str, call: Callable[[], Awaitable[T]], deadline: float
) -> T | None:
    """``call()`` until it succeeds, again after StoreUnavailableError only; None on failure."""
    attempts = 0
    while time.monotonic() < deadline:
        attempts += 1
        try:
            result = await call()
        except StoreUnavailableError:
            report.unavailable += 1
            await asyncio.sleep(0.05)
            continue
        except Exception as exc:  # anything else is a failure of the test's subject
            report.failures.append(f"{what} (attempt {attempts}): {type(exc).__module__}."
                                   f"{type(exc).__name__}: {exc}")  # fmt: skip
            return None
        if attempts > 1:
            report.retried.append(what)
        return result
    report.failures.append(f"{what}: not acknowledged before the deadline")
    return None


async def work(args: argparse.Namespace) -> dict[str, Any]:
    report = Report(args.worker)
    client: RedisCluster | None = None
    if args.impatient:
        # No retries in redis-py and almost no retry budget in the store: whatever a reshard
        # does to a call surfaces at once, and the worker's own retry has to cope.
        client = RedisCluster.from_url(args.url, retry=Retry(NoBackoff(), 0))
        store = RedisCheckpointer(client, prefix=args.prefix, retry_for=0.001)
    else:
        store = RedisCheckpointer.from_url(args.url, cluster=True, prefix=args.prefix)
    deadline = time.monotonic() + args.deadline
    barrier = Path(args.barrier)
    try:
        await store.latest(args.workflow, args.runs[0])  # discover the cluster first
        (barrier / f"ready-{args.worker}").touch()
        while not (barrier / "go").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("no go signal")
            await asyncio.sleep(0.005)
        steps = dict.fromkeys(args.runs, 0)
        while not (barrier / "stop").exists() and time.monotonic() < deadline:
            for run in args.runs:
                step = steps[run]
                values: dict[str, JSON] = {"worker": args.worker, "run": run, "step": step}
                snapshot = Snapshot(CheckpointKey(args.workflow, run, step), values)

                async def save(snapshot: Snapshot = snapshot) -> bool:
                    await store.save(snapshot, exclusive=True)
                    return True

                what = f"save {run}@{step}"
                if await until_acknowledged(report, what, save, deadline + 5) is None:
                    return report.as_json()
                report.saves.append((run, step))
                steps[run] = step + 1
                if step % FORK_EVERY == FORK_EVERY - 1:
                    fork_id = fork_run_id(run)
                    source = CheckpointKey(args.workflow, run, step)

                    async def fork(source: CheckpointKey = source, fork_id: str = fork_id) -> str:
                        return await store.fork(source, {"forked": True}, run_id=fork_id)

                    what = f"fork {run}@{step} -> {fork_id}"
                    made = await until_acknowledged(report, what, fork, deadline + 5)
                    if made is None:
                        return report.as_json()
                    if made != fork_id:
                        report.failures.append(f"{what}: made {made}")
                    report.forks.append((fork_id, run, step))
            await asyncio.sleep(args.pause)
    finally:
        await store.aclose()
        if client is not None:
            await client.aclose()
    return report.as_json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--workflow", required=True)
    parser.add_argument("--runs", type=lambda s: s.split(","), required=True)
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--barrier", required=True)
    parser.add_argument("--deadline", type=float, default=60.0)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between rounds")
    parser.add_argument("--impatient", action="store_true", help="no retries but its own")
    print(json.dumps(asyncio.run(work(parser.parse_args()))))


if __name__ == "__main__":
    main()
