"""The in-memory checkpointer: the default store, with exactly the Redis store's semantics.

It keeps the same encoded fields the Redis store writes, so values are validated, copied and
decoded the same way, and it applies the same TTL, retention and lease rules, against its own
clock.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta

import orjson

from ..errors import (
    CheckpointConflictError,
    CheckpointNotFoundError,
    LeaseHeldError,
    LeaseLostError,
    RunNotFoundError,
)
from .checkpointer import HOLD_FOREVER, BaseCheckpointer, Fields, Stored
from .codec import LABEL_FIELD, TIMESTAMP_FIELD, pairs_of
from .types import CheckpointEvent, CheckpointKey, Lease, RunRecord, now_ms
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
        if exclusive and run is not None and key.super_step in run.steps:
            if run.steps[key.super_step] == stored and run.writers.get(key.super_step) == writer:
                return  # this very save, sent again: as the Redis store, not a conflict
            raise CheckpointConflictError(key.workflow_id, key.run_id, key.super_step)
        self._check_lease(run, key, lease)
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
        if run is not None and holder is not None:
            if holder != owner:
                raise LeaseHeldError(workflow_id, run_id, holder, run.lease_until_ms)
        else:
            if run is None:
                # Guards a run being started: it lives as long as the lease, until the run's
                # first save gives it the run's own deadline.
                run = self._new_run(workflow_id, run_id, now + ttl_ms)
            # Tokens keep growing across a run deleted (or expired) and started again: the
            # Redis store uses its clock in microseconds, this store the last token it issued.
            run.fence = max(run.fence + 1, now * 1000, self._last_token + 1)
            self._last_token = run.fence
            run.owner, run.token = owner, run.fence
        run.lease_until_ms, run.lease_ttl_ms = now + ttl_ms, ttl_ms
        if not run.steps and run.deadline_ms is not None:
            run.deadline_ms = max(run.deadline_ms, run.lease_until_ms)
        return Lease(workflow_id, run_id, owner, run.token, run.lease_until_ms, ttl_ms)

    async def _renew_lease(self, lease: Lease) -> Lease:
        run = self._record(lease.workflow_id, lease.run_id)
        if run is None or self._holder(run) is None or run.token != lease.token:
            raise LeaseLostError(lease.workflow_id, lease.run_id, lease.token)
        run.lease_until_ms = self._clock() + lease.ttl_ms
        if not run.steps and run.deadline_ms is not None:
            run.deadline_ms = max(run.deadline_ms, run.lease_until_ms)
        return replace(lease, expires_at_ms=run.lease_until_ms)

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
                workflow_id, run_id, holder, run.token, run.lease_until_ms, run.lease_ttl_ms
            )
        return RunRecord(lease, None if run.note is None else orjson.loads(run.note))

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


def _expires_after(run: _Run, moment_ms: int) -> bool:
    """True when the run has a deadline and it is no earlier than ``moment_ms``."""
    return run.deadline_ms is not None and run.deadline_ms >= moment_ms


def _meta(fields: Stored) -> tuple[int, str]:
    return int(fields[TIMESTAMP_FIELD]), fields[LABEL_FIELD].decode("utf-8")
