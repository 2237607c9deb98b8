"""Shared helpers of the command-line tests (no tests here): stores, seeded runs, invocations.

On fakeredis the commands run in-process (click's CliRunner) with an opener that connects to a
shared ``FakeServer``; on a real Redis they run as a subprocess, as a user would run them.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import TypeVar

import fakeredis
from click.testing import CliRunner, Result

from atomr_redis_state import (
    AppendList,
    Checkpointer,
    CheckpointKey,
    RedisCheckpointer,
    StatefulRunner,
    StateSchema,
    Step,
    StepContext,
    Writes,
)
from atomr_redis_state.cli.app import cli
from atomr_redis_state.cli.connection import CliEnv, StoreOptions

T = TypeVar("T")
BOX_DRAWING = re.compile("[\u2500-\u257f]")
WF = "wf-cli"
CLI = [sys.executable, "-m", "atomr_redis_state.cli"]

SCHEMA = (
    StateSchema.builder()
    .add("messages", AppendList(), [])
    .add_lww("plan")
    .add_lww("approval")
    .build()
)


class ToolDown(RuntimeError):
    """A tool that is down: fails the run's second layer."""


async def _plan(ctx: StepContext) -> Writes:
    return {"plan": {"goal": "trip", "days": 3, "stops": ["Lisbon"]}, "messages": "planned"}


async def _search(ctx: StepContext) -> Writes:
    return {"messages": {"role": "tool", "content": "flights found " + "x" * 600}}


async def _approve(ctx: StepContext) -> Writes:
    answer = ctx.interrupt({"question": "book it?"})
    return {"approval": answer, "messages": "approved"}


async def _broken(ctx: StepContext) -> Writes:
    raise ToolDown("the flights API is down")


def steps(second: Callable[[StepContext], Awaitable[Writes]]) -> list[Step]:
    return [Step("plan", _plan), Step("second", second, ["plan"])]


@dataclass
class Seeded:
    """The runs :func:`seed` made: completed, paused, failed, and a fork of the completed one."""

    done: str = "run-done"
    paused: str = "run-paused"
    failed: str = "run-failed"
    fork: str = ""
    extra: list[str] = field(default_factory=list)


async def seed(store: Checkpointer, workflow: str = WF) -> Seeded:
    """Make a completed run, a paused one, a failed one, and a fork of the completed one."""
    seeded = Seeded()
    await StatefulRunner(workflow, seeded.done, steps(_search), SCHEMA, store).start({})
    await StatefulRunner(workflow, seeded.paused, steps(_approve), SCHEMA, store).start({})
    failing = StatefulRunner(workflow, seeded.failed, steps(_broken), SCHEMA, store)
    with suppress(ToolDown):
        await failing.start({})
    seeded.fork = await store.fork(
        CheckpointKey(workflow, seeded.done, 1), {"plan": {"goal": "trip", "days": 5}}
    )
    return seeded


class FakeStores:
    """A fakeredis server shared by the test and the commands it runs in-process."""

    def __init__(self) -> None:
        self.server = fakeredis.FakeServer(version=(7, 0))
        self.opened: list[StoreOptions] = []

    @asynccontextmanager
    async def open(self, options: StoreOptions) -> AsyncIterator[Checkpointer]:
        self.opened.append(options)
        client = fakeredis.FakeAsyncRedis(server=self.server)
        try:
            yield RedisCheckpointer(client, prefix=options.prefix, ttl=options.ttl)
        finally:
            await client.aclose()

    def store(self, prefix: str = "atomr") -> AbstractAsyncContextManager[Checkpointer]:
        return self.open(StoreOptions(prefix=prefix))

    def run(self, work: Callable[[Checkpointer], Awaitable[T]], prefix: str = "atomr") -> T:
        async def main() -> T:
            async with self.store(prefix) as store:
                return await work(store)

        return asyncio.run(main())

    def invoke(self, *args: str, input: str | bytes | None = None, columns: int = 200) -> Result:
        runner = CliRunner(env={"COLUMNS": str(columns)})
        return runner.invoke(cli, list(args), obj=CliEnv(self.open), input=input)


def unique_prefix() -> str:
    return f"tcli{uuid.uuid4().hex[:10]}"


def run_on(url: str, prefix: str, work: Callable[[Checkpointer], Awaitable[T]]) -> T:
    async def main() -> T:
        async with RedisCheckpointer.from_url(url, prefix=prefix) as store:
            return await work(store)

    return asyncio.run(main())


def command(
    *args: str, env: dict[str, str] | None = None, input: bytes | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[bytes]:
    """Run the command line as a subprocess; output as bytes."""
    environment = {**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "200", **(env or {})}
    for name in ("ATOMR_REDIS_URL", "ATOMR_PREFIX", "ATOMR_CLUSTER"):
        if env is None or name not in env:
            environment.pop(name, None)
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        timeout=timeout,
        env=environment,
        input=input,
        check=False,
    )


def flat(output: str | bytes) -> str:
    """The text without table borders, every run of whitespace as one space."""
    text = output.decode() if isinstance(output, bytes) else output
    return " ".join(BOX_DRAWING.sub(" ", text).split())


def store_args(url: str, prefix: str) -> Sequence[str]:
    return ("--redis-url", url, "--prefix", prefix)
