"""Graph runs per second of LangGraph checkpoint savers: AsyncRedisStateSaver vs the others.

The graph: ten nodes in a line (``n0`` ... ``n9``), each appending a 200-character message to
``messages`` (a list with an ``add`` reducer), bumping ``count`` and rewriting ``note``: eleven
checkpoints and ten task writes per graph run. ``--threads`` graph runs (200), each on a thread
of its own, ``--concurrency`` in flight (32), one ``ainvoke`` each; every result is checked.

Contenders, in one process, on one event loop, against one redis-server, every round, in an
order that rotates from round to round (``--rounds``, 5): ``InMemorySaver`` (LangGraph's own, no
I/O: the ceiling), ``AsyncRedisStateSaver`` (this project), and, when installed,
``langgraph-checkpoint-plainredis``'s ``AsyncRedisSaver``. ``langgraph-checkpoint-redis`` needs the
RedisJSON and RediSearch modules (Redis Stack), which plain redis-server lacks: it is skipped
unless ``--stack-url`` points at a Redis Stack server. Each Redis contender has its own client and
key prefix, and its keys are deleted (SCAN MATCH + UNLINK, never FLUSH) after each round.

Reported: the median graph runs/s of each contender over the rounds, ratios of medians, the
benchmark process's CPU time per graph run (the client side: LangGraph, the saver, redis-py), the
saver calls LangGraph made per graph run, the commands the server ran per graph run and per saver
call (INFO commandstats; a pipeline of N commands counts N), and the socket writes per graph run
(AsyncRedisStateSaver sends the calls made in one event-loop iteration in one write, so 32 runs
in flight share writes; each call is still one EVALSHA answered in that one round trip).
From the repository root::

    .venv/bin/pip install langgraph-checkpoint-plainredis   # optional contender
    .venv/bin/python -m benchmarks.langgraph_saver [--rounds 5] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import operator
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from redis.asyncio import Redis
from redis.asyncio.connection import Connection

from atomr_redis_state.langgraph import AsyncRedisStateSaver
from atomr_redis_state.testing import running_server

NODES = 10
MESSAGE = "x" * 200


class State(TypedDict):
    messages: Annotated[list[str], operator.add]
    count: int
    note: str


def build_graph() -> Any:
    builder: Any = StateGraph(State)

    def make(i: int) -> Callable[[State], dict[str, Any]]:
        def node(state: State) -> dict[str, Any]:
            return {"messages": [f"{i}:{MESSAGE}"], "count": state["count"] + 1, "note": f"n{i}"}

        return node

    for i in range(NODES):
        builder.add_node(f"n{i}", make(i))
    builder.add_edge(START, "n0")
    for i in range(NODES - 1):
        builder.add_edge(f"n{i}", f"n{i + 1}")
    builder.add_edge(f"n{NODES - 1}", END)
    return builder


class CountingConnection(Connection):
    """Counts packed writes to the server: one per round trip."""

    writes = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        await super().send_packed_command(command, check_health)


class CountingSaver:
    """Counts the saver calls LangGraph makes, by wrapping the saver's async methods."""

    METHODS = ("aget_tuple", "aput", "aput_writes", "alist")

    def __init__(self, saver: BaseCheckpointSaver[Any]) -> None:
        self.calls = 0
        for name in self.METHODS:
            method = getattr(saver, name)
            if name == "alist":
                setattr(saver, name, self._wrap_gen(method))
            else:
                setattr(saver, name, self._wrap(method))

    def _wrap(self, method: Any) -> Any:
        @functools.wraps(method)  # keeps the signature LangGraph inspects (task_path)
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await method(*args, **kwargs)

        return wrapped

    def _wrap_gen(self, method: Any) -> Any:
        @functools.wraps(method)
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            async for item in method(*args, **kwargs):
                yield item

        return wrapped


@dataclass
class Contender:
    name: str
    make: Callable[[str], BaseCheckpointSaver[Any]]
    client: Redis | None = None
    rates: list[float] = field(default_factory=list)
    writes_per_run: list[float] = field(default_factory=list)
    commands_per_run: list[float] = field(default_factory=list)
    calls_per_run: list[float] = field(default_factory=list)
    cpu_ms_per_run: list[float] = field(default_factory=list)


async def command_stats(client: Redis) -> dict[str, int]:
    """Calls per command the server has run so far (INFO commandstats, INFO excluded)."""
    stats = await client.info("commandstats")
    return {k: int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info"}


def client_commands(before: dict[str, int], after: dict[str, int]) -> int:
    """Commands clients sent between two :func:`command_stats`.

    Redis counts the commands a script runs in commandstats too, so when scripts ran, only the
    script calls (EVALSHA, EVAL) are client commands: the contenders send nothing else then.
    """
    delta = {k: v - before.get(k, 0) for k, v in after.items()}
    scripted = delta.get("cmdstat_evalsha", 0) + delta.get("cmdstat_eval", 0)
    return scripted if scripted else sum(delta.values())


async def one_round(contender: Contender, threads: int, concurrency: int) -> None:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    saver = contender.make(prefix)
    counter = CountingSaver(saver)
    graph = build_graph().compile(checkpointer=saver)
    limit = asyncio.Semaphore(concurrency)

    async def run(i: int) -> None:
        async with limit:
            config = {"configurable": {"thread_id": f"{prefix}-{i}"}}
            out = await graph.ainvoke({"messages": [], "count": 0, "note": ""}, config)
            if out["count"] != NODES or len(out["messages"]) != NODES:
                raise RuntimeError(f"{contender.name}: wrong result {out['count']}")

    # Warm up (scripts loaded, connections open), then measure.
    await run(-1)
    writes_before, calls_before = CountingConnection.writes, counter.calls
    stats_before = await command_stats(contender.client) if contender.client else {}
    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(run(i) for i in range(threads)))
    elapsed = time.perf_counter() - started
    contender.cpu_ms_per_run.append((time.process_time() - cpu_started) * 1000 / threads)
    contender.rates.append(threads / elapsed)
    contender.calls_per_run.append((counter.calls - calls_before) / threads)
    if contender.client is not None:
        commands = client_commands(stats_before, await command_stats(contender.client))
        contender.commands_per_run.append(commands / threads)
        contender.writes_per_run.append((CountingConnection.writes - writes_before) / threads)
        await delete_prefix(contender.client, prefix)


