"""The in-memory checkpointer: the default store, with exactly the Redis store's semantics.

It keeps the same encoded fields the Redis store writes, so values are validated, copied and
decoded the same way, and it applies the same TTL, retention and lease rules, against its own
clock.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import cast

import orjson

from ..errors import (
    AnswerRefusedError,
    CheckpointConflictError,
    CheckpointNotFoundError,
    LeaseHeldError,
    LeaseLostError,
    QueueStateError,
    RunCancelledError,
    RunNotFoundError,
)
from .checkpointer import (
    HOLD_FOREVER,
    BaseCheckpointer,
    Fields,
    Stored,
    WakeUps,
    deadline_with_lease,
)
from .codec import LABEL_FIELD, TIMESTAMP_FIELD, pairs_of
from .types import (
    Answer,
    CheckpointEvent,
    CheckpointKey,
    Claim,
    EventKind,
    Lease,
    Outcome,
    QueueDepth,
    QueueRecord,
    QueueState,
    RunRecord,
    WorkerInfo,
    now_ms,
)
from .validation import check_positive_int, ttl_to_ms


@dataclass(slots=True)
class _Run:
    """One run: its snapshots, its shared deadline, and its lease record."""

    steps: dict[int, dict[bytes, bytes]] = field(default_factory=dict)
    writers: dict[int, int | str | None] = field(default_factory=dict)
    """Who wrote each snapshot, as the Redis store's ``:w`` field tells: the lease token of an
    exclusive save (0: none), the run id of the fork that made it, or None (a plain save)."""
    deadline_ms: int | None = None
    fence: int = 0
    owner: str | None = None
    token: int = 0
    lease_until_ms: int = 0
    lease_ttl_ms: int = 0
    note: bytes | None = None
    answer: tuple[int, bytes] | None = None
    """The recorded answer: the super-step it answers and its encoded value."""
    cancel_ms: int | None = None
    """When a cancel was first requested."""
    queue_state: QueueState | None = None
    """The run's queue state (None: never submitted); the fields below are its record."""
    attempts: int = 0
    ready_at_ms: int = 0
    leased_until_ms: int | None = None
    """The run's score in the lease-deadline index while a worker holds it."""
    reason: bytes | None = None
    settled: int = 0
    """The lease token whose claim ``finish`` settled: a retried finish changes nothing."""
    expired: bool = False
    """Requeued because its worker's lease expired: the next claim is a takeover."""


