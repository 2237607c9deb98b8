"""Watching a workflow: a subscription to the shard channels the store's scripts publish on.

Subscribing waits for Redis to confirm every channel, so a refusal (a user without the channel
permission) fails when the watch opens, and an event published right after it opened is
delivered. Every failure is the library's typed error, as for any other store call.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from ..codec import decode_event
from ..types import CheckpointEvent
from .calls import Calls

CONFIRM_WITHIN = 5.0
"""Seconds to wait for Redis to confirm the subscriptions."""


class Subscription:
    """The events of one workflow (or one run of it), from the moment it is open."""

    def __init__(
        self,
        client: Any,
        calls: Calls,
        channels: list[str],
        workflow_id: str,
        run_id: str | None,
    ) -> None:
        self._calls = calls
        self._channels = channels
        self._workflow_id = workflow_id
        self._run_id = run_id
        self._pubsub = client.pubsub()
        receive = self._pubsub.get_sharded_message if calls.cluster else self._pubsub.get_message
        self._receive = receive
        self._early: list[dict[str, Any]] = []

    async def open(self) -> None:
        """Subscribe, and wait until Redis has confirmed every channel."""
        await self._calls.run(self._calls.ready)
        await self._calls.run(partial(self._pubsub.ssubscribe, *self._channels))
        await self._calls.run(self._confirmed)

    async def _confirmed(self) -> None:
        confirmed = 0
        deadline = time.monotonic() + CONFIRM_WITHIN
        while confirmed < len(self._channels) and time.monotonic() < deadline:
            message = await self._receive(ignore_subscribe_messages=False, timeout=0.1)
            if message is None:
                continue
            if message.get("type") == "ssubscribe":
                confirmed += 1
            else:
                self._early.append(message)

    async def events(self) -> AsyncIterator[CheckpointEvent]:
        """The events, as they are published; a message that is not one of ours is skipped."""
        while True:
            if self._early:
                message: dict[str, Any] | None = self._early.pop(0)
            else:
                message = await self._calls.run(
                    partial(self._receive, ignore_subscribe_messages=True, timeout=1.0)
                )
            if message is None or message.get("type") != "smessage":
                continue
            event = decode_event(message["data"])
            if event is not None and event.is_about(self._workflow_id, self._run_id):
                yield event

    async def aclose(self) -> None:
        await self._pubsub.aclose()
