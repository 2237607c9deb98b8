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
from ..store.ids import FORK_LABEL
from ..store.types import JSON, Answer
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
    origins: dict[str, int] = field(default_factory=dict)
    """For each step of an interrupted layer that has not finished (it failed or paused), the
    super-step its layer first ran from: it runs again with that ``super_step`` in its context,
    so ``(run_id, super_step, step)`` names it however many checkpoints come in between."""
    resumes: dict[str, JSON] = field(default_factory=dict)
    """Steps still owed a resume value (an answer), and the value: kept in the checkpoints of
    layers that run first (steps added to an earlier layer by a deploy)."""

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
        if self.origins:
            record["origins"] = cast(JSON, self.origins)
        if self.resumes:
            record["resumes"] = self.resumes
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
        resumes = record.get("resumes") or {}
        if not isinstance(resumes, dict):
            raise TypeError(f"bad resumes {resumes!r}")
        return cls(
            _text(record["workflow"]),
            tuple(_text(name) for name in done),
            cast(Status, status),
            pause,
            decode_pending(record.get("pending")),
            None if after is None else _text(after),
            decode_origins(record.get("origins")),
            resumes,
        )


@dataclass(frozen=True, slots=True)
class FailureNote:
    """What a failed layer leaves in the run's note: the failure, and the finished writes."""

    failure: StepFailure
    pending: Pending
    attempts: dict[str, int]
    """Attempts made so far per step of the layer that did not finish."""
    origins: dict[str, int] = field(default_factory=dict)
    """The super-step each unfinished step first ran from (see :attr:`Progress.origins`)."""

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
            "origins": cast(JSON, self.origins),
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
                decode_origins(note.get("origins")),
            )
        except (KeyError, TypeError, ValueError):
            return None


async def run_status(
    store: Checkpointer, workflow_id: str, run_id: str, *, lenient: bool = False
) -> RunStatus:
    """Where a run stands, from the store alone: the runner's record in its latest checkpoint,
    the failure note and the lease in the run's record (no workflow definition needed).

    A run that is not paused, failed or completed is ``running`` while a worker holds its
    lease, and otherwise (see :func:`unleased_state`) ``stalled``, ``forked`` or ``idle``; a run
    of the fleet's queue that no worker holds is as the queue says: ``queued`` (a retry waiting
    for its time, or an answered pause), ``failed`` (a dead letter), ``blocked`` or
    ``cancelled``; a failed attempt of a fleet run is ``stalled`` until the queue settles it.
    A malformed record raises :class:`AtomrStateError`, or with ``lenient`` (operator tools
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
    # A pause with an answer recorded for it waits for a worker, not for a human.
    answered = pause is not None and answer_for(record.answer, step, pause) is not None
    state: RunStatusState
    if progress is not None and progress.status == "completed":
        state = "completed"
    elif record.cancel_requested_at_ms is not None and record.lease is None:
        state = "cancelled"
    elif pause is not None and not answered:
        state = "paused"
    elif error is not None and record.lease is None:
        state = "failed"
    elif record.lease is not None:
        state = "running"
    else:
        state = unleased_state(snapshot.label, progress)
    queue = record.queue
    waiting = ("queued", "failed", "blocked", "cancelled")
    if (
        queue is not None
        and queue.state in waiting
        and record.lease is None
        and state != "completed"
    ):
        state = queue.state  # the fleet's word on a run no worker holds
    elif queue is not None and queue.state == "running" and state == "failed":
        # A failed attempt its worker is about to settle (or died settling): the fleet retries
        # it or takes it over; only the queue calls a fleet run failed (a dead letter).
        state = "stalled"
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


def answer_for(answer: Answer | None, super_step: int, pause: Pause) -> Answer | None:
    """The recorded ``answer`` if it answers ``pause``, checkpointed at ``super_step``: a pause
    before or inside a step (an ``interrupt_after`` pause takes no answer)."""
    if answer is None or answer.super_step != super_step or pause.kind == "after":
        return None
    return answer


def unleased_state(label: str, progress: Progress | None) -> RunStatusState:
    """The state of a run that nobody holds and that is neither paused, failed nor completed:

    - ``forked``: its latest checkpoint is the copy ``fork`` made; no worker has run it yet;
    - ``idle``: its latest checkpoint has no runner record (written with plain ``save``), so
      nothing says whether more is to come;
    - ``stalled``: the runner was mid-way and no worker holds the run (its worker died, lost
      its lease, or was stopped); ``run()`` on any worker takes it over.
    """
    if label.startswith(FORK_LABEL):
        return "forked"
    if progress is None:
        return "idle"
    return "stalled"


def encode_pending(pending: Pending) -> JSON:
    return {
        step: [[channel, cast(JSON, value)] for channel, value in writes]
        for step, writes in pending.items()
    }


def decode_origins(raw: JSON) -> dict[str, int]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise TypeError(f"bad origins {raw!r}")
    return {step: _count(super_step) for step, super_step in raw.items()}


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
