"""The in-memory checkpointer: the default store, with exactly the Redis store's semantics.

It keeps the same encoded fields the Redis store writes, so values are validated, copied and
decoded the same way, and it applies the same TTL and retention rules, against its own clock.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from ..errors import CheckpointConflictError, CheckpointNotFoundError
from .checkpointer import BaseCheckpointer, Fields, Stored
from .codec import LABEL_FIELD, TIMESTAMP_FIELD, pairs_of
from .types import CheckpointKey, now_ms
from .validation import check_positive_int, ttl_to_ms


@dataclass(slots=True)
class _Run:
    steps: dict[int, dict[bytes, bytes]] = field(default_factory=dict)
    deadline_ms: int | None = None


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

    def __repr__(self) -> str:
        return f"InMemoryCheckpointer(ttl_ms={self.ttl_ms}, keep_last={self.keep_last})"

    def _live_run(self, workflow_id: str, run_id: str) -> _Run | None:
        runs = self._workflows.get(workflow_id)
        run = None if runs is None else runs.get(run_id)
        if run is not None and run.deadline_ms is not None and run.deadline_ms <= self._clock():
            self._drop(workflow_id, run_id)
            return None
        return run

    def _drop(self, workflow_id: str, run_id: str) -> None:
        runs = self._workflows[workflow_id]
        del runs[run_id]
        if not runs:
            del self._workflows[workflow_id]

    def _new_run(self, workflow_id: str, run_id: str) -> _Run:
        deadline = None if self.ttl_ms is None else self._clock() + 2 * self.ttl_ms
        run = _Run(deadline_ms=deadline)
        self._workflows.setdefault(workflow_id, {})[run_id] = run
        return run

    async def _save(self, key: CheckpointKey, fields: Fields, *, exclusive: bool) -> None:
        run = self._live_run(key.workflow_id, key.run_id)
        if run is None:
            run = self._new_run(key.workflow_id, key.run_id)
        elif exclusive and key.super_step in run.steps:
            raise CheckpointConflictError(key.workflow_id, key.run_id, key.super_step)
        elif self.ttl_ms is not None:
            now = self._clock()
            if run.deadline_ms is None or run.deadline_ms - now < self.ttl_ms:
                run.deadline_ms = now + 2 * self.ttl_ms
        run.steps[key.super_step] = dict(pairs_of(list(fields)))
        if self.keep_last is not None and len(run.steps) > self.keep_last:
            for step in sorted(run.steps)[: len(run.steps) - self.keep_last]:
                del run.steps[step]

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

    async def _fork(self, from_key: CheckpointKey, new_run_id: str, fields: Fields) -> None:
        source = await self._load(from_key)
        if source is None:
            raise CheckpointNotFoundError(
                from_key.workflow_id, from_key.run_id, from_key.super_step
            )
        copy = dict(source)
        copy.update(pairs_of(list(fields)))
        self._new_run(from_key.workflow_id, new_run_id).steps[from_key.super_step] = copy

    async def _list_runs(
        self, workflow_id: str, *, limit: int, after: str | None
    ) -> builtins.list[str]:
        run_ids = sorted(
            run_id
            for run_id in builtins.list(self._workflows.get(workflow_id, {}))
            if (after is None or run_id > after) and self._live_run(workflow_id, run_id)
        )
        return run_ids[:limit]

    async def _delete_run(self, workflow_id: str, run_id: str) -> bool:
        if self._live_run(workflow_id, run_id) is None:
            return False
        self._drop(workflow_id, run_id)
        return True


def _meta(fields: Stored) -> tuple[int, str]:
    return int(fields[TIMESTAMP_FIELD]), fields[LABEL_FIELD].decode("utf-8")
