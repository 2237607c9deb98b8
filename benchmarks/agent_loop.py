"""The agent-loop benchmark of /work/shared/WORKLOAD.md (see benchmarks/README.md).

Three contenders run the same workload in one process, on one asyncio event loop, against one
redis-server, alternating round by round:

- ``RedisCheckpointer``: the project's store;
- ``floor``: a hand-written redis-py client making the fewest calls for the same work and the
  same data in Redis (a pipelined HSET + ZADD per save; ZREVRANGE then HGETALL for latest; ZRANGE
  then a pipeline of HMGETs for list; HGETALL then a pipelined HSET + ZADD for fork). It encodes
  each channel with a plain ``orjson.dumps`` and decodes each field with ``orjson.loads``: none of
  the store's strict-JSON validation, id checks, key escaping, Lua or model objects;
- ``InMemoryCheckpointer``: an upper bound for everything that is not Redis.

Unless ``--redis-url`` is given, the benchmark starts its own redis-server on a free loopback
port (no persistence, a temporary directory) and stops it by pid at the end. It never flushes a
database: each contender writes under its own random key prefix and, after every round, deletes
exactly the keys under that prefix (SCAN MATCH + UNLINK).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import importlib.metadata
import json
import math
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import orjson
import redis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.utils import HIREDIS_AVAILABLE

from atomr_redis_state import (
    JSON,
    Checkpointer,
    CheckpointKey,
    InMemoryCheckpointer,
    RedisCheckpointer,
    Snapshot,
)
from atomr_redis_state.codec import decode_fields, encode_channels, encode_meta
from atomr_redis_state.keys import KeyLayout

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout, for tests.servers
from tests.servers import RedisServer as RedisServer
from tests.servers import start_server as start_server

# --------------------------------------------------------------------------------------------
# The workload (WORKLOAD.md)
# --------------------------------------------------------------------------------------------

STEPS = 40
"""Super-steps per run (0..39)."""
FORK_AT = 20
"""The step every run is forked at."""
OPS_PER_RUN = (STEPS - 1) + STEPS + 1 + 1 + 1
"""39 latest + 40 saves + 1 list + 1 fork + 1 latest of the fork = 82."""
LABEL = "agent-step"
"""The label every snapshot is saved with (the same for every contender)."""
FORK_EDITS: dict[str, JSON] = {"status": "forked"}

_FILLER = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud "
    "exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure "
    "dolor in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. "
)
_STATUSES = ("planning", "acting", "observing")


def _text(head: str, size: int) -> str:
    text = (head + " " + _FILLER * (1 + size // len(_FILLER)))[:size]
    assert len(text) == size
    return text


# Built once, so the harness adds as little CPU as possible to what is measured.
_MESSAGES: list[dict[str, JSON]] = [
    {
        "id": f"m{step}",
        "role": "user" if step % 2 == 0 else "ai",
        "content": _text(f"message {step}:", 260),
    }
    for step in range(STEPS)
]
_NOTES = [_text(f"scratch note {step}:", 180) for step in range(STEPS)]


def state(step: int, messages: list[JSON]) -> dict[str, JSON]:
    """The five channels of a run after ``step``."""
    return {
        "messages": messages,
        "step": step,
        "status": _STATUSES[step % len(_STATUSES)],
        "scratch": {"note": _NOTES[step], "k": step},
        "flags": {"interrupt": False, "retries": 0},
    }


class WorkloadError(AssertionError):
    """A contender returned something the workload's checks refuse."""


Row = tuple[int, int, str]
"""What list reports per snapshot: (super-step, timestamp ms, label)."""


class Contender(Protocol):
    """The five operations of the workload, over plain arguments."""

    async def save(
        self, workflow_id: str, run_id: str, step: int, values: dict[str, JSON], label: str
    ) -> None: ...

    async def latest(self, workflow_id: str, run_id: str) -> tuple[int, dict[str, JSON]] | None: ...

    async def list(self, workflow_id: str, run_id: str) -> list[Row]: ...

    async def fork(
        self, workflow_id: str, run_id: str, step: int, edits: dict[str, JSON]
    ) -> str: ...


