"""The agent-loop workload, which every checkpoint-store benchmark of this project measures.

It is defined here, once, so that figures compare across changes and against other stores.

A **run** is an agent loop of 40 super-steps (0..39). Before every step after the first, a worker
reads the run's **latest** snapshot (a horizontally scaled worker resumes wherever the run was
left, so it cannot rely on its memory), checks that it is the previous step and builds the next
state from it; then it **saves** the step. The state has five channels:

============  ===========================================================================
``messages``  a list growing by one message per step:
              ``{"id": "m<step>", "role": "user" | "ai", "content": <260 characters>}``
``step``      the step number
``status``    a short string (``planning``, ``acting``, ``observing`` in turn)
``scratch``   ``{"note": <180 characters>, "k": <step>}``
``flags``     ``{"interrupt": false, "retries": 0}``
============  ===========================================================================

After the loop the worker **lists** the run (the 40 steps, each with its label), **forks** it at
step 20 with the edit ``status = "forked"``, and reads the fork's **latest** (step 20, with the
edit and 21 messages). Per run that is 39 latest + 40 saves + 1 list + 1 fork + 1 latest = 82
operations, every reply checked (:func:`agent_run`). With ``keep_last=k`` step 20 is trimmed
before the loop ends, so the fork and its ``latest`` come right after step 20 is saved, and
``list`` expects the last k steps: still 82 operations.

A benchmark drives many runs at once (200 runs, 32 in flight, one asyncio event loop, one
redis-server on loopback) and reports operations per second. Always measure side by side, in one
process against one server, alternating the contenders, and report ratios: the machines are
shared and noisy, so an absolute figure from one run means little. Beside the project's store,
the contenders worth having are the *floor* (the fewest calls a hand-written redis-py client can
make for the same work, with the same data in Redis) and the in-memory checkpointer (an upper
bound for everything that is not Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import orjson
import redis
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection
from redis.utils import HIREDIS_AVAILABLE

from atomr_redis_state import JSON, Checkpointer, CheckpointKey, Snapshot, new_run_id

STEPS = 40  # super-steps per run (0..39)
FORK_AT = 20  # the step every run is forked at
OPS_PER_RUN = (STEPS - 1) + STEPS + 1 + 1 + 1  # latest, save, list, fork, latest of the fork: 82
LABEL = "agent-step"
WORKFLOW = "wf-agent-loop"  # the workflow of every run (their run ids are fresh)

_FILLER = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor. "


def _text(head: str, size: int) -> str:
    return (head + " " + _FILLER * (1 + size // len(_FILLER)))[:size]


# Built once, so that the harness adds as little CPU as it can to what is measured.
MESSAGES: list[JSON] = [
    {"id": f"m{s}", "role": "ai" if s % 2 else "user", "content": _text(f"message {s}:", 260)}
    for s in range(STEPS)
]
_NOTES = [_text(f"scratch note {step}:", 180) for step in range(STEPS)]


def state(step: int, messages: list[JSON]) -> dict[str, JSON]:
    """The five channels of a run after ``step``."""
    return {
        "messages": messages,
        "step": step,
        "status": ("planning", "acting", "observing")[step % 3],
        "scratch": {"note": _NOTES[step], "k": step},
        "flags": {"interrupt": False, "retries": 0},
    }


class WorkloadError(AssertionError):
    """A contender returned something the workload's checks refuse."""


Row = tuple[int, int, str]  # what ``list`` reports per snapshot: (super-step, timestamp ms, label)


class Contender(Protocol):
    """The operations of the workload, on the runs of one workflow: what every contender offers."""

    async def save(self, run_id: str, step: int, values: dict[str, JSON]) -> None: ...
    async def latest(self, run_id: str) -> tuple[int, dict[str, JSON]] | None: ...
    async def list(self, run_id: str) -> list[Row]: ...
    async def fork(self, run_id: str, step: int, edits: dict[str, JSON]) -> str: ...