class InMemoryCheckpointer(BaseCheckpointer):
    """Checkpoints held in this process: for tests, demos and single-process agents.

    ``ttl`` and ``keep_last`` behave as on :class:`~.redis.RedisCheckpointer`; ``clock``
    (milliseconds since the epoch) can be replaced to test expiry without sleeping.
    """

    def __init__(
        self,
        *,
        ttl: float | timedelta | None = None,
        keep_last: int | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.ttl_ms = ttl_to_ms(ttl)
        self.keep_last = None if keep_last is None else check_positive_int(keep_last, "keep_last")
        self._clock = clock
        self._workflows: dict[str, dict[str, _Run]] = {}
        self._last_token = 0
        self._watchers: list[tuple[str, str | None, asyncio.Queue[CheckpointEvent]]] = []
        self._sleepers: list[tuple[frozenset[str], asyncio.Event]] = []
        self._heartbeats: dict[str, tuple[bytes, int]] = {}
        self._permits: dict[str, dict[str, int]] = {}
        self._claimable: dict[str, set[str]] = {}
        """Per workflow, the runs a claim looks at (queued or running, as the Redis store's
        queue and deadline index): claims never scan a workflow's finished runs."""

    def __repr__(self) -> str:
        return f"InMemoryCheckpointer(ttl_ms={self.ttl_ms}, keep_last={self.keep_last})"

    def _record(self, workflow_id: str, run_id: str) -> _Run | None:
        """The run's record (snapshots or only a lease), unless it expired."""
        runs = self._workflows.get(workflow_id)
        run = None if runs is None else runs.get(run_id)
        if run is not None and run.deadline_ms is not None and run.deadline_ms <= self._clock():
            self._drop(workflow_id, run_id)
            return None
        return run

    def _live_run(self, workflow_id: str, run_id: str) -> _Run | None:
        """The run, if it has a snapshot."""
        run = self._record(workflow_id, run_id)
        return run if run is not None and run.steps else None

    def _drop(self, workflow_id: str, run_id: str) -> None:
        runs = self._workflows[workflow_id]
        del runs[run_id]
        if not runs:
            del self._workflows[workflow_id]

    def _new_run(self, workflow_id: str, run_id: str, deadline_ms: int | None) -> _Run:
        run = _Run(deadline_ms=deadline_ms)
        self._workflows.setdefault(workflow_id, {})[run_id] = run
        return run

    def _fresh_deadline(self) -> int | None:
        return None if self.ttl_ms is None else self._clock() + 2 * self.ttl_ms

    def _check_lease(self, run: _Run | None, key: CheckpointKey, lease: Lease | None) -> None:
        holder = self._holder(run)
        if lease is not None:
            if run is None or holder is None or run.token != lease.token:
                raise LeaseLostError(key.workflow_id, key.run_id, lease.token)
            if key.super_step != 0 and not run.steps:
                raise RunNotFoundError(key.workflow_id, key.run_id)
        elif run is not None and holder is not None:
            raise LeaseHeldError(key.workflow_id, key.run_id, holder, run.lease_until_ms)

    def _holder(self, run: _Run | None) -> str | None:
        """The owner of the run's live lease, or None."""
        if run is None or run.lease_until_ms <= self._clock():
            return None
        return run.owner

    async def _save(
        self,
        key: CheckpointKey,
        fields: Fields,
        *,
        exclusive: bool,
        lease: Lease | None,
        hold_ms: int | None,
        event: CheckpointEvent,
    ) -> None:
        run = self._record(key.workflow_id, key.run_id)
        stored = dict(pairs_of(list(fields)))
        # As the Redis store's token: an exclusive save names its write by content and lease.
        writer = (0 if lease is None else lease.token) if exclusive else None
        existing = run.steps.get(key.super_step) if exclusive and run is not None else None
        if run is not None and existing == stored and run.writers.get(key.super_step) == writer:
            return  # this very save, sent again: as the Redis store, not a conflict
        # The lease before the conflict: a stale worker always learns that its lease is lost.
        self._check_lease(run, key, lease)
        if lease is not None and run is not None and run.cancel_ms is not None:
            raise RunCancelledError(key.workflow_id, key.run_id)
        if existing is not None:
            raise CheckpointConflictError(key.workflow_id, key.run_id, key.super_step)
        now = self._clock()
        if run is None:
            run = self._new_run(key.workflow_id, key.run_id, self._fresh_deadline())
        elif hold_ms is None and not run.steps:
            run.deadline_ms = self._fresh_deadline()
        elif (
            hold_ms is None
            and self.ttl_ms is not None
            and not _expires_after(run, now + self.ttl_ms)
        ):
            run.deadline_ms = now + 2 * self.ttl_ms
            if lease is not None:  # never before the lease's deadline, as on Redis
                run.deadline_ms = max(run.deadline_ms, run.lease_until_ms)
        if hold_ms is not None:
            run.deadline_ms = None if hold_ms == HOLD_FOREVER else now + hold_ms
        run.steps[key.super_step] = stored
        run.writers[key.super_step] = writer
        if self.keep_last is not None and len(run.steps) > self.keep_last:
            for step in sorted(run.steps)[: len(run.steps) - self.keep_last]:
                del run.steps[step], run.writers[step]
        self._publish(event)

    async def _load(self, key: CheckpointKey) -> Stored | None:
        run = self._live_run(key.workflow_id, key.run_id)
        return None if run is None else run.steps.get(key.super_step)

    async def _latest(self, workflow_id: str, run_id: str) -> tuple[int, Stored] | None:
        run = self._live_run(workflow_id, run_id)
        if run is None:
            return None
        step = max(run.steps)
        return step, run.steps[step]

    async def _list(
        self, workflow_id: str, run_id: str, *, limit: int | None, before: int | None
    ) -> builtins.list[tuple[int, int, str]]:
        run = self._live_run(workflow_id, run_id)
        if run is None:
            return []
        steps = sorted(s for s in run.steps if before is None or s < before)
        if limit is not None:
            steps = steps[-limit:]
        return [(s, *_meta(run.steps[s])) for s in steps]

    async def _fork(
        self, from_key: CheckpointKey, new_run_id: str, fields: Fields, event: CheckpointEvent
    ) -> None:
        target = self._live_run(from_key.workflow_id, new_run_id)
        if target is not None:
            if target.writers.get(from_key.super_step) == new_run_id:
                return  # this very fork, asked for again with the same run id
            raise CheckpointConflictError(from_key.workflow_id, new_run_id, from_key.super_step)
        source = await self._load(from_key)
        if source is None:
            raise CheckpointNotFoundError(
                from_key.workflow_id, from_key.run_id, from_key.super_step
            )
        copy = dict(source)
        copy.update(pairs_of(list(fields)))
        run = self._new_run(from_key.workflow_id, new_run_id, self._fresh_deadline())
        run.steps[from_key.super_step] = copy
        run.writers[from_key.super_step] = new_run_id
        self._publish(event)

    async def _list_runs(
        self, workflow_id: str, *, limit: int, after: str | None
    ) -> builtins.list[str]:
        run_ids = sorted(
            run_id
            for run_id in builtins.list(self._workflows.get(workflow_id, {}))
            if (after is None or run_id > after) and self._live_run(workflow_id, run_id)
        )
        return run_ids[:limit]

    async def _list_workflows(self, *, limit: int, after: str | None) -> builtins.list[str]:
        workflow_ids = sorted(
            workflow_id
            for workflow_id, runs in builtins.list(self._workflows.items())
            if (after is None or workflow_id > after)
            and any(self._live_run(workflow_id, run_id) for run_id in builtins.list(runs))
        )
        return workflow_ids[:limit]

    async def _delete_run(self, workflow_id: str, run_id: str, event: CheckpointEvent) -> bool:
        run = self._record(workflow_id, run_id)
        if run is None:
            return False
        self._drop(workflow_id, run_id)
        if run.steps:
            self._publish(event)
        return bool(run.steps)

    async def _acquire_lease(
        self, workflow_id: str, run_id: str, owner: str, ttl_ms: int, *, must_exist: bool
    ) -> Lease:
        now = self._clock()
        run = self._record(workflow_id, run_id)
        if must_exist and (run is None or not run.steps):
            raise RunNotFoundError(workflow_id, run_id)
        holder = self._holder(run)
        if run is not None and holder is not None and holder != owner:
            raise LeaseHeldError(workflow_id, run_id, holder, run.lease_until_ms)
        if run is None:
            # Guards a run being started: it lives as long as the lease, until the run's
            # first save gives it the run's own deadline.
            run = self._new_run(workflow_id, run_id, now + ttl_ms)
        return self._grant(run, workflow_id, run_id, owner, ttl_ms, now)

    def _grant(
        self, run: _Run, workflow_id: str, run_id: str, owner: str, ttl_ms: int, now: int
    ) -> Lease:
        """Give ``owner`` the run's lease (extended, with its token, if it holds it already)."""
        if self._holder(run) is None:
            # Tokens keep growing across a run deleted (or expired) and started again: the
            # Redis store uses its clock in microseconds, this store the last token it issued.
            run.fence = max(run.fence + 1, now * 1000, self._last_token + 1)
            self._last_token = run.fence
            run.owner, run.token = owner, run.fence
        run.lease_until_ms, run.lease_ttl_ms = now + ttl_ms, ttl_ms
        self._keep_for_lease(run, now)
        return Lease(
            workflow_id,
            run_id,
            owner,
            run.token,
            run.lease_until_ms,
            ttl_ms,
            run.cancel_ms is not None,
        )

    async def _renew_lease(self, lease: Lease) -> Lease:
        run = self._record(lease.workflow_id, lease.run_id)
        if run is None or self._holder(run) is None or run.token != lease.token:
            raise LeaseLostError(lease.workflow_id, lease.run_id, lease.token)
        now = self._clock()
        run.lease_until_ms = now + lease.ttl_ms
        self._keep_for_lease(run, now)
        return replace(
            lease, expires_at_ms=run.lease_until_ms, cancel_requested=run.cancel_ms is not None
        )

    def _keep_for_lease(self, run: _Run, now: int) -> None:
        """A live lease keeps its run (see :func:`~.checkpointer.deadline_with_lease`)."""
        run.deadline_ms = deadline_with_lease(
            run.deadline_ms,
            bool(run.steps),
            now,
            self.ttl_ms,
            run.lease_until_ms,
            run.lease_ttl_ms,
        )

    async def _release_lease(self, lease: Lease, note: bytes | None, *, keep_note: bool) -> bool:
        run = self._record(lease.workflow_id, lease.run_id)
        # Still this lease's token: held, expired but not taken over, or released by this very
        # call before (a retry), which releases again and returns the same answer.
        if run is None or run.token != lease.token:
            if note is not None:
                raise LeaseLostError(lease.workflow_id, lease.run_id, lease.token)
            return False
        run.owner, run.lease_until_ms = None, 0
        if not keep_note:
            run.note = note
        return True

    async def _run_record(self, workflow_id: str, run_id: str) -> RunRecord:
        run = self._record(workflow_id, run_id)
        if run is None:
            return RunRecord(None, None)
        holder = self._holder(run)
        lease = None
        if holder is not None:
            lease = Lease(
                workflow_id,
                run_id,
                holder,
                run.token,
                run.lease_until_ms,
                run.lease_ttl_ms,
                run.cancel_ms is not None,
            )
        answer = None
        if run.answer is not None:
            answer = Answer(run.answer[0], orjson.loads(run.answer[1]))
        note = None if run.note is None else orjson.loads(run.note)
        return RunRecord(lease, note, answer, run.cancel_ms, self._queue_record(run))

    async def _record_answer(
        self, workflow_id: str, run_id: str, super_step: int, value: bytes, lease: Lease | None
    ) -> None:
        run = self._live_run(workflow_id, run_id)
        if run is None:
            raise RunNotFoundError(workflow_id, run_id)
        self._check_lease(run, CheckpointKey(workflow_id, run_id, super_step), lease)
        if run.cancel_ms is not None:
            raise RunCancelledError(workflow_id, run_id)
        latest = max(run.steps)
        if latest != super_step:
            reason = f"the run is at super-step {latest}"
            raise AnswerRefusedError(workflow_id, run_id, super_step, reason)
        # Without a lease, the first answer to a pause wins (a retry sends the same one).
        answered = run.answer is not None and run.answer[0] == super_step
        if lease is None and answered and run.answer != (super_step, value):
            reason = "that pause already has a different answer"
            raise AnswerRefusedError(workflow_id, run_id, super_step, reason)
        run.answer = (super_step, value)

    @staticmethod
    def _queue_record(run: _Run) -> QueueRecord | None:
        if run.queue_state is None:
            return None
        return QueueRecord(
            run.queue_state,
            run.attempts,
            run.ready_at_ms if run.queue_state == "queued" else None,
            None if run.reason is None else orjson.loads(run.reason),
        )

    # The ready queue: the same rules as lua/claim.lua, finish.lua, requeue.lua and cancel.lua.

    async def _submit(
        self, key: CheckpointKey, fields: Fields, delay_ms: int, event: CheckpointEvent
    ) -> bool:
        run = self._record(key.workflow_id, key.run_id)
        if run is not None and (run.steps or self._holder(run) is not None):
            return False  # the run exists (or is being started inline): a no-op
        now = self._clock()
        if run is None:
            run = self._new_run(key.workflow_id, key.run_id, self._fresh_deadline())
        else:
            run.deadline_ms = self._fresh_deadline()
        run.steps[0] = dict(pairs_of(list(fields)))
        run.writers[0] = None
        run.queue_state, run.attempts, run.ready_at_ms = "queued", 0, now + delay_ms
        self._queued(key.workflow_id, key.run_id)
        run.reason, run.cancel_ms, run.answer, run.expired = None, None, None, False
        self._publish(event)
        self._announce("queued", key.workflow_id, key.run_id)
        self._wake(key.workflow_id)
        return True

    async def _claim(self, workflow_id: str, owner: str, ttl_ms: int) -> Claim | None:
        now = self._clock()
        ready: list[tuple[int, str, _Run]] = []
        claimable = self._claimable.get(workflow_id, set())
        for run_id in builtins.list(claimable):
            run = self._record(workflow_id, run_id)
            if run is None or run.queue_state not in ("queued", "running"):
                claimable.discard(run_id)
                continue
            if not run.steps:  # a lease's record only, for now: claimable once saved
                continue
            if run.leased_until_ms is not None and run.leased_until_ms <= now:
                self._expire_claim(workflow_id, run_id, run, now)
            if run.queue_state == "queued" and run.ready_at_ms <= now:
                ready.append((run.ready_at_ms, run_id, run))
        # In ready order, as claim.lua walks its queue: a run an inline runner holds is looked
        # at again when that lease ends; the first free one is claimed.
        claimed = None
        for entry in sorted(ready, key=lambda entry: entry[:2]):
            if self._holder(entry[2]) is None:
                claimed = entry
                break
            entry[2].ready_at_ms = entry[2].lease_until_ms
        if claimed is None:
            return None
        _, run_id, run = claimed
        lease = self._grant(run, workflow_id, run_id, owner, ttl_ms, now)
        run.queue_state, run.leased_until_ms = "running", lease.expires_at_ms
        taken_over, run.expired = run.expired, False
        self._announce("claimed", workflow_id, run_id, owner)
        return Claim(lease, run.attempts, taken_over)

    def _expire_claim(self, workflow_id: str, run_id: str, run: _Run, now: int) -> None:
        """A claimed run whose deadline passed: its index entry follows a renewed lease;
        otherwise its worker is gone, and it is queued again (or ends, if cancelled)."""
        if self._holder(run) is not None:
            run.leased_until_ms = run.lease_until_ms
            return
        run.leased_until_ms = None
        if run.queue_state != "running":
            return
        if run.cancel_ms is not None:
            run.queue_state = "cancelled"
            self._announce("cancelled", workflow_id, run_id)
            return
        run.queue_state, run.ready_at_ms, run.expired = "queued", now, True
        self._queued(workflow_id, run_id)
        self._announce("lease_expired", workflow_id, run_id, run.owner or "")

    async def _finish(
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
        workflow_id, run_id = lease.workflow_id, lease.run_id
        run = self._record(workflow_id, run_id)
        if run is None or run.token != lease.token:
            raise LeaseLostError(workflow_id, run_id, lease.token)
        if run.settled == lease.token and run.queue_state is not None:
            return run.queue_state  # this very finish, sent again
        now = self._clock()
        run.owner, run.lease_until_ms, run.leased_until_ms = None, 0, None
        run.settled = lease.token
        if not keep_note:
            run.note = note  # as release_lease: a failed layer's note, or cleared
        if run.cancel_ms is not None and outcome != "completed":
            run.queue_state, run.answer = "cancelled", None
            self._announce("cancelled", workflow_id, run_id)
            return "cancelled"
        if reason is not None:
            run.reason = reason
        state: QueueState
        if outcome == "completed":
            state, run.answer, run.reason = "completed", None, None
            self._announce("completed", workflow_id, run_id)
        elif outcome == "paused":
            state, run.answer = "paused", None
        elif outcome == "released":
            state, run.ready_at_ms = "queued", now
            self._announce("released", workflow_id, run_id, lease.owner)
            self._wake(workflow_id)
        elif outcome == "blocked":
            state = "blocked"
            self._announce("blocked", workflow_id, run_id)
        else:
            run.attempts += 1
            if outcome == "failed" or (max_attempts and run.attempts >= max_attempts):
                state = "failed"
                self._announce("failed", workflow_id, run_id, f"attempts {run.attempts}")
            else:
                state, run.ready_at_ms = "queued", now + retry_ms
                self._announce("retrying", workflow_id, run_id, f"attempts {run.attempts}")
                self._wake(workflow_id)
        run.queue_state = state
        if state == "queued":
            self._queued(workflow_id, run_id)
        return state

    async def _requeue(
        self, workflow_id: str, run_id: str, answer: bytes | None, delay_ms: int
    ) -> QueueState:
        run = self._live_run(workflow_id, run_id)
        if run is None:
            raise RunNotFoundError(workflow_id, run_id)
        state = run.queue_state
        if answer is not None:
            answered = (max(run.steps), answer)
            if state == "queued" and run.answer == answered:
                return "queued"  # this very answer, sent again
            if state not in (None, "paused"):
                raise QueueStateError(workflow_id, run_id, str(state), "take an answer")
            if run.cancel_ms is not None:
                raise RunCancelledError(workflow_id, run_id)
            run.answer = answered
        else:
            if state in ("queued", "running"):
                return state
            if state not in (None, "failed", "blocked"):
                raise QueueStateError(workflow_id, run_id, str(state), "be requeued")
            run.attempts, run.reason = 0, None
        run.queue_state, run.ready_at_ms = "queued", self._clock() + delay_ms
        self._queued(workflow_id, run_id)
        self._announce("queued", workflow_id, run_id)
        self._wake(workflow_id)
        return "queued"

    async def _cancel(self, workflow_id: str, run_id: str) -> QueueState:
        run = self._live_run(workflow_id, run_id)
        if run is None:
            raise RunNotFoundError(workflow_id, run_id)
        state = run.queue_state
        if state in ("completed", "cancelled"):
            return cast(QueueState, state)
        if run.cancel_ms is None:
            run.cancel_ms = self._clock()
        if state == "running" or self._holder(run) is not None:
            return "running"
        run.queue_state, run.answer = "cancelled", None
        self._announce("cancelled", workflow_id, run_id)
        return "cancelled"

    async def _queue_depth(self, workflow_id: str) -> QueueDepth:
        now = self._clock()
        counts: dict[str, int] = {}
        for run_id in builtins.list(self._workflows.get(workflow_id, {})):
            run = self._live_run(workflow_id, run_id)
            if run is None or run.queue_state is None:
                continue
            part: str = run.queue_state
            if part == "queued":
                part = "ready" if run.ready_at_ms <= now else "delayed"
            counts[part] = counts.get(part, 0) + 1
        return QueueDepth(
            counts.get("ready", 0),
            counts.get("delayed", 0),
            counts.get("running", 0),
            counts.get("paused", 0),
            counts.get("failed", 0),
            counts.get("blocked", 0),
        )

    @asynccontextmanager
    async def _wake_ups(self, workflow_ids: builtins.list[str]) -> AsyncIterator[WakeUps]:
        sleeper = (frozenset(workflow_ids), asyncio.Event())
        self._sleepers.append(sleeper)
        try:
            yield _MemoryWakeUps(self, sleeper[0], sleeper[1])
        finally:
            self._sleepers.remove(sleeper)

    def _next_due_ms(self, workflow_ids: frozenset[str]) -> int | None:
        """The earliest moment a queued run becomes ready or a claim's deadline passes."""
        moments = [
            moment
            for workflow_id in workflow_ids
            for run_id in self._claimable.get(workflow_id, ())
            if (run := self._workflows.get(workflow_id, {}).get(run_id)) is not None
            for moment in (
                run.ready_at_ms if run.queue_state == "queued" else None,
                run.leased_until_ms,
            )
            if moment is not None
        ]
        return min(moments, default=None)

    def _queued(self, workflow_id: str, run_id: str) -> None:
        self._claimable.setdefault(workflow_id, set()).add(run_id)

    def _wake(self, workflow_id: str) -> None:
        for workflow_ids, event in self._sleepers:
            if workflow_id in workflow_ids:
                event.set()

    def _announce(self, kind: EventKind, workflow_id: str, run_id: str, label: str = "") -> None:
        self._publish(CheckpointEvent(kind, workflow_id, run_id, None, label, self._clock()))

    async def _heartbeat(self, worker_id: str, info: bytes, ttl_ms: int) -> None:
        self._heartbeats[worker_id] = (info, self._clock() + ttl_ms)

    async def _workers(self) -> builtins.list[WorkerInfo]:
        now = self._clock()
        for worker_id, (_, expires) in builtins.list(self._heartbeats.items()):
            if expires <= now:
                del self._heartbeats[worker_id]
        return [
            WorkerInfo(worker_id, orjson.loads(info), expires)
            for worker_id, (info, expires) in self._heartbeats.items()
        ]

    async def _forget_worker(self, worker_id: str) -> None:
        self._heartbeats.pop(worker_id, None)

    async def _take_permit(self, workflow_id: str, holder: str, limit: int, ttl_ms: int) -> bool:
        now = self._clock()
        permits = self._permits.setdefault(workflow_id, {})
        for other, expires in builtins.list(permits.items()):
            if expires <= now:
                del permits[other]
        if holder not in permits and len(permits) >= limit:
            return False
        permits[holder] = now + ttl_ms
        return True

    async def _renew_permits(
        self, workflow_id: str, holders: builtins.list[str], ttl_ms: int
    ) -> int:
        now = self._clock()
        permits = self._permits.get(workflow_id, {})
        live = [h for h in holders if permits.get(h, 0) > now]
        for holder in live:
            permits[holder] = now + ttl_ms
        return len(live)

    async def _drop_permit(self, workflow_id: str, holder: str) -> None:
        self._permits.get(workflow_id, {}).pop(holder, None)

    def _publish(self, event: CheckpointEvent) -> None:
        for workflow_id, run_id, queue in self._watchers:
            if event.is_about(workflow_id, run_id):
                queue.put_nowait(event)

    @asynccontextmanager
    async def _watch(
        self, workflow_id: str, run_id: str | None
    ) -> AsyncIterator[AsyncIterator[CheckpointEvent]]:
        queue: asyncio.Queue[CheckpointEvent] = asyncio.Queue()
        watcher = (workflow_id, run_id, queue)
        self._watchers.append(watcher)

        async def events() -> AsyncIterator[CheckpointEvent]:
            while True:
                yield await queue.get()

        try:
            yield events()
        finally:
            self._watchers.remove(watcher)


class _MemoryWakeUps:
    """Wakes on work queued in this store, or when a delayed run or a deadline comes due."""

    def __init__(
        self, store: InMemoryCheckpointer, workflow_ids: frozenset[str], event: asyncio.Event
    ) -> None:
        self._store = store
        self._workflow_ids = workflow_ids
        self._event = event

    async def wait(self, at_most: float) -> None:
        due = self._store._next_due_ms(self._workflow_ids)
        if due is not None:
            at_most = min(at_most, max(0.0, (due - self._store._clock()) / 1000))
        with suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), at_most)
        self._event.clear()


def _expires_after(run: _Run, moment_ms: int) -> bool:
    """True when the run has a deadline and it is no earlier than ``moment_ms``."""
    return run.deadline_ms is not None and run.deadline_ms >= moment_ms


def _meta(fields: Stored) -> tuple[int, str]:
    return int(fields[TIMESTAMP_FIELD]), fields[LABEL_FIELD].decode("utf-8")