async def agent_run(contender: Contender, workflow_id: str, run_id: str) -> None:
    """One run of the workload: 82 operations, every read checked."""
    messages: list[JSON]
    for step in range(STEPS):
        if step == 0:
            messages = [_MESSAGES[0]]
        else:
            # A horizontally scaled worker resumes from the store, not from memory.
            found = await contender.latest(workflow_id, run_id)
            if found is None or found[0] != step - 1:
                raise WorkloadError(f"{run_id}: latest before step {step} is {found and found[0]}")
            values = found[1]
            previous = values.get("messages")
            if values.get("step") != step - 1 or not isinstance(previous, list):
                raise WorkloadError(f"{run_id}: latest before step {step} has the wrong state")
            if len(previous) != step:
                raise WorkloadError(f"{run_id}: {len(previous)} messages before step {step}")
            messages = [*previous, _MESSAGES[step]]
        await contender.save(workflow_id, run_id, step, state(step, messages), LABEL)

    rows = await contender.list(workflow_id, run_id)
    if [row[0] for row in rows] != list(range(STEPS)) or any(row[2] != LABEL for row in rows):
        raise WorkloadError(f"{run_id}: list returned {[row[0] for row in rows]}")

    fork_id = await contender.fork(workflow_id, run_id, FORK_AT, FORK_EDITS)
    found = await contender.latest(workflow_id, fork_id)
    if found is None or found[0] != FORK_AT:
        raise WorkloadError(f"{fork_id}: latest of the fork is {found and found[0]}")
    values = found[1]
    forked_messages = values.get("messages")
    if (
        values.get("status") != "forked"
        or values.get("step") != FORK_AT
        or not isinstance(forked_messages, list)
        or len(forked_messages) != FORK_AT + 1
    ):
        raise WorkloadError(f"{fork_id}: the fork does not hold step {FORK_AT} with the edit")


# --------------------------------------------------------------------------------------------
# Contenders
# --------------------------------------------------------------------------------------------


class StoreContender:
    """The workload over a :class:`Checkpointer` (RedisCheckpointer or InMemoryCheckpointer)."""

    def __init__(self, store: Checkpointer) -> None:
        self.store = store

    async def save(
        self, workflow_id: str, run_id: str, step: int, values: dict[str, JSON], label: str
    ) -> None:
        await self.store.save(Snapshot(CheckpointKey(workflow_id, run_id, step), values, label))

    async def latest(self, workflow_id: str, run_id: str) -> tuple[int, dict[str, JSON]] | None:
        snapshot = await self.store.latest(workflow_id, run_id)
        return None if snapshot is None else (snapshot.key.super_step, snapshot.values)

    async def list(self, workflow_id: str, run_id: str) -> list[Row]:
        metas = await self.store.list(workflow_id, run_id)
        return [(m.super_step, m.timestamp_ms, m.label) for m in metas]

    async def fork(self, workflow_id: str, run_id: str, step: int, edits: dict[str, JSON]) -> str:
        return await self.store.fork(CheckpointKey(workflow_id, run_id, step), edits)