def _checked(
    found: tuple[int, dict[str, JSON]] | None, step: int, run_id: str, status: str | None = None
) -> list[JSON]:
    """The messages of a ``latest`` reply, checked to be step ``step`` (with ``status``)."""
    values = found[1] if found and found[0] == step else {}
    messages = values.get("messages")
    wanted = values.get("step") == step and (status is None or values.get("status") == status)
    if not wanted or not isinstance(messages, list) or len(messages) != step + 1:
        raise WorkloadError(f"{run_id}: latest is {found and found[0]}, not step {step} {status}")
    return messages


async def agent_run(contender: Contender, run_id: str, keep_last: int | None = None) -> str:
    """One run of the workload (82 operations, every reply checked); the fork's run id."""
    messages: list[JSON] = []
    fork_id = ""
    for step in range(STEPS):
        if step:  # a worker resumes from the store, not from its memory
            messages = _checked(await contender.latest(run_id), step - 1, run_id)
        await contender.save(run_id, step, state(step, [*messages, MESSAGES[step]]))
        if keep_last is not None and step == FORK_AT:
            fork_id = await _fork(contender, run_id)
    rows = await contender.list(run_id)
    first = 0 if keep_last is None else max(0, STEPS - keep_last)
    if [r[0] for r in rows] != list(range(first, STEPS)) or any(r[2] != LABEL for r in rows):
        raise WorkloadError(f"{run_id}: list returned {rows}")
    return fork_id or await _fork(contender, run_id)


async def _fork(contender: Contender, run_id: str) -> str:
    """Fork at step 20 with the edit, and check the fork's latest (2 operations)."""
    fork_id = await contender.fork(run_id, FORK_AT, {"status": "forked"})
    _checked(await contender.latest(fork_id), FORK_AT, fork_id, "forked")
    return fork_id


class StoreContender:
    """The workload over a :class:`Checkpointer` (RedisCheckpointer or InMemoryCheckpointer)."""

    def __init__(self, store: Checkpointer) -> None:
        self.store = store

    async def save(self, run_id: str, step: int, values: dict[str, JSON]) -> None:
        await self.store.save(Snapshot(CheckpointKey(WORKFLOW, run_id, step), values, LABEL))

    async def latest(self, run_id: str) -> tuple[int, dict[str, JSON]] | None:
        snapshot = await self.store.latest(WORKFLOW, run_id)
        return None if snapshot is None else (snapshot.key.super_step, snapshot.values)

    async def list(self, run_id: str) -> list[Row]:
        metas = await self.store.list(WORKFLOW, run_id)
        return [(m.super_step, m.timestamp_ms, m.label) for m in metas]

    async def fork(self, run_id: str, step: int, edits: dict[str, JSON]) -> str:
        return await self.store.fork(CheckpointKey(WORKFLOW, run_id, step), edits)


# The harness the benchmarks share.


