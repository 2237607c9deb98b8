"""The store's types: checkpoint keys, snapshots and their metadata."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from .validation import check_id, check_super_step, check_text, check_timestamp_ms

JSON: TypeAlias = "bool | int | float | str | list[JSON] | dict[str, JSON] | None"
"""A strict JSON value: what a channel may hold."""


def now_ms() -> int:
    """Wall-clock time in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class CheckpointKey:
    """Where a snapshot lives: one super-step of one run of one workflow."""

    workflow_id: str
    run_id: str
    super_step: int

    def __post_init__(self) -> None:
        check_id(self.workflow_id, "workflow_id")
        check_id(self.run_id, "run_id")
        check_super_step(self.super_step)


@dataclass(frozen=True, slots=True)
class CheckpointMeta:
    """What :meth:`Checkpointer.list` reports of a snapshot: its key, time and label."""

    workflow_id: str
    run_id: str
    super_step: int
    timestamp_ms: int
    label: str = ""

    @property
    def key(self) -> CheckpointKey:
        return CheckpointKey(self.workflow_id, self.run_id, self.super_step)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state of a run after one super-step: channel name -> JSON value."""

    key: CheckpointKey
    values: dict[str, JSON]
    label: str = ""
    timestamp_ms: int = field(default_factory=now_ms)
    metadata: dict[str, JSON] = field(default_factory=dict)
    """Bookkeeping kept beside the channels, never mixed into ``values`` (the runner keeps its
    progress here); copied by ``fork`` with the rest of the snapshot."""

    def __post_init__(self) -> None:
        if not isinstance(self.key, CheckpointKey):
            raise TypeError(f"key must be a CheckpointKey, not {type(self.key).__name__}")
        if not isinstance(self.values, dict):
            raise TypeError(f"values must be a dict, not {type(self.values).__name__}")
        if not isinstance(self.metadata, dict):
            raise TypeError(f"metadata must be a dict, not {type(self.metadata).__name__}")
        check_text(self.label, "label")
        check_timestamp_ms(self.timestamp_ms)

    @property
    def meta(self) -> CheckpointMeta:
        k = self.key
        return CheckpointMeta(k.workflow_id, k.run_id, k.super_step, self.timestamp_ms, self.label)


@dataclass(frozen=True, slots=True)
class Lease:
    """A worker's exclusive, expiring claim on a run (see :meth:`Checkpointer.acquire_lease`).

    ``token`` is the fencing token: it grows with every new acquisition of the run, so a save
    carrying an older token (a worker that lost its lease) is refused by the store itself.
    ``expires_at_ms`` is on the store's clock (the Redis server's ``TIME``).
    """

    workflow_id: str
    run_id: str
    owner: str
    token: int
    expires_at_ms: int
    ttl_ms: int


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What the store keeps about a run besides its snapshots: its live lease and a note."""

    lease: Lease | None
    """The lease held on the run right now, or None (never held, released or expired)."""
    note: JSON
    """The note stored by the last :meth:`Checkpointer.release_lease` (None if none)."""


EventKind = Literal["saved", "paused", "forked", "deleted"]
"""What happened to a run: a snapshot saved (``paused``: a snapshot that pauses the run for a
human), a fork made (the event is the new run's), or the run deleted."""


@dataclass(frozen=True, slots=True)
class CheckpointEvent:
    """A notification that a run changed, published by the store as the change is made."""

    kind: EventKind
    workflow_id: str
    run_id: str
    super_step: int | None
    """The snapshot saved or forked into; None for ``deleted``."""
    label: str
    timestamp_ms: int
    """When it happened (the snapshot's timestamp, or the store's clock for ``deleted``)."""
    source_run_id: str | None = None
    """For ``forked``: the run the fork was made from."""

    def is_about(self, workflow_id: str, run_id: str | None = None) -> bool:
        """True for an event of the workflow (and of the run, if one is given)."""
        return self.workflow_id == workflow_id and run_id in (None, self.run_id)
