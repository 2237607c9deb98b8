"""Watching a workflow: a subscription to the shard channels the store's scripts publish on.

Subscribing waits for Redis to confirm every channel, so a refusal (a user without the channel
permission) fails when the watch opens, and an event published right after it opened is
delivered. Every failure is the library's typed error, as for any other store call.

When Redis drops the subscription (a reader slower than the publishers fills the client's
output buffer; a lost connection), redis-py reconnects and subscribes again on its own, and the
events published in between are lost. The watch notices the reconnection and yields a ``gap``
event where the loss happened (logged at WARNING), so the caller can re-read the store.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from ..codec import decode_event
from ..types import CheckpointEvent, now_ms
from .calls import Calls

log = logging.getLogger(__name__)

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
        self._connections: set[int] = set()
        self._gap = False

    async def open(self) -> None:
        """Subscribe, and wait until Redis has confirmed every channel."""
        await self._calls.run(self._calls.ready)
        await self._calls.run(partial(self._pubsub.ssubscribe, *self._channels))
        await self._calls.run(self._confirmed)
        self._watch_connections()

    def _watch_connections(self) -> None:
        """Be told when a connection of the subscription reconnects (on a cluster, one per node,
        made as the client subscribes there)."""
        pubsubs = [self._pubsub, *getattr(self._pubsub, "node_pubsub_mapping", {}).values()]
        for pubsub in pubsubs:
            connection = getattr(pubsub, "connection", None)
            if connection is None or id(connection) in self._connections:
                continue
            self._connections.add(id(connection))
            register = getattr(connection, "register_connect_callback", None)
            if register is not None:
                register(self._reconnected)

    def _reconnected(self, connection: Any) -> None:
        self._gap = True

    def _gap_event(self) -> CheckpointEvent:
        self._gap = False
        scope = f"workflow {self._workflow_id}"
        if self._run_id is not None:
            scope = f"run {self._run_id} of {scope}"
        log.warning(
            "watch of %s: Redis dropped the subscription and it was restored; events published "
            "in between were lost (re-read the store)",
            scope,
        )
        return CheckpointEvent("gap", self._workflow_id, self._run_id or "", None, "", now_ms())

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
                self._watch_connections()
            if self._gap:
                yield self._gap_event()
            if message is None or message.get("type") != "smessage":
                continue
            event = decode_event(message["data"])
            if event is not None and event.is_about(self._workflow_id, self._run_id):
                yield event

    async def aclose(self) -> None:
        await self._pubsub.aclose()
