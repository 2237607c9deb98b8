"""A worker process for the many-workers test: it races other processes on shared runs.

Run as ``python -m tests.worker --url URL [--cluster] ...``. It announces itself ready, waits for
the go signal, then, for every run round-robin, reads the latest snapshot and saves the next
super-step exclusively, until every run has all its steps. It prints what it won as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from atomr_redis_state import (
    JSON,
    CheckpointConflictError,
    CheckpointKey,
    RedisCheckpointer,
    Snapshot,
)


async def work(args: argparse.Namespace) -> dict[str, object]:
    cp = RedisCheckpointer.from_url(args.url, cluster=args.cluster, prefix=args.prefix)
    wins: list[tuple[str, int]] = []
    conflicts = 0
    try:
        await cp.latest(args.workflow, args.runs[0])  # connect (and discover the cluster) first
        barrier = Path(args.barrier)
        (barrier / f"ready-{args.worker}").touch()
        deadline = time.monotonic() + 30
        while not (barrier / "go").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("no go signal")
            await asyncio.sleep(0.005)
        pending = list(args.runs)
        while pending:
            for run in list(pending):
                latest = await cp.latest(args.workflow, run)
                step = 0 if latest is None else latest.key.super_step + 1
                if step == args.steps:
                    pending.remove(run)
                    continue
                values: dict[str, JSON] = {"worker": args.worker, "step": step}
                try:
                    key = CheckpointKey(args.workflow, run, step)
                    await cp.save(Snapshot(key, values), exclusive=True)
                    wins.append((run, step))
                except CheckpointConflictError:
                    conflicts += 1
    finally:
        await cp.aclose()
    return {"worker": args.worker, "wins": wins, "conflicts": conflicts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--cluster", action="store_true")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--workflow", required=True)
    parser.add_argument("--runs", type=lambda s: s.split(","), required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--worker", type=int, required=True)
    parser.add_argument("--barrier", required=True)
    print(json.dumps(asyncio.run(work(parser.parse_args()))))


if __name__ == "__main__":
    main()