_LABEL_FIELD = b":label"
_TS_FIELD = b":ts"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class FloorContender:
    """The fewest redis-py calls for the same work and the same data in Redis.

    Keys: ``<prefix>:<workflow>:<run>:steps`` (a sorted set of steps, member = score = step) and
    ``<prefix>:<workflow>:<run>:snap:<step>`` (a hash: one field per channel holding its orjson
    bytes, plus ``:label`` and ``:ts``), the store's hash layout. Ids are used unescaped and
    values are not validated: this is the floor, not a store.
    """

    def __init__(self, client: Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def _run_prefix(self, workflow_id: str, run_id: str) -> str:
        return f"{self.prefix}:{workflow_id}:{run_id}"

    async def save(
        self, workflow_id: str, run_id: str, step: int, values: dict[str, JSON], label: str
    ) -> None:
        run = self._run_prefix(workflow_id, run_id)
        flat: list[str | bytes | int] = []
        for name, value in values.items():
            flat += (name, orjson.dumps(value))
        flat += (_LABEL_FIELD, label, _TS_FIELD, _now_ms())
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(f"{run}:snap:{step}", items=flat)
            pipe.zadd(f"{run}:steps", {str(step): step})
            await pipe.execute()

    async def latest(self, workflow_id: str, run_id: str) -> tuple[int, dict[str, JSON]] | None:
        run = self._run_prefix(workflow_id, run_id)
        top = cast(list[bytes], await self.client.zrevrange(f"{run}:steps", 0, 0))
        if not top:
            return None
        step = int(top[0])
        stored = cast(dict[bytes, bytes], await self.client.hgetall(f"{run}:snap:{step}"))
        values: dict[str, JSON] = {
            name.decode(): orjson.loads(data)
            for name, data in stored.items()
            if not name.startswith(b":")
        }
        return step, values

    async def list(self, workflow_id: str, run_id: str) -> list[Row]:
        run = self._run_prefix(workflow_id, run_id)
        steps = cast(list[bytes], await self.client.zrange(f"{run}:steps", 0, -1))
        snap = f"{run}:snap:".encode()
        async with self.client.pipeline(transaction=False) as pipe:
            for step in steps:
                pipe.hmget(snap + step, [_TS_FIELD, _LABEL_FIELD])
            metas = cast(list[list[bytes]], await pipe.execute())
        return [
            (int(step), int(ts), label.decode())
            for step, (ts, label) in zip(steps, metas, strict=True)
        ]

    async def fork(self, workflow_id: str, run_id: str, step: int, edits: dict[str, JSON]) -> str:
        source = cast(
            dict[bytes, bytes],
            await self.client.hgetall(f"{self._run_prefix(workflow_id, run_id)}:snap:{step}"),
        )
        if not source:
            raise WorkloadError(f"{run_id}: nothing to fork at step {step}")
        new_run_id = f"{run_id}~fork-{uuid.uuid4().hex}"
        fields = dict(source)
        for name, value in edits.items():
            fields[name.encode()] = orjson.dumps(value)
        fields[_LABEL_FIELD] = f"fork-of:{run_id}".encode()
        fields[_TS_FIELD] = str(_now_ms()).encode()
        flat = [part for pair in fields.items() for part in pair]
        run = self._run_prefix(workflow_id, new_run_id)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(f"{run}:snap:{step}", items=flat)
            pipe.zadd(f"{run}:steps", {str(step): step})
            await pipe.execute()
        return new_run_id


# --------------------------------------------------------------------------------------------
# Counting what goes over the wire
# --------------------------------------------------------------------------------------------


@dataclass
class WireCounter:
    """Client-side counts of one connection pool."""

    round_trips: int = 0
    """Writes of a request (one command, or one whole pipeline) followed by its replies."""
    commands: int = 0
    """Commands packed (a pipeline of n commands counts n)."""


class CountingConnection(Connection):
    """A redis-py connection that counts round trips and commands into a :class:`WireCounter`.

    redis-py sends every command, and every pipeline as a whole, with one
    ``send_packed_command`` and packs every command with ``pack_command``.
    """

    def __init__(self, *, wire_counter: WireCounter, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wire_counter = wire_counter

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        self.wire_counter.round_trips += 1
        await super().send_packed_command(command, check_health)

    def pack_command(self, *args: Any) -> list[bytes]:
        self.wire_counter.commands += 1
        return super().pack_command(*args)


def make_client(url: str, max_connections: int) -> tuple[Redis, WireCounter]:
    counter = WireCounter()
    pool = ConnectionPool.from_url(
        url,
        connection_class=CountingConnection,
        wire_counter=counter,
        max_connections=max_connections,
        decode_responses=False,
    )
    return Redis(connection_pool=pool), counter


# --------------------------------------------------------------------------------------------
# Lanes: a contender with its client, counters, and per-round setup and cleanup
# --------------------------------------------------------------------------------------------


STORE = "RedisCheckpointer"
FLOOR = "floor"
MEMORY = "InMemoryCheckpointer"
CONTENDERS = (STORE, FLOOR, MEMORY)


@dataclass
class Lane:
    name: str
    prefix: str | None
    client: Redis | None
    counter: WireCounter | None
    make: Callable[[], Contender]

    async def cleanup(self, admin: Redis) -> int:
        """Delete every key under this lane's prefix (never a FLUSH); the number deleted."""
        if self.prefix is None:
            return 0
        deleted = 0
        batch: list[bytes] = []
        async for key in admin.scan_iter(match=f"{self.prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await admin.unlink(*batch)
                batch = []
        if batch:
            deleted += await admin.unlink(*batch)
        async for key in admin.scan_iter(match=f"{self.prefix}:*", count=1000):
            raise RuntimeError(f"{self.name}: key {key!r} survived the cleanup")
        return deleted


def make_lanes(url: str, max_connections: int) -> list[Lane]:
    token = uuid.uuid4().hex[:12]
    lanes: list[Lane] = []

    store_prefix = f"agentloop-{token}-store"
    store_client, store_counter = make_client(url, max_connections)
    store = RedisCheckpointer(store_client, prefix=store_prefix)
    lanes.append(
        Lane(STORE, store_prefix, store_client, store_counter, lambda: StoreContender(store))
    )

    floor_prefix = f"agentloop-{token}-floor"
    floor_client, floor_counter = make_client(url, max_connections)
    floor = FloorContender(floor_client, floor_prefix)
    lanes.append(Lane(FLOOR, floor_prefix, floor_client, floor_counter, lambda: floor))

    # A fresh in-memory store per round: dropping it is the cleanup.
    lanes.append(Lane(MEMORY, None, None, None, lambda: StoreContender(InMemoryCheckpointer())))
    return lanes


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


@dataclass
class ServerSample:
    commands: Counter[str]
    cpu_s: float


async def server_sample(admin: Redis) -> ServerSample:
    """Per-command call counts (commands run by scripts included) and main-thread CPU."""
    stats = cast(dict[str, dict[str, Any]], await admin.info("commandstats"))
    cpu = await admin.info("cpu")
    commands: Counter[str] = Counter()
    for name, entry in stats.items():
        command = name.removeprefix("cmdstat_")
        if command not in ("info",):
            commands[command] = int(entry["calls"])
    user = cpu.get("used_cpu_user_main_thread", cpu["used_cpu_user"])
    system = cpu.get("used_cpu_sys_main_thread", cpu["used_cpu_sys"])
    return ServerSample(commands, float(user) + float(system))


@dataclass
class Measurement:
    """One contender in one round."""

    round: int
    seconds: float
    ops_per_s: float
    client_cpu_us_per_op: float
    round_trips_per_op: float | None = None
    commands_per_op: float | None = None
    server_calls_per_op: float | None = None
    server_cpu_us_per_op: float | None = None
    server_commands: dict[str, int] = field(default_factory=dict)


async def drive(
    contender: Contender, workflow_id: str, runs: int, concurrency: int
) -> tuple[float, float]:
    """Run ``runs`` agent runs, ``concurrency`` in flight; (wall seconds, process CPU seconds)."""
    run_ids = iter([f"run-{uuid.uuid4()}" for _ in range(runs)])

    async def worker() -> None:
        for run_id in run_ids:
            await agent_run(contender, workflow_id, run_id)

    gc.collect()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, runs)):
            group.create_task(worker())
    seconds = time.perf_counter() - t0
    return seconds, time.process_time() - cpu0


async def measure(
    lane: Lane, admin: Redis, round_no: int, runs: int, concurrency: int
) -> Measurement:
    contender = lane.make()
    ops = runs * OPS_PER_RUN
    wire0 = asdict(lane.counter) if lane.counter else None
    server0 = await server_sample(admin) if lane.client else None
    seconds, cpu = await drive(contender, f"wf-{lane.name}-r{round_no}", runs, concurrency)
    result = Measurement(round_no, seconds, ops / seconds, cpu / ops * 1e6)
    if lane.counter is not None and wire0 is not None:
        result.round_trips_per_op = (lane.counter.round_trips - wire0["round_trips"]) / ops
        result.commands_per_op = (lane.counter.commands - wire0["commands"]) / ops
    if server0 is not None:
        server1 = await server_sample(admin)
        delta = server1.commands - server0.commands
        result.server_commands = dict(sorted(delta.items()))
        result.server_calls_per_op = delta.total() / ops
        result.server_cpu_us_per_op = (server1.cpu_s - server0.cpu_s) / ops * 1e6
    return result


class ProbedContender:
    """Wraps a contender to count, per operation kind, round trips and server-side calls.

    Used on one run, sequentially, so the deltas are exact (on a server nobody else uses).
    """

    def __init__(self, inner: Contender, counter: WireCounter, admin: Redis) -> None:
        self.inner = inner
        self.counter = counter
        self.admin = admin
        self.round_trips: Counter[str] = Counter()
        self.commands: Counter[str] = Counter()
        self.server_calls: Counter[str] = Counter()
        self.server_detail: dict[str, Counter[str]] = {}
        self.calls: Counter[str] = Counter()

    async def _probe(self, op: str, call: Callable[[], Awaitable[Any]]) -> Any:
        before = await server_sample(self.admin)
        trips, commands = self.counter.round_trips, self.counter.commands
        result = await call()
        self.round_trips[op] += self.counter.round_trips - trips
        self.commands[op] += self.counter.commands - commands
        delta = (await server_sample(self.admin)).commands - before.commands
        self.server_calls[op] += delta.total()
        self.server_detail.setdefault(op, Counter()).update(delta)
        self.calls[op] += 1
        return result

    async def save(
        self, workflow_id: str, run_id: str, step: int, values: dict[str, JSON], label: str
    ) -> None:
        await self._probe("save", lambda: self.inner.save(workflow_id, run_id, step, values, label))

    async def latest(self, workflow_id: str, run_id: str) -> tuple[int, dict[str, JSON]] | None:
        return cast(
            tuple[int, dict[str, JSON]] | None,
            await self._probe("latest", lambda: self.inner.latest(workflow_id, run_id)),
        )

    async def list(self, workflow_id: str, run_id: str) -> list[Row]:
        return cast(
            list[Row], await self._probe("list", lambda: self.inner.list(workflow_id, run_id))
        )

    async def fork(self, workflow_id: str, run_id: str, step: int, edits: dict[str, JSON]) -> str:
        return cast(
            str,
            await self._probe("fork", lambda: self.inner.fork(workflow_id, run_id, step, edits)),
        )

    def report(self) -> dict[str, dict[str, Any]]:
        return {
            op: {
                "round_trips": self.round_trips[op] / n,
                "client_commands": self.commands[op] / n,
                "server_calls": self.server_calls[op] / n,
                "server_commands": {
                    name: count / n for name, count in sorted(self.server_detail[op].items())
                },
            }
            for op, n in self.calls.items()
        }


async def probe(lane: Lane, admin: Redis) -> dict[str, dict[str, Any]]:
    """Round trips and server calls per operation kind, from one sequential run."""
    assert lane.counter is not None
    probed = ProbedContender(lane.make(), lane.counter, admin)
    await agent_run(probed, f"wf-{lane.name}-probe", f"run-{uuid.uuid4()}")
    await lane.cleanup(admin)
    return probed.report()


# --------------------------------------------------------------------------------------------
# Profiling RedisCheckpointer alone
# --------------------------------------------------------------------------------------------


def _area(filename: str, function: str) -> str:
    if filename == "~":
        if "orjson" in function:
            return "orjson (C)"
        if "hiredis" in function or "Reader" in function:
            return "hiredis (C)"
        return "other built-ins"
    path = filename.replace("\\", "/")
    if "/atomr_redis_state/" in path:
        return "atomr_redis_state/" + path.rsplit("/", 1)[-1]
    if "/redis/" in path:
        return "redis-py"
    if "/asyncio/" in path or path.endswith(("selectors.py", "socket.py")):
        return "asyncio + sockets"
    if path.endswith("agent_loop.py"):
        return "benchmark harness"
    return "other Python"


def _shares(times: dict[str, float], total: float) -> dict[str, float]:
    return {k: v / total for k, v in sorted(times.items(), key=lambda kv: kv[1], reverse=True)}


def summarise_profile(profile: cProfile.Profile, top: int) -> dict[str, Any]:
    """Self time by area (built-ins charged to their caller's area too) and the top functions."""
    stats = pstats.Stats(profile)
    raw = cast(
        dict[tuple[str, int, str], tuple[int, int, float, float, dict[Any, Any]]],
        cast(Any, stats).stats,
    )
    total = sum(entry[2] for entry in raw.values()) or 1.0
    own: defaultdict[str, float] = defaultdict(float)
    charged: defaultdict[str, float] = defaultdict(float)
    for (filename, _line, function), (_cc, _nc, tottime, _ct, callers) in raw.items():
        area = _area(filename, function)
        own[area] += tottime
        if filename == "~" and callers:
            for (caller_file, _l, caller_fn), edge in callers.items():
                charged[_area(caller_file, caller_fn)] += edge[2]
        else:
            charged[area] += tottime

    def label(key: tuple[str, int, str]) -> str:
        filename, line, function = key
        if filename == "~":
            return function
        return f"{filename.rsplit('/', 2)[-2]}/{filename.rsplit('/', 1)[-1]}:{line}({function})"

    ours = sorted(
        (item for item in raw.items() if "/atomr_redis_state/" in item[0][0]),
        key=lambda item: item[1][3],
        reverse=True,
    )
    overall = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)
    return {
        "total_self_s": total,
        "self_time_by_area": _shares(own, total),
        "self_time_incl_builtins_by_caller_area": _shares(charged, total),
        "atomr_functions_by_cumtime": [
            {"function": label(k), "calls": v[1], "tottime_s": v[2], "cumtime_s": v[3]}
            for k, v in ours[:top]
        ],
        "top_functions_by_tottime": [
            {"function": label(k), "calls": v[1], "tottime_s": v[2], "cumtime_s": v[3]}
            for k, v in overall[:top]
        ],
    }


