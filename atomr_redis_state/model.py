"""The model types: checkpoint keys, snapshots, their metadata, and id helpers."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TypeAlias

JSON: TypeAlias = "bool | int | float | str | list[JSON] | dict[str, JSON] | None"
"""A strict JSON value: what a channel may hold."""

MAX_SUPER_STEP = 2**53 - 1
"""Super-steps are sorted-set scores (IEEE doubles), exact up to 2**53 - 1."""

FORK_MARKER = "~fork-"
"""Separates a fork's lineage root from its own suffix in the run ids :meth:`fork` makes."""


def now_ms() -> int:
    """Wall-clock time in milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def new_run_id() -> str:
    """A fresh run id, ``run-<uuid4>``."""
    return f"run-{uuid.uuid4()}"


def new_workflow_id() -> str:
    """A fresh workflow id, ``wf-<uuid4>``."""
    return f"wf-{uuid.uuid4()}"


def lineage_root(run_id: str) -> str:
    """The run a run was (transitively) forked from: itself when it is no fork."""
    return run_id.partition(FORK_MARKER)[0]


def fork_run_id(source_run_id: str) -> str:
    """A new run id for a fork of ``source_run_id``, keeping its lineage root.

    Runs of one lineage share a Redis Cluster slot, which keeps ``fork`` one atomic script.
    """
    return f"{lineage_root(source_run_id)}{FORK_MARKER}{uuid.uuid4().hex}"


def check_id(value: object, what: str) -> str:
    """Validate a workflow or run id: a non-empty string that encodes as UTF-8."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    _check_utf8(value, what)
    return value


def check_super_step(value: object) -> int:
    """Validate a super-step: an int (not a bool) in 0..2**53-1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"super_step must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"super_step must be >= 0, got {value}")
    if value > MAX_SUPER_STEP:
        raise ValueError(f"super_step must be <= {MAX_SUPER_STEP}, got {value}")
    return value


def check_text(value: object, what: str) -> str:
    """Validate free text such as a label: a string that encodes as UTF-8."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    _check_utf8(value, what)
    return value


def _check_utf8(value: str, what: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid unicode (lone surrogate): {value!r}") from None


def ttl_to_ms(ttl: float | timedelta | None) -> int | None:
    """Normalise a ``ttl=`` option (seconds or timedelta) to whole milliseconds, or None."""
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, int | float) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise TypeError(f"ttl must be seconds or a timedelta, not {type(ttl).__name__}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"ttl must be a positive duration, got {ttl!r}")
    return max(1, round(seconds * 1000))


def check_positive_int(value: object, what: str) -> int:
    """Validate an option such as ``keep_last`` or ``limit``: an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{what} must be >= 1, got {value}")
    return value


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

    def __post_init__(self) -> None:
        if not isinstance(self.key, CheckpointKey):
            raise TypeError(f"key must be a CheckpointKey, not {type(self.key).__name__}")
        if not isinstance(self.values, dict):
            raise TypeError(f"values must be a dict, not {type(self.values).__name__}")
        check_text(self.label, "label")
        ts = self.timestamp_ms
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise TypeError(f"timestamp_ms must be an int, not {type(ts).__name__}")
        if ts < 0:
            raise ValueError(f"timestamp_ms must be >= 0, got {ts}")

    @property
    def meta(self) -> CheckpointMeta:
        k = self.key
        return CheckpointMeta(k.workflow_id, k.run_id, k.super_step, self.timestamp_ms, self.label)
