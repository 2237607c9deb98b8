"""Output helpers: times, folded JSON values, JSON for scripts, the rich console."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
import orjson
from rich.console import Console

from ..graph.outcomes import RunStatus
from ..store.types import JSON, Snapshot

FOLD_AT = 400
"""Characters of a value shown before it is folded (``--full`` shows everything)."""

FOLD_LINES = 16
"""Lines of a pretty-printed value shown before it is folded."""


def console() -> Console:
    """A console on stdout that prints data as it is (no markup, no highlighting)."""
    return Console(highlight=False, soft_wrap=False)


def err_console() -> Console:
    return Console(stderr=True, highlight=False)


def when(timestamp_ms: int | None) -> str:
    """``2026-11-28 02:41:14.123`` (UTC), or ``-``."""
    if timestamp_ms is None:
        return "-"
    moment = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{timestamp_ms % 1000:03d}"


def compact(value: JSON) -> str:
    """``value`` as one line of JSON."""
    return orjson.dumps(value).decode()


def pretty(value: JSON) -> str:
    """``value`` as indented JSON."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def fold(text: str, *, full: bool, limit: int = FOLD_AT, lines: int = FOLD_LINES) -> str:
    """``text`` cut to ``limit`` characters and ``lines`` lines, saying how much was left out."""
    if full:
        return text
    kept = text
    split = kept.split("\n")
    if len(split) > lines:
        kept = "\n".join(split[:lines])
    kept = kept[:limit]
    if kept == text:
        return text
    return f"{kept}… ({len(text) - len(kept)} more characters of {len(text)}; --full shows all)"


def echo_json(document: Any) -> None:
    """Print ``document`` as one JSON document, for scripts."""
    click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())


def snapshot_json(snapshot: Snapshot) -> dict[str, JSON]:
    """A snapshot as a JSON object (channels in name order)."""
    key = snapshot.key
    return {
        "workflow_id": key.workflow_id,
        "run_id": key.run_id,
        "super_step": key.super_step,
        "label": snapshot.label,
        "timestamp_ms": snapshot.timestamp_ms,
        "values": dict(sorted(snapshot.values.items())),
        "metadata": snapshot.metadata,
    }


def status_json(status: RunStatus) -> dict[str, JSON]:
    """A :class:`RunStatus` as a JSON object."""
    pause = status.pause
    lease = status.lease
    error = status.last_error
    return {
        "run_id": status.run_id,
        "state": status.state,
        "super_step": status.super_step,
        "label": status.label,
        "updated_at_ms": status.updated_at_ms,
        "pause": None
        if pause is None
        else {
            "step": pause.step,
            "kind": pause.kind,
            "payload": pause.payload,
            "layer": pause.layer,
        },
        "lease": None
        if lease is None
        else {"owner": lease.owner, "expires_at_ms": lease.expires_at_ms, "token": lease.token},
        "last_error": None
        if error is None
        else {
            "step": error.step,
            "error_type": error.error_type,
            "message": error.message,
            "attempts": error.attempts,
            "super_step": error.super_step,
            "at_ms": error.at_ms,
        },
    }


def status_detail(status: RunStatus) -> str:
    """What a human wants to know beside the state: the pause, the failure, the lease."""
    parts = []
    if status.pause is not None:
        parts.append(f"paused at {status.pause.step} ({status.pause.kind})")
    if status.last_error is not None:
        e = status.last_error
        parts.append(f"{e.step} failed: {e.error_type} after {e.attempts} attempt(s)")
    if status.lease is not None:
        parts.append(f"leased by {status.lease.owner}")
    return "; ".join(parts)
