"""Seeing into runs: status summaries of stored runs, and OpenTelemetry instrumentation.

:mod:`.runs` needs nothing beyond the library. :mod:`.otel` needs the ``otel`` extra
(``pip install 'atomr-redis-state[otel]'``) and is imported only when one of its names is used:
importing this package costs nothing and loads no OpenTelemetry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .hooks import RunnerHooks
from .runs import STATES, is_fork, lineage_forks, summarise_run

if TYPE_CHECKING:
    from .otel import (
        InstrumentedCheckpointer,
        QueueDepthSampler,
        RunnerTelemetry,
        RunStatusSampler,
        instrument,
        instrument_runner,
    )

_OTEL_NAMES = frozenset(
    {
        "InstrumentedCheckpointer",
        "QueueDepthSampler",
        "RunnerTelemetry",
        "RunStatusSampler",
        "instrument",
        "instrument_runner",
    }
)

__all__ = [
    "STATES",
    "InstrumentedCheckpointer",
    "QueueDepthSampler",
    "RunStatusSampler",
    "RunnerHooks",
    "RunnerTelemetry",
    "instrument",
    "instrument_runner",
    "is_fork",
    "lineage_forks",
    "summarise_run",
]


def __getattr__(name: str) -> Any:
    if name in _OTEL_NAMES:
        from . import otel

        return getattr(otel, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
