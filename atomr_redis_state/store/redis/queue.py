"""The ready queue on Redis: submit, claim, finish, requeue, cancel, depth, wake-ups, heartbeats.

Layout (see :mod:`.keys`): each workflow's queue is split over the same 256 slot buckets as its
runs, so the queue entry of a run lives in the run's slot and every change to a run and to its
place in the queue is one script, atomic with the run (``lua/submit.lua``, ``claim.lua``,
``finish.lua``, ``requeue.lua``, ``cancel.lua``). A bucket has a ``queue`` (run -> ready time),
a ``leased`` deadline index (run -> lease deadline: how a crashed worker's run is found without a
scan) and ``paused`` / ``dead`` / ``blocked`` sets (for :meth:`queue_depth`).

Finding work without scanning 256 buckets: each workflow has a *hint* in a slot of its own, a
sorted set of bucket -> the earliest time that bucket needs a claim (a ready run or a lease
deadline), and a *wake* shard channel. Every script that makes a bucket need a claim is followed,
in the same pipeline (one round trip on standalone Redis, in order; two calls on a cluster), by
``hint_touch``, which lowers the bucket's score, bumps the bucket's generation and, for work ready
now, publishes the bucket number on the wake channel. A worker:

- asks ``hint_due`` for the due buckets (at most every :data:`POLL_INTERVAL`, or sooner when the
  hint says a delayed run or a lease deadline comes due), or is woken with a bucket number;
- claims on one bucket at a time (``claim.lua``), the due buckets in the order they came due
  (first in, first out across buckets as well as within one); a bucket that still has ready runs
  after a claim goes to the back of the worker's list, so claims rotate fairly over buckets. A
  worker that loses a race for a bucket's last run has spent one cheap script call;
- settles the hint (``hint_settle``) to what the claim saw as the bucket's next time (or removes
  it), only if the bucket's generation has not changed since it read it: a run queued after the
  claim looked always keeps its hint. Renewals move lease deadlines later without touching the
  hint; the claim then finds the lease alive, moves its index score, and settles the hint again:
  at most one extra claim per renewal period per bucket with running runs.
- A hint is lost only if a client dies between a bucket's script and its touch: one worker at a
  time (``SET NX PX`` on the workflow's ``sweep`` key) repairs the hint every
  :data:`SWEEP_INTERVAL` by peeking at every bucket (and at start). Only workers sweep (a
  store with a :meth:`wake_ups` subscription open), and only they trust their cached view of the
  hint between two looks: a claim made without one reads the hint every time it finds nothing.

An idle worker costs one ``hint_due`` per workflow per :data:`POLL_INTERVAL`, a heartbeat, and a
256-call sweep every :data:`SWEEP_INTERVAL` for the whole fleet; wake-ups cost nothing while
nothing is submitted.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import random
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson
from redis.exceptions import ResponseError

from ...errors import LeaseLostError, QueueStateError, RunNotFoundError
from ..checkpointer import Fields, WakeUps
from ..codec import encode_event
from ..types import (
    CheckpointEvent,
    CheckpointKey,
    Claim,
    Lease,
    Outcome,
    QueueDepth,
    QueueRecord,
    QueueState,
    WorkerInfo,
)
from .calls import Calls
from .keys import SLOT_BUCKETS, KeyLayout, escape
from .scripts import Scripts
from .watch import Subscription

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.0
"""Seconds an idle worker waits at most between two looks at a workflow's hint."""
SWEEP_INTERVAL = 300.0
"""Seconds between two repairs of a workflow's hint, by one worker of the fleet."""
DUE_LIMIT = 64
"""The most due buckets one look at the hint returns."""


@dataclass(slots=True)
class _Due:
    """What a worker knows of one workflow's due buckets."""

    buckets: list[tuple[int, str | None]] = field(default_factory=list)
    """Buckets to claim on, with the generation read from the hint (None: from a wake-up)."""
    refresh_at: float = 0.0
    """When to read the hint again (monotonic seconds)."""
    sweep_at: float = 0.0


