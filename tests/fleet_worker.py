"""A fleet worker process for the SIGKILL test: it drives shared runs with StatefulRunner.

Run as ``python -m tests.fleet_worker --url URL [--cluster] ...``. It starts or continues every
run it is given, skipping runs another worker holds, until all of them have completed. Each step
records its side effect (a line with a fresh effect id) in a shared file before returning, and
writes the same id into the state, so the test can match side effects with checkpoints.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
import uuid

from atomr_redis_state import (
    AppendList,
    CheckpointConflictError,
    LeaseHeldError,
    LeaseLostError,
    RedisCheckpointer,
    RunOutcome,
    StatefulRunner,
    StateSchema,
    Step,
    StepContext,
    Writes,
)

SCHEMA = StateSchema.builder().add("effects", AppendList(), []).add_lww("topic").build()


def steps(effects_file: str) -> list[Step]:
    """a -> (b, c) -> d; each step performs one recorded side effect."""

    async def effect(ctx: StepContext) -> Writes:
        effect_id = uuid.uuid4().hex
        line = f"{ctx.run_id}\t{ctx.step}\t{effect_id}\t{os.getpid()}\n".encode()
        fd = os.open(effects_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        await asyncio.sleep(random.uniform(0.03, 0.12))
        return {"effects": [[ctx.step, effect_id]]}

    return [
        Step("a", effect),
        Step("b", effect, ["a"]),
        Step("c", effect, ["a"]),
        Step("d", effect, ["b", "c"]),
    ]


async def drive(runner: StatefulRunner, run_id: str) -> RunOutcome | None:
    """Start the run, or continue it if it exists; None while another worker holds it."""
    try:
        try:
            return await runner.start({"topic": run_id})
        except CheckpointConflictError:
            return await runner.run()
    except (LeaseHeldError, LeaseLostError):
        return None


async def work(args: argparse.Namespace) -> None:
    store = RedisCheckpointer.from_url(args.url, cluster=args.cluster, prefix=args.prefix)
    workflow = steps(args.effects)
    pending = list(args.runs)
    random.shuffle(pending)
    deadline = time.monotonic() + 100
    try:
        while pending and time.monotonic() < deadline:
            for run_id in list(pending):
                runner = StatefulRunner(
                    args.workflow, run_id, workflow, SCHEMA, store, lease_ttl=args.lease_ttl
                )
                outcome = await drive(runner, run_id)
                if outcome is not None and outcome.completed:
                    pending.remove(run_id)
            await asyncio.sleep(0.02)
    finally:
        await store.aclose()
    if pending:
        raise SystemExit(f"runs not completed in time: {pending}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--cluster", action="store_true")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--workflow", required=True)
    parser.add_argument("--runs", type=lambda s: s.split(","), required=True)
    parser.add_argument("--effects", required=True)
    parser.add_argument("--lease-ttl", type=float, default=1.0)
    asyncio.run(work(parser.parse_args()))


if __name__ == "__main__":
    main()
