"""Shared helpers of the inspector's tests (no tests here): seeded runs and a served inspector.

The runs are the demo's trip-planner workflow, driven by real runners: a completed run, a run
paused for approval, a run whose step crashed, a fork with an edit and a fork of that fork, a
run written with a plain ``save``, a run whose worker stopped mid-way, one a live worker
holds, and a run of another workflow with megabyte values.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import Future
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import fakeredis

from atomr_redis_state import (
    Checkpointer,
    CheckpointKey,
    InMemoryCheckpointer,
    RedisCheckpointer,
    Snapshot,
    StatefulRunner,
)
from atomr_redis_state.cli.demo import APPROVAL, CHEAPER_HOTEL, SCHEMA, WORKFLOW_ID, build_steps
from atomr_redis_state.store.types import JSON
from atomr_redis_state.store.url import open_store as open_store_url
from atomr_redis_state.ui.data import Resume
from atomr_redis_state.ui.serve import Started, serve

T = TypeVar("T")

WF = WORKFLOW_ID
BIG_WF = "wf-big-state"
BIG_TEXT = "a" * 1_048_575 + "b"
"""A megabyte string: a diff against it with the last character changed shows that character."""


STORES = ["memory", "fakeredis", "redis", "cluster", "sqlite"]
"""The stores the inspector is tested on."""


def opener(
    kind: str, url: str | None = None
) -> Callable[[], AbstractAsyncContextManager[Checkpointer]]:
    """Opens a store of ``kind`` (under a fresh prefix), in whatever loop calls it."""
    prefix = f"tui{uuid.uuid4().hex[:10]}"
    server = fakeredis.FakeServer(version=(7, 0))

    @contextlib.asynccontextmanager
    async def open_store() -> AsyncIterator[Checkpointer]:
        if kind == "memory":
            yield InMemoryCheckpointer()
        elif kind == "sqlite":
            path = Path(tempfile.gettempdir()) / f"{prefix}.db"
            try:
                async with open_store_url(f"sqlite:///{path}") as store:
                    yield store
            finally:
                path.unlink(missing_ok=True)
        elif kind == "fakeredis":
            client = fakeredis.FakeAsyncRedis(server=server)
            yield RedisCheckpointer(client, prefix=prefix)
            await client.aclose()
        else:
            assert url is not None, f"{kind} needs a URL"
            async with RedisCheckpointer.from_url(
                url, prefix=prefix, cluster=kind == "cluster"
            ) as store:
                yield store

    return open_store


def _quiet(line: str) -> None:
    """The demo's steps narrate; the tests do not print."""


class WorkerDied(Exception):
    """A worker process that stopped between two checkpoints (no failure recorded)."""


def _die_after_first_layer(snapshot: Snapshot) -> None:
    if snapshot.key.super_step == 1:
        raise WorkerDied("killed")


def runner(
    store: Checkpointer,
    run_id: str,
    crash_in: str | None = None,
    on_checkpoint: Callable[[Snapshot], object] | None = None,
) -> StatefulRunner:
    steps = build_steps("worker-1", _quiet, crash_in)
    return StatefulRunner(WF, run_id, steps, SCHEMA, store, on_checkpoint=on_checkpoint)


async def resume_demo(store: Checkpointer, workflow_id: str, run_id: str, value: JSON) -> None:
    """How the tests' inspector answers a pause: a demo worker resumes the run."""
    await StatefulRunner(
        workflow_id, run_id, build_steps("inspector", _quiet), SCHEMA, store
    ).resume(value)


@dataclass
class Seeded:
    completed: str = "run-0-completed"
    paused: str = "run-1-paused"
    failed: str = "run-2-crashed"
    midway: str = "run-3-midway"
    stalled: str = "run-4-stalled"
    running: str = "run-5-running"
    big: str = "run-big"
    forks: list[str] = field(default_factory=list)


async def seed(store: Checkpointer) -> Seeded:
    """The runs every inspector test starts with."""
    seeded = Seeded()
    await runner(store, seeded.completed).start({"request": "3 days in Lisbon for 2 in May"})
    await runner(store, seeded.completed).resume(APPROVAL)
    await runner(store, seeded.paused).start({"request": "a weekend in Porto"})
    with contextlib.suppress(ConnectionAbortedError):
        await runner(store, seeded.failed, crash_in="find_hotels").start({"request": "Madeira"})
    source = CheckpointKey(WF, seeded.completed, 2)  # layer:1, after the tool calls
    results = (await store.load(source)).values["tool_results"]  # type: ignore[union-attr]
    assert isinstance(results, dict)
    fork = await store.fork(source, {"tool_results": {**results, "find_hotels": CHEAPER_HOTEL}})
    await runner(store, fork).run()
    fork_of_fork = await store.fork(CheckpointKey(WF, fork, 2), {"plan": ["search_flights"]})
    seeded.forks = [fork, fork_of_fork]
    await store.save(Snapshot(CheckpointKey(WF, seeded.midway, 0), {"request": "Faro"}, "init"))
    for run_id in (seeded.stalled, seeded.running):
        with contextlib.suppress(WorkerDied):
            await runner(store, run_id, on_checkpoint=_die_after_first_layer).start(
                {"request": "Sintra"}
            )
    await store.acquire_lease(WF, seeded.running, "worker-7:4242", 3600)
    for step, tail in enumerate(("a", "b")):
        values: dict[str, JSON] = {
            "document": BIG_TEXT[:-1] + tail,
            "items": [{"index": i, "text": f"item {i}"} for i in range(5_000)],
            "nested": {"level": {"deeper": {"deepest": list(range(50))}}},
        }
        await store.save(Snapshot(CheckpointKey(BIG_WF, seeded.big, step), values, f"big:{step}"))
    return seeded


@dataclass
class Inspector:
    """An inspector served from a thread of its own, on a store opened in that thread's loop."""

    started: Started
    loop: asyncio.AbstractEventLoop
    store: Checkpointer
    seeded: Seeded

    @property
    def url(self) -> str:
        return self.started.url.rstrip("/")

    def call(
        self, work: Callable[[Checkpointer], Coroutine[Any, Any, T]], timeout: float = 30
    ) -> T:
        """Run ``work`` on the inspector's store, in its loop."""
        return asyncio.run_coroutine_threadsafe(work(self.store), self.loop).result(timeout)


@contextlib.contextmanager
def served(
    open_store: Callable[[], AbstractAsyncContextManager[Checkpointer]],
    *,
    allow_writes: bool = False,
    token: str | None = None,
    resume: Resume | None = resume_demo,
) -> Iterator[Inspector]:
    """Seed a store, serve the inspector on it on a free port, stop it after."""
    ready: Future[Inspector] = Future()
    stop: list[asyncio.Event] = []

    async def main() -> None:
        async with open_store() as store:
            seeded = await seed(store)
            stopping = asyncio.Event()
            stop.append(stopping)

            def started(where: Started) -> None:
                ready.set_result(Inspector(where, asyncio.get_running_loop(), store, seeded))

            serving = asyncio.create_task(
                serve(
                    store,
                    port=0,
                    allow_writes=allow_writes,
                    token=token,
                    resume=resume,
                    store_label="in-memory store (the tests' seeded runs)",
                    on_started=started,
                    stop=stopping,
                )
            )
            await serving

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)

    thread = threading.Thread(target=thread_main, daemon=True)
    thread.start()
    inspector = ready.result(60)
    try:
        yield inspector
    finally:
        inspector.loop.call_soon_threadsafe(stop[0].set)
        thread.join(30)