class RedisQueue:
    """The queue calls of one :class:`~.checkpointer.RedisCheckpointer`."""

    def __init__(
        self, client: Any, calls: Calls, scripts: Scripts, keys: KeyLayout, ttl_arg: str
    ) -> None:
        self._client = client
        self._calls = calls
        self._scripts = scripts
        self._keys = keys
        self._ttl_arg = ttl_arg
        self._due: dict[str, _Due] = {}
        self._woken: Counter[str] = Counter()
        """Workflows with a wake-up subscription open: only they trust the cached hint (a
        claim without one reads the hint every time it has no due bucket left)."""

    async def submit(
        self, key: CheckpointKey, fields: Fields, delay_ms: int, event: CheckpointEvent
    ) -> bool:
        workflow_id, run_id = key.workflow_id, key.run_id
        run = self._keys.run(workflow_id, run_id)
        created, _ = await self._calls.in_order(
            [
                (
                    self._scripts.submit,
                    [
                        *run.queue.declared(),
                        run.steps,
                        run.snapshot(0),
                        run.run_index,
                        run.record,
                        run.meta,
                    ],
                    [
                        self._ttl_arg,
                        run_id,
                        str(delay_ms),
                        run.events,
                        encode_event(event),
                        f"{event.timestamp_ms} {event.label}",
                        workflow_id,
                        *fields,
                    ],
                ),
                self._touch(workflow_id, run.queue.bucket, delay_ms),
            ]
        )
        if created:
            log.info("run %s of %s submitted", run_id, workflow_id)
        return bool(created)

    async def claim(self, workflow_id: str, owner: str, ttl_ms: int) -> Claim | None:
        due = self._due.setdefault(workflow_id, _Due())
        stale = not self._woken[workflow_id] or time.monotonic() >= due.refresh_at
        if not due.buckets and stale:
            await self._refresh(workflow_id, due)
        while due.buckets:
            bucket, generation = due.buckets.pop(0)
            keys = self._keys.queue(workflow_id, bucket)
            reply = await self._calls.script(
                self._scripts.claim,
                keys.declared(),
                [owner, str(ttl_ms), workflow_id, keys.events, self._ttl_arg],
            )
            run_id, token, expires, attempts, cancel, expired, next_at, now = reply
            if generation is not None:
                await self._settle(workflow_id, bucket, generation, next_at)
            if next_at is not None and int(next_at) <= int(now) and run_id is not None:
                due.buckets.append((bucket, None))  # more is ready there: come back in turn
            if run_id is None:
                continue
            lease = Lease(
                workflow_id,
                run_id.decode(),
                owner,
                int(token),
                int(expires),
                ttl_ms,
                cancel == b"1",
            )
            taken_over = expired == b"1"
            log.info(
                "run %s of %s claimed by %s (token %d%s)",
                lease.run_id,
                workflow_id,
                owner,
                lease.token,
                ", a takeover" if taken_over else "",
            )
            return Claim(lease, int(attempts), taken_over)
        return None

    async def finish(
        self,
        lease: Lease,
        outcome: Outcome,
        reason: bytes | None,
        retry_ms: int,
        max_attempts: int,
        note: bytes | None,
        *,
        keep_note: bool,
    ) -> QueueState:
        run = self._keys.run(lease.workflow_id, lease.run_id)
        call = (
            self._scripts.finish,
            [*run.queue.declared(), run.record, run.steps],
            [
                str(lease.token),
                outcome,
                str(retry_ms),
                str(max_attempts),
                reason or b"",
                lease.workflow_id,
                lease.run_id,
                run.queue.events,
                lease.owner,
                "keep" if keep_note else "0" if note is None else "1",
                note or b"",
            ],
        )
        try:
            if outcome in ("released", "retry"):
                delay = 0 if outcome == "released" else retry_ms
                touch = self._touch(lease.workflow_id, run.queue.bucket, delay)
                state = (await self._calls.in_order([call, touch]))[0]
            else:
                state = await self._calls.script(*call, durable=True)
        except ResponseError as exc:
            if str(exc).startswith("LEASELOST"):
                raise LeaseLostError(lease.workflow_id, lease.run_id, lease.token) from None
            raise
        decoded: QueueState = state.decode()
        log.info("run %s of %s: %s, now %s", lease.run_id, lease.workflow_id, outcome, decoded)
        return decoded

    async def requeue(
        self, workflow_id: str, run_id: str, answer: bytes | None, delay_ms: int
    ) -> QueueState:
        run = self._keys.run(workflow_id, run_id)
        call = (
            self._scripts.requeue,
            [*run.queue.declared(), run.record, run.steps],
            [
                "again" if answer is None else "answer",
                answer or b"",
                str(delay_ms),
                workflow_id,
                run_id,
                run.queue.events,
            ],
        )
        touch = self._touch(workflow_id, run.queue.bucket, delay_ms)
        try:
            state = (await self._calls.in_order([call, touch]))[0]
        except ResponseError as exc:
            code, _, detail = str(exc).partition(" ")
            if code == "RUNNOTFOUND":
                raise RunNotFoundError(workflow_id, run_id) from None
            if code == "STATE":
                action = "be requeued" if answer is None else "take an answer"
                raise QueueStateError(workflow_id, run_id, detail, action) from None
            raise
        decoded: QueueState = state.decode()
        return decoded

    async def cancel(self, workflow_id: str, run_id: str) -> QueueState:
        run = self._keys.run(workflow_id, run_id)
        try:
            state = await self._calls.script(
                self._scripts.cancel,
                [*run.queue.declared(), run.record, run.steps],
                [workflow_id, run_id, run.queue.events],
                durable=True,
            )
        except ResponseError as exc:
            if str(exc).startswith("RUNNOTFOUND"):
                raise RunNotFoundError(workflow_id, run_id) from None
            raise
        decoded: QueueState = state.decode()
        log.info("run %s of %s: cancel asked, now %s", run_id, workflow_id, decoded)
        return decoded

    async def depth(self, workflow_id: str) -> QueueDepth:
        buckets = [self._keys.queue(workflow_id, b) for b in range(SLOT_BUCKETS)]
        replies = await self._calls.many(
            [(self._scripts.queue_depth, q.declared(), []) for q in buckets]
        )
        totals = [sum(int(reply[i]) for reply in replies) for i in range(6)]
        return QueueDepth(*totals)

    @asynccontextmanager
    async def wake_ups(self, workflow_ids: builtins.list[str]) -> AsyncIterator[WakeUps]:
        channels = {self._keys.hint(w).wake: w for w in workflow_ids}
        subscription = _WakeSubscription(
            self._client, self._calls, builtins.list(channels), workflow_ids[0], None
        )
        waker = _RedisWakeUps(self, workflow_ids)
        await subscription.open()
        listener = asyncio.ensure_future(self._listen(subscription, channels, waker))
        for workflow_id in workflow_ids:  # wake-ups were missed while nobody listened
            self._due.setdefault(workflow_id, _Due()).refresh_at = 0.0
        self._woken.update(workflow_ids)
        try:
            yield waker
        finally:
            self._woken.subtract(workflow_ids)
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            await subscription.aclose()

    async def _listen(
        self, subscription: _WakeSubscription, channels: dict[str, str], waker: _RedisWakeUps
    ) -> None:
        """Put each woken bucket on its workflow's due list, and wake the waiter."""
        async for channel, data in subscription.messages():
            workflow_id = channels.get(channel)
            if workflow_id is None or not data.isdigit():
                continue
            due = self._due.setdefault(workflow_id, _Due())
            bucket = int(data)
            if 0 <= bucket < SLOT_BUCKETS and (bucket, None) not in due.buckets:
                due.buckets.append((bucket, None))
            waker.event.set()

    def seconds_to_next_look(self, workflow_ids: builtins.list[str]) -> float:
        """How long a worker may wait before it should claim again (0: work is known)."""
        now = time.monotonic()
        waits = []
        for workflow_id in workflow_ids:
            due = self._due.get(workflow_id)
            if due is None or due.buckets:
                return 0.0
            waits.append(max(0.0, due.refresh_at - now))
        return min(waits)

    async def heartbeat(self, worker_id: str, info: bytes, ttl_ms: int) -> None:
        await self._calls.script(
            self._scripts.heartbeat,
            [self._keys.workers_index, self._keys.worker_prefix + escape(worker_id)],
            [worker_id, info, str(ttl_ms)],
        )

    async def workers(self) -> builtins.list[WorkerInfo]:
        flat = await self._calls.script(self._scripts.workers, [self._keys.workers_index], [])
        it = iter(flat)
        return [
            WorkerInfo(worker_id.decode(), orjson.loads(info), int(float(deadline)))
            for worker_id, info, deadline in zip(it, it, it, strict=True)
        ]

    async def forget_worker(self, worker_id: str) -> None:
        await self._calls.commands(
            ("DEL", self._keys.worker_prefix + escape(worker_id)),
            ("ZREM", self._keys.workers_index, worker_id),
        )

    async def permit(
        self, workflow_id: str, mode: str, ttl_ms: int, limit: int, holders: builtins.list[str]
    ) -> int:
        permits = self._keys.hint(workflow_id).permits
        reply = await self._calls.script(
            self._scripts.permit, [permits], [mode, str(ttl_ms), str(limit), *holders]
        )
        return int(reply)

    def _touch(
        self, workflow_id: str, bucket: int, delay_ms: int
    ) -> tuple[Any, builtins.list[str], builtins.list[Any]]:
        """The hint update that follows a script making ``bucket`` need a claim in
        ``delay_ms``; this process's own view of the hint learns it at once too."""
        due = self._due.get(workflow_id)
        if due is not None:
            due.refresh_at = min(due.refresh_at, time.monotonic() + delay_ms / 1000)
        hint = self._keys.hint(workflow_id)
        return (
            self._scripts.hint_touch,
            [hint.hint, hint.generation],
            [str(bucket), str(delay_ms), hint.wake, ""],
        )

    async def _refresh(self, workflow_id: str, due: _Due) -> None:
        """Read the workflow's due buckets from its hint (and repair the hint when it is time)."""
        hint = self._keys.hint(workflow_id)
        started = time.monotonic()
        if self._woken[workflow_id] and started >= due.sweep_at:
            due.sweep_at = started + SWEEP_INTERVAL * random.uniform(0.9, 1.1)
            await self._sweep(workflow_id)
        reply = await self._calls.script(
            self._scripts.hint_due, [hint.hint, hint.generation], [str(DUE_LIMIT)]
        )
        now, later, *flat = reply
        due.buckets = [(int(flat[i]), flat[i + 1].decode()) for i in range(0, len(flat), 2)]
        wait = POLL_INTERVAL
        if later is not None:
            wait = min(wait, max(0.0, (int(later) - int(now)) / 1000))
        due.refresh_at = started + (0.0 if len(due.buckets) >= DUE_LIMIT else wait)

    async def _settle(
        self, workflow_id: str, bucket: int, generation: str, next_at: bytes | None
    ) -> None:
        hint = self._keys.hint(workflow_id)
        await self._calls.script(
            self._scripts.hint_settle,
            [hint.hint, hint.generation],
            [str(bucket), generation, b"" if next_at is None else next_at],
        )

    async def _sweep(self, workflow_id: str) -> None:
        """Repair the workflow's hint from every bucket, if no other worker is doing it."""
        hint = self._keys.hint(workflow_id)
        ms = int(SWEEP_INTERVAL * 1000)
        if not await self._calls.command("SET", hint.sweep, secrets.token_hex(4), "NX", "PX", ms):
            return
        buckets = [self._keys.queue(workflow_id, b) for b in range(SLOT_BUCKETS)]
        peeks = await self._calls.many(
            [(self._scripts.queue_peek, [q.queue, q.leased], []) for q in buckets]
        )
        touches = [
            (
                self._scripts.hint_touch,
                [hint.hint, hint.generation],
                [str(q.bucket), "", "", next_at],
            )
            for q, (_, next_at) in zip(buckets, peeks, strict=True)
            if next_at is not None
        ]
        if touches:
            await self._calls.many(touches)
        log.debug("hint of %s repaired: %d bucket(s) need a claim", workflow_id, len(touches))


