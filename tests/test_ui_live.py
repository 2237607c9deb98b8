"""The inspector's server-sent events: ready, each checkpoint, keep-alives, and gaps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager

import orjson

from atomr_redis_state import CheckpointKey, InMemoryCheckpointer, Snapshot, views
from atomr_redis_state.errors import StoreUnavailableError
from atomr_redis_state.store.types import CheckpointEvent
from atomr_redis_state.ui.live import event_stream

WF = "wf-live"


def parse(chunk: bytes) -> tuple[str, object]:
    """``(event name, data)`` of one server-sent event."""
    fields = dict(line.split(": ", 1) for line in chunk.decode().strip().splitlines())
    return fields["event"], orjson.loads(fields["data"])


async def next_chunk(stream: AsyncGenerator[bytes, None]) -> bytes:
    return await asyncio.wait_for(anext(stream), 10)


async def test_the_stream_says_when_it_listens_then_sends_each_checkpoint() -> None:
    store = InMemoryCheckpointer()
    stream = event_stream(store, WF, None, views.event_json)
    assert await next_chunk(stream) == b"retry: 2000\n\n"
    assert parse(await next_chunk(stream)) == ("ready", {})
    await store.save(Snapshot(CheckpointKey(WF, "run-1", 0), {"a": 1}, "init"))
    name, data = parse(await next_chunk(stream))
    assert name == "checkpoint"
    assert isinstance(data, dict)
    assert (data["kind"], data["run_id"], data["super_step"]) == ("saved", "run-1", 0)
    await stream.aclose()


async def test_an_idle_stream_sends_keep_alives() -> None:
    stream = event_stream(InMemoryCheckpointer(), WF, None, views.event_json, heartbeat_s=0.05)
    await next_chunk(stream)
    await next_chunk(stream)
    assert await next_chunk(stream) == b": keep-alive\n\n"
    await stream.aclose()


class BreakingStore(InMemoryCheckpointer):
    """A store whose subscription breaks after one event, as a dropped pub/sub link does."""

    @asynccontextmanager
    async def _watch(
        self, workflow_id: str, run_id: str | None
    ) -> AsyncIterator[AsyncIterator[CheckpointEvent]]:
        async def events() -> AsyncIterator[CheckpointEvent]:
            yield CheckpointEvent("saved", workflow_id, "run-1", 0, "init", 1)
            raise StoreUnavailableError("the subscription was dropped")

        yield events()


async def test_a_broken_subscription_is_told_as_a_gap_and_ends_the_stream() -> None:
    stream = event_stream(BreakingStore(), WF, None, views.event_json)
    chunks = [chunk async for chunk in stream]
    names = [parse(chunk)[0] for chunk in chunks[1:]]
    assert names == ["ready", "checkpoint", "gap"]
    reason = parse(chunks[-1])[1]
    assert isinstance(reason, dict)
    assert "the subscription was dropped" in reason["reason"]


class GappingStore(InMemoryCheckpointer):
    """A store whose watch reports a gap (Redis dropped the subscriber, redis-py resubscribed)."""

    @asynccontextmanager
    async def _watch(
        self, workflow_id: str, run_id: str | None
    ) -> AsyncIterator[AsyncIterator[CheckpointEvent]]:
        async def events() -> AsyncIterator[CheckpointEvent]:
            yield CheckpointEvent("gap", workflow_id, "", None, "", 1)
            yield CheckpointEvent("saved", workflow_id, "run-1", 1, "layer:0", 2)

        yield events()


async def test_a_gap_the_store_reports_is_told_and_the_stream_goes_on() -> None:
    stream = event_stream(GappingStore(), WF, None, views.event_json)
    chunks = [chunk async for chunk in stream]
    names = [parse(chunk)[0] for chunk in chunks[1:]]
    assert names == ["ready", "gap", "checkpoint", "gap"]  # the last: the subscription ended
