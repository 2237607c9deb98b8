"""Where a run stands: what :meth:`StatefulRunner.run` reports, and what each snapshot records.

Every snapshot the runner saves holds, besides the user's channels, one reserved channel,
``__runner__``, with the run's progress: the next layer to run and, for a paused run, the pause
and the writes of the steps that finished before it. Progress lives in the snapshot, never in a
worker's memory, so any worker can pick a run up, and a fork carries its source's progress.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from ..errors import AtomrStateError
from ..store.types import JSON
from .outcomes import KINDS, Pause, PauseKind

RUNNER_CHANNEL = "__runner__"
"""The reserved channel holding the runner's progress in every snapshot it saves."""

Pending = dict[str, list[tuple[str, object]]]
"""The writes of the steps of a paused layer that already finished, by step name."""


@dataclass(frozen=True, slots=True)
class Progress:
    """The runner's record in one snapshot (the ``__runner__`` channel)."""

    next_layer: int
    """Layers below this one are merged into the snapshot's values."""
    pause: Pause | None = None
    pending: Pending = field(default_factory=dict)
    pause_after: str | None = None
    """This layer checkpoint is owed an ``interrupt_after`` pause at the next super-step."""

    def encode(self) -> JSON:
        record: dict[str, JSON] = {"next_layer": self.next_layer}
        if self.pause is not None:
            p = self.pause
            record["pause"] = {
                "step": p.step,
                "kind": p.kind,
                "payload": p.payload,
                "layer": p.layer,
            }
        if self.pending:
            record["pending"] = {
                step: [[channel, cast(JSON, value)] for channel, value in writes]
                for step, writes in self.pending.items()
            }
        if self.pause_after is not None:
            record["pause_after"] = self.pause_after
        return record

    @classmethod
    def decode(cls, record: JSON, super_step: int) -> Progress:
        """Read a ``__runner__`` record; a snapshot without one is at layer ``super_step``."""
        if record is None:
            return cls(next_layer=super_step)
        try:
            return cls._decode(record)
        except (KeyError, TypeError, ValueError) as exc:
            raise AtomrStateError(
                f"super-step {super_step} has a malformed {RUNNER_CHANNEL!r} channel: {exc}"
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
        raw_pending = record.get("pending") or {}
        if not isinstance(raw_pending, dict):
            raise TypeError(f"bad pending writes {raw_pending!r}")
        pending: Pending = {
            step: [(_text(pair[0]), pair[1]) for pair in _pairs(writes)]
            for step, writes in raw_pending.items()
        }
        after = record.get("pause_after")
        return cls(
            _count(record["next_layer"]),
            pause,
            pending,
            None if after is None else _text(after),
        )


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