def micro_costs() -> dict[str, float]:
    """Client-side costs without I/O, in µs per call, for a mid-run state (step 20)."""
    messages: list[JSON] = list(_MESSAGES[: FORK_AT + 1])
    values = state(FORK_AT, messages)
    fields = encode_channels(values) + encode_meta(LABEL, _now_ms())
    stored = dict(zip(fields[::2], fields[1::2], strict=True))
    layout = KeyLayout("bench")
    layout.run("wf", "run-x")
    n = 2000

    def per_call(stmt: Callable[[], object]) -> float:
        return min(timeit.repeat(stmt, number=n, repeat=5)) / n * 1e6

    return {
        "store encode_channels + encode_meta (strict: dumps + loads + compare)": per_call(
            lambda: encode_channels(values) + encode_meta(LABEL, 0)
        ),
        "floor encode (orjson.dumps per channel)": per_call(
            lambda: [orjson.dumps(v) for v in values.values()]
        ),
        "store decode_fields": per_call(lambda: decode_fields(stored.items())),
        "floor decode (orjson.loads per field)": per_call(
            lambda: {k: orjson.loads(v) for k, v in stored.items() if not k.startswith(b":")}
        ),
        "Snapshot(CheckpointKey(...)) construction": per_call(
            lambda: Snapshot(CheckpointKey("wf", "run-x", 20), values, LABEL)
        ),
        "KeyLayout.run (lru_cache hit)": per_call(lambda: layout.run("wf", "run-x")),
    }


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