async def delete_prefix(client: Redis, prefix: str) -> None:
    pattern = f"{prefix}*"
    keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
    for i in range(0, len(keys), 1000):
        await client.unlink(*keys[i : i + 1000])
    if [key async for key in client.scan_iter(match=pattern, count=1000)]:
        raise RuntimeError(f"keys left under {prefix}")


def contenders(url: str, stack_url: str | None) -> list[Contender]:
    ours = Redis.from_url(url, connection_class=CountingConnection, max_connections=1024)
    found = [
        Contender("InMemorySaver", lambda prefix: InMemorySaver()),
        Contender(
            "AsyncRedisStateSaver",
            lambda prefix: AsyncRedisStateSaver(ours, prefix=prefix),
            ours,
        ),
    ]
    try:
        from langgraph_checkpoint_plainredis import AsyncRedisSaver
    except ImportError:
        log("langgraph-checkpoint-plainredis is not installed: skipped")
    else:
        plain = Redis.from_url(url, connection_class=CountingConnection, max_connections=1024)
        found.append(
            Contender(
                "plainredis AsyncRedisSaver",
                lambda prefix: AsyncRedisSaver(plain, prefix=prefix),
                plain,
            )
        )
    if stack_url is None:
        log(
            "langgraph-checkpoint-redis needs Redis Stack (RedisJSON + RediSearch): skipped "
            "(pass --stack-url to include it)"
        )
    else:
        from langgraph.checkpoint.redis.aio import (  # type: ignore[import-not-found]
            AsyncRedisSaver as StackSaver,
        )

        stack = Redis.from_url(stack_url, connection_class=CountingConnection, max_connections=1024)

        def make_stack(prefix: str) -> BaseCheckpointSaver[Any]:
            saver: BaseCheckpointSaver[Any] = StackSaver(redis_client=stack)
            return saver

        found.append(Contender("langgraph-checkpoint-redis", make_stack, stack))
    return found


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def main_async(args: argparse.Namespace, url: str) -> None:
    field_list = contenders(url, args.stack_url)
    for name in ("langgraph-checkpoint-redis",):
        for c in field_list:
            if c.name == name:
                setup = c.make("setup")
                await setup.asetup()  # type: ignore[attr-defined]
    for round_no in range(args.rounds):
        order = field_list[round_no % len(field_list) :] + field_list[: round_no % len(field_list)]
        for contender in order:
            await one_round(contender, args.threads, args.concurrency)
            log(f"round {round_no + 1}: {contender.name}: {contender.rates[-1]:.1f} runs/s")
    report(field_list)
    for c in field_list:
        if c.client is not None:
            await c.client.aclose()


def report(field_list: list[Contender]) -> None:
    medians = {c.name: statistics.median(c.rates) for c in field_list}
    print(
        f"\n{'contender':28} {'runs/s':>8} {'cpu ms/run':>11} {'calls/run':>10} {'cmds/run':>9} "
        f"{'cmds/call':>10} {'writes/run':>11}"
    )
    for c in field_list:
        calls = statistics.median(c.calls_per_run)
        commands = statistics.median(c.commands_per_run) if c.commands_per_run else None
        writes = statistics.median(c.writes_per_run) if c.writes_per_run else None
        print(
            f"{c.name:28} {medians[c.name]:8.1f} {statistics.median(c.cpu_ms_per_run):11.2f} "
            f"{calls:10.1f} "
            f"{'-' if commands is None else f'{commands:.1f}':>9} "
            f"{'-' if commands is None else f'{commands / calls:.2f}':>10} "
            f"{'-' if writes is None else f'{writes:.1f}':>11}"
        )
    print(f"\nrounds: {len(field_list[0].rates)}; runs/s per round:")
    for c in field_list:
        print(f"  {c.name:28} {' '.join(f'{r:.1f}' for r in c.rates)}")
    ours = medians["AsyncRedisStateSaver"]
    print()
    for name, rate in medians.items():
        if name != "AsyncRedisStateSaver":
            print(f"AsyncRedisStateSaver / {name}: {ours / rate:.2f}x")


@contextmanager
def server(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    with running_server() as started:
        yield started.url


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--redis-url", default=None, help="default: start a redis-server")
    parser.add_argument("--stack-url", default=None, help="a Redis Stack server, if any")
    args = parser.parse_args(argv)
    with server(args.redis_url) as url:
        asyncio.run(main_async(args, url))


if __name__ == "__main__":
    main()
