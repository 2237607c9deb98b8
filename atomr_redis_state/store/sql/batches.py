"""Calls made at the same time, sent together: how the Postgres store commits as a group.

A :class:`Batcher` keeps up to ``senders`` batches in flight. A call made while fewer are in
flight goes out at once, with whatever other calls the same event-loop iteration made; calls
made while every sender is busy wait for the next batch. Under little load a call is sent
alone, as it would be without a batcher; under load batches grow, and one statement (one round
trip, one transaction, one commit) serves many callers.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

A = TypeVar("A")
R = TypeVar("R")

Send = Callable[[list[A]], Awaitable[Sequence[R | BaseException]]]
"""Runs one batch: one outcome per call, in order (a result, or the error that call raises)."""


class Batcher(Generic[A, R]):
    """Gathers calls (their arguments ``A``) into batches for ``send``, at most ``limit`` each.

    ``lost()`` is the error for the callers of a batch whose sender was cancelled before the
    answer came (their calls may or may not have taken effect)."""

    def __init__(
        self, send: Send[A, R], *, senders: int, limit: int, lost: Callable[[], Exception]
    ) -> None:
        self._send = send
        self._lost = lost
        self._most_senders = senders
        self._limit = limit
        self._pending: deque[tuple[A, asyncio.Future[R]]] = deque()
        self._senders = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def call(self, arguments: A) -> R:
        """Send ``arguments`` in the next batch; its outcome (or error) for this call."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((arguments, future))
        if self._senders == 0 or (len(self._pending) == 1 and self._senders < self._most_senders):
            self._start_sender(loop)
        return await future

    def _start_sender(self, loop: asyncio.AbstractEventLoop) -> None:
        self._senders += 1
        task = loop.create_task(self._sender())  # its first step runs in the next iteration
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sender(self) -> None:
        """Send batches until nothing is pending."""
        try:
            while self._pending:
                taken = [
                    self._pending.popleft() for _ in range(min(self._limit, len(self._pending)))
                ]
                batch = [(arguments, future) for arguments, future in taken if not future.done()]
                if batch:
                    await self._send_batch(batch)
        finally:
            self._senders -= 1
            waiting = any(not future.done() for _, future in self._pending)
            if waiting and self._senders == 0:  # this one was cancelled: leave no call behind
                self._start_sender(asyncio.get_running_loop())

    async def _send_batch(self, batch: list[tuple[A, asyncio.Future[R]]]) -> None:
        outcomes: Sequence[R | BaseException]
        try:
            outcomes = await self._send([arguments for arguments, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.set_exception(self._lost())
            raise
        except Exception as exc:
            outcomes = [exc] * len(batch)
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