class CountingConnection(Connection):
    """Counts into ``wire`` the ``round_trips`` (writes: redis-py writes a command, or a whole
    pipeline, and the store's automatic pipelining a whole batch, with one
    ``send_packed_command``) and the ``commands`` they carry (RESP arrays)."""

    def __init__(self, *, wire: Counter[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.wire = wire

    async def send_packed_command(self, command: Any, *args: Any, **kwargs: Any) -> None:
        self.wire["round_trips"] += 1
        self.wire["commands"] += count_commands(command)
        await super().send_packed_command(command, *args, **kwargs)


def count_commands(packed: bytes | list[bytes]) -> int:
    """The RESP arrays (commands) in a write: each starts with ``*`` after a CRLF, or at the
    start of a chunk (the benchmark's values are JSON, which holds no raw CRLF)."""
    chunks = [packed] if isinstance(packed, bytes) else packed
    return sum(chunk.count(b"\r\n*") + chunk.startswith(b"*") for chunk in chunks)


def make_client(url: str, max_connections: int) -> tuple[Redis, Counter[str]]:
    """A client with a pool of its own (redis-py defaults otherwise: hiredis when installed)."""
    wire: Counter[str] = Counter()
    pool = ConnectionPool.from_url(
        url, connection_class=CountingConnection, wire=wire, max_connections=max_connections
    )
    return Redis(connection_pool=pool), wire


@dataclass
class Lane:
    """A contender (a fresh one per round, from ``make``), the prefix of its keys in Redis (None
    without Redis), the wire counts of its client (:func:`make_client`) and its ``keep_last``."""

    name: str
    make: Callable[[], Contender]
    prefix: str | None = None
    wire: Counter[str] = field(default_factory=Counter)
    keep_last: int | None = None


async def delete_prefix(admin: Redis, prefix: str | None) -> None:
    """Delete exactly the keys under ``prefix``, if any (SCAN MATCH + UNLINK, never a FLUSH)."""
    match = f"{prefix}:*"
    while prefix and (keys := [key async for key in admin.scan_iter(match=match, count=1000)]):
        await admin.unlink(*keys)


async def server_sample(admin: Redis) -> Counter[str]:
    """``calls <command>`` and ``usec <command>`` (INFO commandstats but INFO), ``cpu_us`` and
    ``main_cpu_us`` (INFO cpu: sys + user of the server process, of its main thread)."""
    sample: Counter[str] = Counter()
    for name, entry in cast(dict[str, dict[str, Any]], await admin.info("commandstats")).items():
        if name != "cmdstat_info":
            sample[f"calls {name[8:]}"], sample[f"usec {name[8:]}"] = entry["calls"], entry["usec"]
    cpu = await admin.info("cpu")
    for key, suffix in (("cpu_us", ""), ("main_cpu_us", "_main_thread")):
        if f"used_cpu_sys{suffix}" in cpu:
            used = float(cpu[f"used_cpu_sys{suffix}"]) + float(cpu[f"used_cpu_user{suffix}"])
            sample[key] = round(used * 1e6)
    return sample


async def drive(lane: Lane, runs: int, concurrency: int) -> tuple[float, float]:
    """``runs`` runs, ``concurrency`` in flight; (wall seconds, CPU seconds of this process)."""
    contender, run_ids = lane.make(), iter([new_run_id() for _ in range(runs)])

    async def worker() -> None:
        for run_id in run_ids:
            await agent_run(contender, run_id, lane.keep_last)

    gc.collect()
    cpu0, t0 = time.process_time(), time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(min(concurrency, runs)):
            group.create_task(worker())
    return time.perf_counter() - t0, time.process_time() - cpu0


async def rounds(
    admin: Redis, lanes: list[Lane], args: argparse.Namespace
) -> list[tuple[dict[str, Any], Counter[str]]]:
    """Untimed runs of every lane, then rounds of every lane in an order that rotates, each round
    followed by the deletion of the lane's keys. Per round and lane, its row (None where not
    measured, see benchmarks/README.md) and the deltas of the server's counters."""
    for lane in lanes:
        await drive(lane, args.warmup, args.concurrency)
        await delete_prefix(admin, lane.prefix)
    results = []
    ops = args.runs * OPS_PER_RUN
    for n in range(1, args.rounds + 1):
        for lane in lanes[(n - 1) % len(lanes) :] + lanes[: (n - 1) % len(lanes)]:
            sent, before = Counter(lane.wire), await server_sample(admin)
            seconds, cpu = await drive(lane, args.runs, args.concurrency)
            server, wire = await server_sample(admin) - before, lane.wire - sent
            await delete_prefix(admin, lane.prefix)
            on_redis = {
                "rt/op": wire["round_trips"] / ops,
                "cmd/op": wire["commands"] / ops,
                "srv/op": sum(v for k, v in server.items() if k.startswith("calls ")) / ops,
                "srv µs/op": server["main_cpu_us"] / ops,
            }
            row = {
                "contender": lane.name,
                "round": n,
                "ops/s": ops / seconds,
                "cli µs/op": cpu / ops * 1e6,
                **{k: v if lane.prefix else None for k, v in on_redis.items()},
            }
            log(f"round {n}: {lane.name} {row['ops/s']:,.0f} ops/s")
            results.append((row, server))
    return results


def median(values: Iterable[Any]) -> Any:
    """The median of the values that are not None (None if there is none)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def medians(rows: list[dict[str, Any]], by: str) -> list[dict[str, Any]]:
    """Per value of column ``by``, the median of each other column but ``round``."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row[by], []).append(row)
    return [
        {by: name, **{k: median(r[k] for r in group) for k in group[0] if k not in (by, "round")}}
        for name, group in groups.items()
    ]


def checkout() -> str:
    """The git commit of this checkout, ``-dirty`` when it has local changes."""
    git = ["git", "--no-optional-locks", "-C", str(Path(__file__).parent), "describe", "--always"]
    return subprocess.run([*git, "--dirty"], capture_output=True, text=True).stdout.strip()


async def environment(admin: Redis, client: Any) -> dict[str, Any]:
    """Versions, and the reply parser (hiredis or not) of a pooled connection of ``client``."""
    connection = await client.connection_pool.get_connection()
    parser, resp = type(connection._parser).__name__, connection.protocol
    await client.connection_pool.release(connection)
    server, memory = await admin.info("server"), await admin.info("memory")
    env = {
        "redis-server": f"{server['redis_version']} ({memory['mem_allocator']})",
        "CPUs": os.cpu_count(),
        "Python": platform.python_version(),
        "redis-py": redis.__version__,
        "orjson": orjson.__version__,
        "HIREDIS_AVAILABLE": HIREDIS_AVAILABLE,
        "parser": f"{parser} RESP{resp}",
        "checkout": checkout(),
    }
    log(", ".join(f"{k} {v}" for k, v in env.items()))
    return env


def log(message: str) -> None:
    """Progress, on stderr (the report is on stdout)."""
    print(message, file=sys.stderr, flush=True)


def options(doc: str | None, runs: str) -> argparse.ArgumentParser:
    """A parser with the options the benchmarks share; ``runs`` helps ``--runs``."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    add = parser.add_argument
    add("--runs", type=int, default=200, help=runs)
    add("--concurrency", type=int, default=32, help="runs in flight (32)")
    add("--rounds", type=int, default=3, help="rounds; the contenders' order rotates (3)")
    add("--warmup", type=int, default=32, help="untimed runs per contender first (32)")
    add("--json", action="store_true", help="print the results as JSON (progress on stderr)")
    return parser


def _cell(value: object) -> str:
    if isinstance(value, float) and math.isfinite(value) and value:
        return f"{value:,.{max(0, 3 - math.floor(math.log10(abs(value))))}f}"  # 4 digits
    return "-" if value is None else f"{value:,}" if type(value) is int else str(value)


def report(result: dict[str, Any], as_json: bool) -> None:
    """Print ``result`` as JSON, or each dict in it as a line and each list of rows as a table."""
    if as_json:
        print(json.dumps(result, indent=2))
        return
    for title, part in result.items():
        if isinstance(part, dict):
            print(f"{title}: " + ", ".join(f"{k} {_cell(v)}" for k, v in part.items()))
            continue
        cells = [list(part[0]), *([_cell(v) for v in row.values()] for row in part)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
        left = [isinstance(v, str) for v in part[0].values()]
        print(f"\n{title}")
        for row in cells:
            aligned = zip(row, widths, left, strict=True)
            line = "  ".join(c.ljust(w) if lt else c.rjust(w) for c, w, lt in aligned)
            print(f"  {line}".rstrip())