async def wire_details(client: Redis) -> tuple[str, int]:
    """The reply parser class of a pooled connection (hiredis or not) and its RESP version."""
    pool: Any = client.connection_pool
    connection = await pool.get_connection()
    try:
        return type(connection._parser).__name__, int(connection.protocol)
    finally:
        await pool.release(connection)


@contextlib.asynccontextmanager
async def redis_target(args: argparse.Namespace) -> AsyncIterator[tuple[str, bool]]:
    """The server URL, and whether this process started (and so owns) that server."""
    if args.redis_url:
        if urlsplit(args.redis_url).scheme != "redis":
            raise SystemExit("--redis-url must be a redis:// URL (TCP, no TLS)")
        yield args.redis_url, False
        return
    binary = shutil.which(args.redis_server)
    if binary is None:
        raise SystemExit(f"{args.redis_server} not found: install Redis >= 7 or use --redis-url")
    directory = Path(tempfile.mkdtemp(prefix="agentloop-redis-"))
    server = start_server(directory, binary)
    try:
        yield server.url, True
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def log(args: argparse.Namespace, message: str) -> None:
    print(message, file=sys.stderr if args.json else sys.stdout, flush=True)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    async with redis_target(args) as (url, own_server):
        admin = Redis.from_url(url, decode_responses=False)
        lanes = make_lanes(url, max_connections=args.concurrency + 16)
        try:
            return await benchmark(args, url, own_server, admin, lanes)
        finally:
            for lane in lanes:
                with contextlib.suppress(Exception):
                    await lane.cleanup(admin)
                if lane.client is not None:
                    await lane.client.aclose()
            await admin.aclose()


