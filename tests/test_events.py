"""Checkpoint events, on every backend: the store announces saves, pauses, forks and deletes as
they happen (published by the same atomic scripts), to subscribers of a workflow or a run."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import sys
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from atomr_redis_state import (
    CheckpointConflictError,
    Checkpointer,
    CheckpointEvent,
    CheckpointKey,
    RedisCheckpointer,
    Snapshot,
)
from atomr_redis_state.testing import RedisServer, start_server
from tests.conftest import Backend

WF = "wf-events"


def snap(run: str, step: int) -> Snapshot:
    return Snapshot(CheckpointKey(WF, run, step), {"step": step}, f"label-{step}")


async def take(events: AsyncIterator[CheckpointEvent], count: int) -> list[CheckpointEvent]:
    """The next ``count`` events, or a timeout."""

    async def collect() -> list[CheckpointEvent]:
        return [await anext(events) for _ in range(count)]

    return await asyncio.wait_for(collect(), timeout=10)


async def quiet(events: AsyncIterator[CheckpointEvent]) -> bool:
    """True when no event arrives for a moment."""
    try:
        await asyncio.wait_for(anext(events), timeout=0.3)
    except TimeoutError:
        return True
    return False


async def test_a_save_is_announced(checkpointer: Checkpointer) -> None:
    async with checkpointer.watch(WF) as events:
        saved = snap("r", 0)
        await checkpointer.save(saved)
        (event,) = await take(events, 1)
    assert event == CheckpointEvent("saved", WF, "r", 0, "label-0", saved.timestamp_ms)


async def test_a_save_that_holds_the_run_is_announced_as_a_pause(
    checkpointer: Checkpointer,
) -> None:
    async with checkpointer.watch(WF) as events:
        await checkpointer.save(snap("r", 0), hold="forever")
        (event,) = await take(events, 1)
    assert (event.kind, event.super_step) == ("paused", 0)


async def test_a_fork_and_a_delete_are_announced(checkpointer: Checkpointer) -> None:
    await checkpointer.save(snap("r", 0))
    async with checkpointer.watch(WF) as events:
        forked = await checkpointer.fork(CheckpointKey(WF, "r", 0))
        await checkpointer.delete_run(WF, "r")
        fork, deleted = await take(events, 2)
    assert (fork.kind, fork.run_id, fork.source_run_id, fork.super_step) == (
        "forked",
        forked,
        "r",
        0,
    )
    assert fork.label == "fork-of:r"
    assert (deleted.kind, deleted.run_id, deleted.super_step) == ("deleted", "r", None)


async def test_watching_a_run_sees_only_that_run(checkpointer: Checkpointer) -> None:
    async with checkpointer.watch(WF, "mine") as events:
        await checkpointer.save(snap("other", 0))
        await checkpointer.save(snap("mine", 0))
        (event,) = await take(events, 1)
        assert event.run_id == "mine"
        assert await quiet(events)


async def test_watching_a_workflow_sees_its_runs_on_every_shard(
    checkpointer: Checkpointer,
) -> None:
    runs = [f"run-{i}" for i in range(12)]
    async with checkpointer.watch(WF) as events:
        for run in runs:
            await checkpointer.save(snap(run, 0))
        seen = await take(events, len(runs))
        await checkpointer.save(Snapshot(CheckpointKey("another-workflow", "x", 0), {}))
        assert await quiet(events)
    assert sorted(event.run_id for event in seen) == sorted(runs)


async def test_a_refused_save_is_not_announced(checkpointer: Checkpointer) -> None:
    await checkpointer.save(snap("r", 0))
    async with checkpointer.watch(WF) as events:
        with pytest.raises(CheckpointConflictError):
            await checkpointer.save(snap("r", 0), exclusive=True)
        assert await quiet(events)


async def test_events_before_subscribing_are_not_replayed(checkpointer: Checkpointer) -> None:
    await checkpointer.save(snap("r", 0))
    async with checkpointer.watch(WF) as events:
        assert await quiet(events)


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_a_watch_sees_saves_made_by_another_process(
    backend: Backend, redis_server: RedisServer
) -> None:
    store = backend.make()
    script = (
        "import asyncio\n"
        "from atomr_redis_state import CheckpointKey, RedisCheckpointer, Snapshot\n"
        "async def main():\n"
        f"    async with RedisCheckpointer.from_url({redis_server.url!r}, "
        f"prefix={backend.prefix!r}) as store:\n"
        "        for step in range(3):\n"
        f"            await store.save(Snapshot(CheckpointKey({WF!r}, 'far', step), {{}}))\n"
        "asyncio.run(main())\n"
    )
    async with store.watch(WF) as events:
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", script)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
        seen = await take(events, 3)
    assert [(e.kind, e.run_id, e.super_step) for e in seen] == [
        ("saved", "far", 0),
        ("saved", "far", 1),
        ("saved", "far", 2),
    ]


async def test_a_subscription_redis_drops_is_restored_with_a_gap_event(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_server(tmp_path)
    admin = Redis.from_url(server.url)
    try:
        async with (
            RedisCheckpointer.from_url(server.url, prefix="gap") as store,
            store.watch(WF) as events,
        ):
            for step in range(3):
                await store.save(snap("r", step))
            # A subscriber that reads slower than the publishers: once 64 KB wait for it
            # past what the sockets hold, Redis closes its connection.
            await admin.config_set("client-output-buffer-limit", "pubsub 65536 32768 0")
            channel = store.keys.run(WF, "r").events
            for _ in range(100):
                await admin.spublish(channel, b"x" * 100_000)
            for step in range(3, 6):  # published while nobody listens: lost
                await store.save(snap("r", step))
            with caplog.at_level(logging.WARNING, logger="atomr_redis_state"):
                seen = await take(events, 4)
            assert [(e.kind, e.super_step) for e in seen] == [
                ("saved", 0),
                ("saved", 1),
                ("saved", 2),
                ("gap", None),
            ]
            assert (seen[-1].workflow_id, seen[-1].run_id) == (WF, "")
            assert "Redis dropped the subscription" in caplog.text
            assert f"workflow {WF}" in caplog.text
            await store.save(snap("after", 0))
            [after] = await take(events, 1)
            assert (after.kind, after.run_id) == ("saved", "after")
    finally:
        await admin.aclose()
        server.stop()
