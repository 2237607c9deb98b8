"""Server-sent events from ``store.watch``: what the page hears about new checkpoints.

Each browser tab gets its own subscription. Events go out as ``event: checkpoint`` with the
event's JSON; ``event: ready`` says the subscription is in place (anything before it must be
read from the store), and ``event: gap`` says events may have been lost (the store's watch
yielded a ``gap`` event, or the subscription broke): the page re-reads what it shows. A
comment line every :data:`HEARTBEAT_S` keeps proxies from closing an idle stream and finds
closed tabs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable

import orjson

from ..store.checkpointer import Checkpointer
from ..store.types import JSON, CheckpointEvent

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0
"""Seconds between keep-alive comments on an idle stream."""

RETRY_MS = 2_000
"""How soon the browser reconnects after the stream ends (the ``retry:`` field)."""

_READY = object()
_DONE = object()


def sse(event: str, data: JSON) -> bytes:
    """One server-sent event."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def event_stream(
    store: Checkpointer,
    workflow_id: str,
    run_id: str | None,
    shape: Callable[[CheckpointEvent], JSON],
    *,
    heartbeat_s: float = HEARTBEAT_S,
) -> AsyncGenerator[bytes, None]:
    """The events of the workflow (or run) as server-sent events, until the client leaves or
    the subscription fails (then a ``gap`` event, and the browser reconnects)."""
    yield f"retry: {RETRY_MS}\n\n".encode()
    queue: asyncio.Queue[object] = asyncio.Queue()

    async def pump() -> None:
        try:
            async with store.watch(workflow_id, run_id) as events:
                queue.put_nowait(_READY)
                async for event in events:
                    queue.put_nowait(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the subscription broke: say so, the page re-reads
            log.warning("inspector: watch of %s ended: %s", workflow_id, exc)
            queue.put_nowait(exc)
        finally:
            queue.put_nowait(_DONE)

    task = asyncio.create_task(pump())
    subscribed = gap_told = False
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), heartbeat_s)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if item is _READY:
                subscribed = True
                yield sse("ready", {})
            elif item is _DONE:
                if subscribed and not gap_told:
                    yield sse("gap", {"reason": "the subscription ended"})
                return
            elif isinstance(item, CheckpointEvent) and item.kind == "gap":
                yield sse("gap", {"reason": "the store's subscription was interrupted"})
            elif isinstance(item, CheckpointEvent):
                yield sse("checkpoint", shape(item))
            elif isinstance(item, Exception):
                gap_told = True
                yield sse("gap", {"reason": f"{type(item).__name__}: {item}"})
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