async def benchmark(
    args: argparse.Namespace, url: str, own_server: bool, admin: Redis, lanes: list[Lane]
) -> dict[str, Any]:
    server_info = await admin.info("server")
    store_lane = lanes[0]
    assert store_lane.client is not None
    parser, protocol = await wire_details(store_lane.client)
    environment = {
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "orjson": orjson.__version__,
        "hiredis_installed": HIREDIS_AVAILABLE,
        "hiredis_version": _version("hiredis"),
        "parser": parser,
        "resp": protocol,
        "redis_server": str(server_info.get("redis_version")),
        "own_server": own_server,
        "url": url,
        "clients": "one redis.asyncio.Redis (own ConnectionPool, "
        f"max_connections={args.concurrency + 16}) per Redis contender",
        "cpus": os.cpu_count(),
        "checkout": _checkout(),
    }
    log(args, f"redis-server {environment['redis_server']} at {url} (own server: {own_server})")
    log(args, f"checkout {environment['checkout']}, {environment['clients']}")
    log(
        args,
        f"redis-py {redis.__version__}, hiredis in use: {HIREDIS_AVAILABLE} "
        f"(hiredis {environment['hiredis_version']}, parser {parser}, RESP{protocol})",
    )
    log(
        args,
        f"{args.runs} runs x {OPS_PER_RUN} ops, {args.concurrency} in flight, "
        f"{args.rounds} rounds, warm-up {args.warmup} runs",
    )
    if not own_server:
        log(args, "note: server-side counts include whatever else that server runs")

    for lane in lanes:
        if args.warmup:
            await drive(lane.make(), f"wf-{lane.name}-warmup", args.warmup, args.concurrency)
            await lane.cleanup(admin)

    results: dict[str, list[Measurement]] = {lane.name: [] for lane in lanes}
    for round_no in range(1, args.rounds + 1):
        shift = (round_no - 1) % len(lanes)
        order = lanes[shift:] + lanes[:shift]
        parts = []
        for lane in order:
            m = await measure(lane, admin, round_no, args.runs, args.concurrency)
            deleted = await lane.cleanup(admin)
            results[lane.name].append(m)
            parts.append(f"{lane.name} {m.ops_per_s:,.0f} ops/s (deleted {deleted} keys)")
        log(args, f"round {round_no}: " + "; ".join(parts))

    floor_by_round = {m.round: m.ops_per_s for m in results[FLOOR]}
    summary: dict[str, Any] = {}
    for lane in lanes:
        ms = results[lane.name]
        median = _median([m.ops_per_s for m in ms])
        summary[lane.name] = {
            "ops_per_s_by_round": [m.ops_per_s for m in ms],
            "median_ops_per_s": median,
            "ratio_to_floor": median / _median(list(floor_by_round.values())),
            "median_per_round_ratio_to_floor": _median(
                [m.ops_per_s / floor_by_round[m.round] for m in ms]
            ),
            "client_cpu_us_per_op": _median([m.client_cpu_us_per_op for m in ms]),
            "round_trips_per_op": _optional_median([m.round_trips_per_op for m in ms]),
            "client_commands_per_op": _optional_median([m.commands_per_op for m in ms]),
            "server_calls_per_op": _optional_median([m.server_calls_per_op for m in ms]),
            "server_cpu_us_per_op": _optional_median([m.server_cpu_us_per_op for m in ms]),
            "server_commands_last_round": ms[-1].server_commands,
            "rounds": [asdict(m) for m in ms],
        }

    probes = {lane.name: await probe(lane, admin) for lane in lanes if lane.counter}

    profile: dict[str, Any] | None = None
    if args.profile:
        profiled = next(lane for lane in lanes if lane.name == args.profile)
        log(args, f"profiling {profiled.name} alone: {args.runs} runs under cProfile ...")
        profiler = cProfile.Profile()
        profiler.enable()
        await drive(profiled.make(), f"wf-{profiled.name}-profile", args.runs, args.concurrency)
        profiler.disable()
        await profiled.cleanup(admin)
        profile = summarise_profile(profiler, args.profile_top)
        profile["contender"] = profiled.name
        profile["micro_costs_us"] = micro_costs()
        if args.profile_out:
            profiler.dump_stats(args.profile_out)

    return {
        "workload": {
            "runs": args.runs,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "warmup_runs": args.warmup,
            "steps_per_run": STEPS,
            "ops_per_run": OPS_PER_RUN,
        },
        "environment": environment,
        "contenders": summary,
        "per_operation": probes,
        "profile": profile,
    }


