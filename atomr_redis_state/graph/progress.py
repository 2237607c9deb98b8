"""The runner's own record: kept in each checkpoint's metadata, and in the run's note on failure.

Every snapshot the runner saves carries, in ``Snapshot.metadata["runner"]`` (never among the
user's channels), where the run stands: the steps merged so far, by name, the workflow's
fingerprint, and for a paused run the pause and the writes of the steps that finished before
it. It lives in the store, never in a worker's memory, so any worker can pick a run up, and a
fork carries its source's progress. When a layer fails, the writes of the steps that finished
are left in the run's note (:meth:`Checkpointer.release_lease`), so a retry runs only the rest.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

import orjson

from ..errors import AtomrStateError
from ..store.checkpointer import Checkpointer
from ..store.types import JSON
from .outcomes import KINDS, Pause, PauseKind, RunStatus, RunStatusState, StepFailure
from .steps import Step

RECORD_KEY = "runner"
"""The key of the runner's record in ``Snapshot.metadata``."""

Pending = dict[str, list[tuple[str, object]]]
"""The writes of steps that finished in a layer that did not complete, by step name."""

Status = Literal["running", "paused", "completed"]


def fingerprint(steps: Sequence[Sequence[Step]]) -> str:
    """A short hash of the workflow's shape: its step names and their dependencies."""
    shape = sorted((s.name, sorted(s.depends_on)) for layer in steps for s in layer)
    return hashlib.sha256(orjson.dumps(shape)).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a run stands at one checkpoint."""

    workflow: str
    """The fingerprint of the workflow that saved it."""
    done: tuple[str, ...] = ()
    """The steps whose writes are merged into this checkpoint, in the order they were merged."""
    status: Status = "running"
    pause: Pause | None = None
    pending: Pending = field(default_factory=dict)
    pause_after: str | None = None
    """This layer checkpoint is owed an ``interrupt_after`` pause at the next super-step."""

    def encode(self) -> dict[str, JSON]:
        record: dict[str, JSON] = {
            "workflow": self.workflow,
            "done": list(self.done),
            "status": self.status,
        }
        if self.pause is not None:
            p = self.pause
            record["pause"] = {
                "step": p.step,
                "kind": p.kind,
                "payload": p.payload,
                "layer": p.layer,
            }
        if self.pending:
            record["pending"] = encode_pending(self.pending)
        if self.pause_after is not None:
            record["pause_after"] = self.pause_after
        return record

    @classmethod
    def decode(cls, metadata: Mapping[str, JSON], super_step: int) -> Progress | None:
        """The record in a snapshot's metadata; None when the runner did not save it."""
        record = metadata.get(RECORD_KEY)
        if record is None:
            return None
        try:
            return cls._decode(record)
        except (KeyError, TypeError, ValueError) as exc:
            raise AtomrStateError(
                f"super-step {super_step} has a malformed runner record: {exc}"
            ) from exc

    @classmethod
    def _decode(cls, record: JSON) -> Progress:
        if not isinstance(record, dict):
            raise TypeError(f"expected an object, got {record!r}")
        raw_pause = record.get("pause")
        pause = None
        if raw_pause is not None:
            if not isinstance(raw_pause, dict) or raw_pause.get("kind") not in KINDS:
                raise ValueError(f"bad pause {raw_pause!r}")
            pause = Pause(
                _text(raw_pause["step"]),
                cast(PauseKind, raw_pause["kind"]),
                raw_pause.get("payload"),
                _count(raw_pause["layer"]),
            )
        status = record.get("status")
        if status not in ("running", "paused", "completed"):
            raise ValueError(f"bad status {status!r}")
        done = record["done"]
        if not isinstance(done, list):
            raise TypeError(f"bad done steps {done!r}")
        after = record.get("pause_after")
        return cls(
            _text(record["workflow"]),
            tuple(_text(name) for name in done),
            cast(Status, status),
            pause,
            decode_pending(record.get("pending")),
            None if after is None else _text(after),
        )