class _RedisWakeUps:
    def __init__(self, queue: RedisQueue, workflow_ids: builtins.list[str]) -> None:
        self._queue = queue
        self._workflow_ids = workflow_ids
        self.event = asyncio.Event()

    async def wait(self, at_most: float) -> None:
        at_most = min(at_most, self._queue.seconds_to_next_look(self._workflow_ids))
        if at_most > 0:
            with suppress(TimeoutError):
                await asyncio.wait_for(self.event.wait(), at_most)
        self.event.clear()


def queue_record(fields: builtins.list[Any]) -> QueueRecord | None:
    """The queue record of a run from ``run_record.lua``'s state..reason fields."""
    state, attempts, ready, reason = fields
    if state is None:
        return None
    decoded: QueueState = state.decode()
    return QueueRecord(
        decoded,
        0 if attempts is None else int(attempts),
        None if ready is None or decoded != "queued" else int(ready),
        None if reason is None else orjson.loads(reason),
    )


class _WakeSubscription(Subscription):
    """The wake channels' raw messages: (channel, bucket number as bytes)."""

    async def messages(self) -> AsyncIterator[tuple[str, bytes]]:
        while True:
            if self._early:
                message: dict[str, Any] | None = self._early.pop(0)
            else:
                message = await self._calls.run(
                    partial(self._receive, ignore_subscribe_messages=True, timeout=1.0)
                )
            if message is None or message.get("type") != "smessage":
                continue
            channel = message["channel"]
            yield (channel.decode() if isinstance(channel, bytes) else channel), message["data"]