def _optional_median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return _median(present) if present else None


def _checkout() -> str | None:
    """The git commit of the checkout, with ``+dirty`` when the library has local changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "atomr_redis_state", "lua"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def print_report(result: dict[str, Any]) -> None:
    rounds = result["workload"]["rounds"]
    contenders = result["contenders"]
    header = (
        f"{'contender':<21}"
        + "".join(f"{'round ' + str(i + 1):>10}" for i in range(rounds))
        + f"{'median':>10}{'/floor':>8}{'rt/op':>7}{'cmd/op':>8}{'srv/op':>8}"
        f"{'cli µs/op':>10}{'srv µs/op':>10}"
    )
    print()
    print("ops/s (82 operations per run); /floor = median ops/s over the floor's median ops/s")
    print("rt/op = client round trips per operation, cmd/op = commands sent per operation,")
    print("srv/op = commands the server ran per operation (those inside Lua scripts included),")
    print("cli/srv µs/op = client process CPU / redis-server main-thread CPU per operation")
    print(header)
    print("-" * len(header))
    for name, c in contenders.items():
        print(
            f"{name:<21}"
            + "".join(f"{v:>10,.0f}" for v in c["ops_per_s_by_round"])
            + f"{c['median_ops_per_s']:>10,.0f}{c['ratio_to_floor']:>8.3f}"
            + f"{_fmt(c['round_trips_per_op'], 3):>7}{_fmt(c['client_commands_per_op'], 3):>8}"
            + f"{_fmt(c['server_calls_per_op'], 2):>8}"
            + f"{_fmt(c['client_cpu_us_per_op'], 1):>10}{_fmt(c['server_cpu_us_per_op'], 1):>10}"
        )
    print()
    for name, c in contenders.items():
        if name != FLOOR:
            print(
                f"{name} / floor: {c['ratio_to_floor']:.3f} (ratio of medians), "
                f"{c['median_per_round_ratio_to_floor']:.3f} (median of per-round ratios)"
            )

    print()
    print("per operation, from one sequential probe run (round trips / commands sent /")
    print("commands the server ran, with what it ran):")
    for name, ops in result["per_operation"].items():
        print(f"  {name}")
        for op, p in ops.items():
            detail = ", ".join(f"{k} {v:g}" for k, v in p["server_commands"].items())
            print(
                f"    {op:<7} rt {p['round_trips']:g}  cmds {p['client_commands']:g}  "
                f"server {p['server_calls']:g}: {detail}"
            )

    profile = result["profile"]
    if profile:
        print()
        print(
            f"profile of {profile['contender']} alone "
            f"(cProfile; self time {profile['total_self_s']:.2f} s):"
        )
        print("  self time by area (built-ins charged to the area that called them):")
        for area, share in profile["self_time_incl_builtins_by_caller_area"].items():
            if share >= 0.005:
                print(f"    {share:6.1%}  {area}")
        if profile["atomr_functions_by_cumtime"]:
            print("  atomr_redis_state functions by cumulative time:")
        for f in profile["atomr_functions_by_cumtime"]:
            print(
                f"    {f['cumtime_s']:7.3f} s cum {f['tottime_s']:7.3f} s self "
                f"{f['calls']:>8} calls  {f['function']}"
            )
        print("  top functions by self time:")
        for f in profile["top_functions_by_tottime"]:
            print(f"    {f['tottime_s']:7.3f} s {f['calls']:>8} calls  {f['function']}")
        print("  client-side micro costs without I/O, step-20 state (µs per call):")
        for what, us in profile["micro_costs_us"].items():
            print(f"    {us:8.2f}  {what}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=200, help="runs per contender per round")
    parser.add_argument("--concurrency", type=int, default=32, help="runs in flight")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (contenders alternate)")
    parser.add_argument("--warmup", type=int, default=32, help="untimed runs per contender first")
    parser.add_argument("--redis-url", help="use this redis:// server instead of starting one")
    parser.add_argument("--redis-server", default="redis-server", help="redis-server binary")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument(
        "--profile",
        nargs="?",
        const=STORE,
        choices=CONTENDERS,
        help=f"then profile one contender alone under cProfile (default {STORE})",
    )
    parser.add_argument("--profile-top", type=int, default=15, help="functions to list")
    parser.add_argument("--profile-out", help="also write the cProfile stats to this file")
    args = parser.parse_args(argv)
    for name in ("runs", "concurrency", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    result = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)


if __name__ == "__main__":
    main()