@dataclass(frozen=True, slots=True)
class FailureNote:
    """What a failed layer leaves in the run's note: the failure, and the finished writes."""

    failure: StepFailure
    pending: Pending
    attempts: dict[str, int]
    """Attempts made so far per step of the layer that did not finish."""

    def encode(self) -> dict[str, JSON]:
        f = self.failure
        return {
            "failed": {
                "super_step": f.super_step,
                "step": f.step,
                "error_type": f.error_type,
                "message": f.message,
                "attempts": f.attempts,
                "at_ms": f.at_ms,
            },
            "pending": encode_pending(self.pending),
            "attempts": cast(JSON, self.attempts),
        }

    @classmethod
    def decode(cls, note: JSON) -> FailureNote | None:
        """The failure in a run's note, or None for any other note (or a malformed one)."""
        if not isinstance(note, dict) or not isinstance(note.get("failed"), dict):
            return None
        try:
            raw = cast(dict[str, JSON], note["failed"])
            failure = StepFailure(
                _text(raw["step"]),
                _text(raw["error_type"]),
                _text(raw["message"]),
                _count(raw["super_step"]),
                _count(raw["attempts"]),
                _count(raw["at_ms"]),
            )
            attempts = note.get("attempts") or {}
            if not isinstance(attempts, dict):
                raise TypeError("bad attempts")
            return cls(
                failure,
                decode_pending(note.get("pending")),
                {_text(k): _count(v) for k, v in attempts.items()},
            )
        except (KeyError, TypeError, ValueError):
            return None


async def run_status(
    store: Checkpointer, workflow_id: str, run_id: str, *, lenient: bool = False
) -> RunStatus:
    """Where a run stands, from the store alone: the runner's record in its latest checkpoint,
    the failure note and the lease in the run's record (no workflow definition needed).

    A run whose latest checkpoint has no runner record is ``running`` unless a failure stopped
    it. A malformed record raises :class:`AtomrStateError`, or with ``lenient`` (operator tools
    that look at any run) counts as no record.
    """
    snapshot, record = await asyncio.gather(
        store.latest(workflow_id, run_id), store.run_record(workflow_id, run_id)
    )
    if snapshot is None:
        return RunStatus(workflow_id, run_id, "not_found", lease=record.lease)
    step = snapshot.key.super_step
    try:
        progress = Progress.decode(snapshot.metadata, step)
    except AtomrStateError:
        if not lenient:
            raise
        progress = None
    note = FailureNote.decode(record.note)
    error = note.failure if note is not None and note.failure.super_step == step else None
    pause = None if progress is None else progress.pause
    state: RunStatusState
    if pause is not None:
        state = "paused"
    elif error is not None and record.lease is None:
        state = "failed"
    elif progress is not None and progress.status == "completed":
        state = "completed"
    else:
        state = "running"
    queue = record.queue
    if queue is not None and queue.state in ("queued", "failed", "blocked", "cancelled"):
        state = queue.state  # the fleet's word on a run no worker holds
    return RunStatus(
        workflow_id,
        run_id,
        state,
        step,
        snapshot.label,
        snapshot.timestamp_ms,
        pause,
        record.lease,
        error,
        queue,
    )


def encode_pending(pending: Pending) -> JSON:
    return {
        step: [[channel, cast(JSON, value)] for channel, value in writes]
        for step, writes in pending.items()
    }


def decode_pending(raw: JSON) -> Pending:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise TypeError(f"bad pending writes {raw!r}")
    return {
        step: [(_text(pair[0]), pair[1]) for pair in _pairs(writes)] for step, writes in raw.items()
    }


def _count(value: JSON) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a count, got {value!r}")
    return value


def _text(value: JSON) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a str, got {value!r}")
    return value


def _pairs(writes: JSON) -> list[list[JSON]]:
    if not isinstance(writes, list):
        raise TypeError(f"expected a list of writes, got {writes!r}")
    pairs: list[list[JSON]] = []
    for pair in writes:
        if not isinstance(pair, list) or len(pair) != 2:
            raise ValueError(f"expected a [channel, value] pair, got {pair!r}")
        pairs.append(pair)
    return pairs
