"""``archive``: move finished runs from the store (typically Redis) to a durable one."""

from __future__ import annotations

import logging
import re

import click
from rich.text import Text

from ..errors import LeaseHeldError
from ..observability.runs import all_runs, lineage_forks, summarise_run
from ..store.archive import archive as archive_run
from ..store.checkpointer import Checkpointer
from ..store.types import now_ms
from ..store.url import open_store
from .connection import options_of, run_with_store, safe_url, store_options
from .render import err_console, safe

log = logging.getLogger(__name__)

DEFAULT_STATES = ("completed", "failed")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration_ms(text: str) -> int:
    """``90``, ``90s``, ``15m``, ``1h``, ``2d``, ``1w`` (or ``500ms``) in milliseconds."""
    found = _DURATION.match(text)
    if found is None:
        raise click.BadParameter(f"{text!r} is not a duration like 30s, 15m, 1h or 7d")
    return int(float(found.group(1)) * _UNIT_MS[found.group(2) or "s"])


@click.command("archive")
@click.argument("workflow")
@click.argument("run", required=False)
@click.option(
    "--to",
    "target_url",
    required=True,
    metavar="URL",
    envvar="ATOMR_ARCHIVE_URL",
    show_envvar=True,
    help="The store to archive into: postgresql://..., sqlite:///path.db, or another Redis.",
)
@click.option(
    "--older-than",
    metavar="DURATION",
    help="Only runs whose latest checkpoint is at least this old (30s, 15m, 1h, 7d).",
)
@click.option(
    "--state",
    "states",
    default=",".join(DEFAULT_STATES),
    show_default=True,
    metavar="STATES",
    help="Only runs in these states (comma-separated; 'any' for every state).",
)
@click.option(
    "--keep-source",
    is_flag=True,
    help="Copy and verify, but leave the runs in the source store.",
)
@click.option(
    "--dry-run", is_flag=True, help="List the runs that would be archived (with their lineage)."
)
@store_options
def archive(
    workflow: str,
    run: str | None,
    target_url: str,
    older_than: str | None,
    states: str,
    keep_source: bool,
    dry_run: bool,
    url: str,
    prefix: str,
    cluster: bool,
) -> None:
    """Archive a run (with its forks), or every finished run of WORKFLOW, into --to.

    Each run is copied with its whole history, its note and its lineage (its source and forks,
    whatever their state), read back from the
    target and compared checkpoint by checkpoint, and only then deleted from the source. Runs a
    worker holds are skipped. Inspect archived runs with any command and --redis-url set to the
    target URL.
    """
    wanted = {s.strip() for s in states.split(",") if s.strip()}
    min_age_ms = None if older_than is None else parse_duration_ms(older_than)

    async def work(source: Checkpointer) -> tuple[int, int]:
        chosen = [run] if run is not None else await _finished(source, workflow, wanted, min_age_ms)
        if dry_run:
            lineages = [[each, *await lineage_forks(source, workflow, each)] for each in chosen]
            for each in dict.fromkeys(r for lineage in lineages for r in lineage):
                click.echo(safe(each))
            return 0, 0
        runs = checkpoints = 0
        done: set[str] = set()
        async with open_store(target_url) as target:
            for each in chosen:
                if each in done:
                    continue
                try:
                    moved = await archive_run(
                        source, target, workflow, each, delete_source=not keep_source
                    )
                except LeaseHeldError as exc:
                    log.warning("skipped run %s: %s", each, exc)
                    err_console().print(
                        Text(safe(f"skipped run {each!r}: a worker holds its lineage"))
                    )
                    continue
                done.update(m.run_id for m in moved)
                runs += len(moved)
                checkpoints += sum(m.checkpoints for m in moved)
        return runs, checkpoints

    runs, checkpoints = run_with_store(options_of(url, prefix, cluster), work)
    log.info("archived %d run(s), %d checkpoint(s), to %s", runs, checkpoints, safe_url(target_url))
    if not dry_run:
        err_console().print(
            f"archived {runs} run(s), {checkpoints} checkpoint(s), to {safe_url(target_url)}"
        )


async def _finished(
    store: Checkpointer, workflow: str, states: set[str], min_age_ms: int | None
) -> list[str]:
    """The runs in one of ``states``, old enough, that no worker holds."""
    now = now_ms()
    chosen = []
    async for run_id in all_runs(store, workflow):
        status = await summarise_run(store, workflow, run_id)
        if "any" not in states and status.state not in states:
            continue
        if status.lease is not None:
            continue
        updated = status.updated_at_ms or now
        if min_age_ms is not None and now - updated < min_age_ms:
            continue
        chosen.append(run_id)
    return chosen
