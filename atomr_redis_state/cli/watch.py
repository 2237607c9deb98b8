"""``watch``: a live tail of a workflow's (or a run's) checkpoints, as any worker saves them."""

from __future__ import annotations

import asyncio
import contextlib

import click
import orjson

from ..store.checkpointer import Checkpointer
from ..store.types import CheckpointEvent
from ..views import escape_json, event_json
from .connection import options_of, run_with_store, store_options
from .render import safe, when

_STYLES = {
    "saved": "blue",
    "paused": "yellow",
    "forked": "cyan",
    "deleted": "red",
    "gap": "magenta",
}


@click.command()
@click.argument("workflow")
@click.argument("run", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per event.")
@click.option(
    "--count",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop after N events.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop after SECONDS (exit status 0).",
)
@store_options
def watch(
    workflow: str,
    run: str | None,
    as_json: bool,
    count: int | None,
    timeout: float | None,
    url: str,
    prefix: str,
    cluster: bool,
) -> None:
    """Print checkpoints of a workflow (or of RUN) as they are saved, by any worker.

    Saves, pauses, forks and deletions, from the moment it starts (until Ctrl-C, --count
    or --timeout). It is a live tail, not a log: read `history` for what came before. A
    `gap` line says Redis dropped the subscription (a reader too slow, a lost connection)
    and events may be missing there: read `runs`/`history` again.
    """
    scope = f"workflow {workflow!r}" if run is None else f"run {run!r} of workflow {workflow!r}"

    async def work(store: Checkpointer) -> None:
        async with store.watch(workflow, run) as events:
            click.echo(safe(f"watching {scope} (Ctrl-C to stop)"), err=True)
            seen = 0
            async for event in events:
                click.echo(_json(event) if as_json else _line(event))
                if event.kind == "gap":
                    continue  # not a change: it does not count towards --count
                seen += 1
                if count is not None and seen >= count:
                    return

    async def bounded(store: Checkpointer) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(work(store), timeout)

    try:
        run_with_store(options_of(url, prefix, cluster), work if timeout is None else bounded)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)


GAP_TEXT = (
    "events may be missing here: Redis dropped the subscription and it was restored "
    "(read runs or history for what changed)"
)


def _line(event: CheckpointEvent) -> str:
    kind = click.style(f"{event.kind:<7}", fg=_STYLES.get(event.kind))
    if event.kind == "gap":
        return "  ".join([when(event.timestamp_ms), kind, GAP_TEXT])
    parts = [when(event.timestamp_ms), kind, safe(event.run_id)]
    if event.super_step is not None:
        parts.append(f"step {event.super_step}")
    if event.label:
        parts.append(safe(event.label))
    if event.source_run_id is not None:
        parts.append(f"(from {safe(event.source_run_id)})")
    return "  ".join(parts)


def _json(event: CheckpointEvent) -> str:
    return escape_json(orjson.dumps(event_json(event)).decode())
