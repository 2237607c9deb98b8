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
    cancel_requested: bool = False
    """Someone asked to cancel the run (:meth:`Checkpointer.cancel`), as the store knew
    when it granted or renewed this lease: the holder should stop, since its next save carrying
    the lease will be refused with :class:`~..errors.RunCancelledError`."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A human's answer to a paused run, kept in the run's record (see
    :meth:`Checkpointer.record_answer`): for the pause checkpointed at ``super_step``."""

    super_step: int
    value: JSON


QueueState = Literal["queued", "running", "paused", "completed", "failed", "blocked", "cancelled"]
"""Where a run stands in its workflow's ready queue (see :meth:`Checkpointer.claim`):

- ``queued``: waiting to be claimed (now, or from ``ready_at_ms`` on: a delayed run or a retry);
- ``running``: claimed by a worker, whose lease is in the deadline index;
- ``paused``: waiting for a human (:meth:`Checkpointer.requeue` with the answer queues it);
- ``completed``: done;
- ``failed``: out of attempts, a dead letter (:meth:`Checkpointer.requeue` submits it again);
- ``blocked``: parked because the workflow changed under it, until someone requeues it;
- ``cancelled``: stopped for good by :meth:`Checkpointer.cancel`."""

QUEUE_STATES: tuple[QueueState, ...] = (
    "queued",
    "running",
    "paused",
    "completed",
    "failed",
    "blocked",
    "cancelled",
)

Outcome = Literal["completed", "paused", "released", "retry", "failed", "blocked"]
"""How a worker ends its claim (:meth:`Checkpointer.finish`): the run ``completed``; it
``paused`` for a human; it was ``released`` unfinished (a graceful shutdown: claimable again at
once); its layer failed and it should ``retry`` (after a backoff, up to a number of attempts);
it ``failed`` for good (a dead letter at once); or it is ``blocked`` (the workflow changed)."""

OUTCOMES: tuple[Outcome, ...] = ("completed", "paused", "released", "retry", "failed", "blocked")


@dataclass(frozen=True, slots=True)
class QueueRecord:
    """A run's place in its workflow's queue, kept in the run's record."""

    state: QueueState
    attempts: int = 0
    """Failed claims so far (``finish(..., "retry")``): reset when requeued by hand."""
    ready_at_ms: int | None = None
    """For a queued run: when it becomes claimable (store clock)."""
    reason: JSON = None
    """Why it last failed or was blocked (what ``finish`` was given)."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What the store keeps about a run besides its snapshots: its live lease, a note, an answer
    waiting to be used and whether someone asked to cancel the run."""

    lease: Lease | None
    """The lease held on the run right now, or None (never held, released or expired)."""
    note: JSON
    """The note stored by the last :meth:`Checkpointer.release_lease` (None if none)."""
    answer: Answer | None = None
    """The last answer recorded by :meth:`Checkpointer.record_answer` (it applies only while the
    run's latest super-step is ``answer.super_step``)."""
    cancel_requested_at_ms: int | None = None
    """When :meth:`Checkpointer.cancel` was first called (store clock), or None."""
    queue: QueueRecord | None = None
    """The run's place in its workflow's queue; None for a run never submitted."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A run handed to a worker by :meth:`Checkpointer.claim`, under ``lease``."""

    lease: Lease
    """The run's lease; ``lease.cancel_requested`` when someone asked to cancel the run."""
    attempts: int
    """Failed claims of the run before this one."""
    taken_over: bool = False
    """The run was claimed before and its worker's lease expired (a crashed worker)."""


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """How many runs of a workflow are in each part of its queue (:meth:`queue_depth`)."""

    ready: int = 0
    """Queued and claimable now."""
    delayed: int = 0
    """Queued with a ready time in the future (``not_before``, or a retry's backoff)."""
    running: int = 0
    paused: int = 0
    failed: int = 0
    """Dead letters."""
    blocked: int = 0


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A live worker, as its last heartbeat described it (see :meth:`heartbeat`)."""

    worker_id: str
    info: JSON
    """What the worker said about itself (host, pid, workflows, the runs it holds...)."""
    expires_at_ms: int
    """When the worker counts as dead unless it beats again (store clock)."""


EventKind = Literal[
    "saved",
    "paused",
    "forked",
    "deleted",
    "queued",
    "claimed",
    "released",
    "lease_expired",
    "retrying",
    "failed",
    "blocked",
    "cancelled",
    "completed",
    "gap",
]
"""What happened to a run: a snapshot saved (``paused``: a snapshot that pauses the run for a
human), a fork made (the event is the new run's), or the run deleted. The queue adds: the run
``queued`` (submitted, resumed or requeued), ``claimed`` by a worker (label: the owner),
``released`` by it unfinished, its lease expired with it (``lease_expired``: a crashed worker,
claimable again), a failure that will be retried (``retrying``) or a dead letter (``failed``),
``blocked``, ``cancelled``, ``completed``. ``gap`` is no change: the watch itself says events
may have been missed just before it (Redis dropped the subscription, for a reader too slow or a
lost connection, and it was restored): re-read the store."""


@dataclass(frozen=True, slots=True)
class CheckpointEvent:
    """A notification that a run changed, published by the store as the change is made."""

    kind: EventKind
    workflow_id: str
    run_id: str
    """The run that changed (for ``gap``: the run watched, or ``""`` for a whole workflow)."""
    super_step: int | None
    """The snapshot saved or forked into; None for ``deleted`` and ``gap``."""
    label: str
    timestamp_ms: int
    """When it happened (the snapshot's timestamp, or the store's clock for ``deleted``)."""
    source_run_id: str | None = None
    """For ``forked``: the run the fork was made from."""

    def is_about(self, workflow_id: str, run_id: str | None = None) -> bool:
        """True for an event of the workflow (and of the run, if one is given)."""
        return self.workflow_id == workflow_id and run_id in (None, self.run_id)
