"""``export`` and ``import``: runs as JSON Lines, restored exactly elsewhere.

The file starts with a header line, then one line per checkpoint (``"type": "checkpoint"``: its
key, label, timestamp, channels and metadata, runs in id order, steps ascending), and a
``"type": "note"`` line after a run whose record holds a note (a failed layer's). Nothing in it
depends on when or where it was exported: export, import elsewhere and export again give the
same bytes.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click
import orjson
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import RunNotFoundError
from ..observability.runs import all_runs, lineage_forks
from ..store.checkpointer import Checkpointer
from ..store.types import JSON, CheckpointKey, Snapshot
from .connection import options_of, run_with_store, store_options
from .render import err_console

log = logging.getLogger(__name__)

FORMAT = "atomr-redis-state/checkpoints"
VERSION = 1
HEADER: dict[str, JSON] = {"format": FORMAT, "version": VERSION}
IMPORT_OWNER = "atomr-redis-state-import"
"""The lease owner that import briefly takes to restore a run's note."""
PROGRESS_FROM = 2
"""Show a progress bar (on a terminal) from this many runs or checkpoints."""


def _progress(total: int, what: str) -> Progress:
    console = err_console()
    return Progress(
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal or total < PROGRESS_FROM,
    )


@click.command()
@click.argument("workflow")
@click.argument("run", required=False)
@click.option(
    "--forks",
    is_flag=True,
    help="With RUN: also export the other runs of its lineage (its forks, their forks).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=str),
    default="-",
    show_default=True,
    help="Write to this file ('-': standard output).",
)
@store_options
def export(
    workflow: str,
    run: str | None,
    forks: bool,
    output: str,
    url: str,
    prefix: str,
    cluster: bool,
) -> None:
    """Export a run, or every run of a workflow (forks included), as JSON Lines."""
    if forks and run is None:
        raise click.UsageError("--forks needs a RUN (a whole workflow includes its forks)")

    async def work(store: Checkpointer) -> tuple[int, int]:
        if run is not None:
            if not await store.list(workflow, run, limit=1):
                raise RunNotFoundError(workflow, run)
            run_ids = [run]
            if forks:
                run_ids = sorted({run, *await lineage_forks(store, workflow, run)})
        else:
            run_ids = [run_id async for run_id in all_runs(store, workflow)]
        with _opened(output) as sink:
            sink.write(orjson.dumps(HEADER) + b"\n")
            checkpoints = 0
            exported = 0
            with _progress(len(run_ids), "exporting runs") as bar:
                task = bar.add_task("export", total=len(run_ids))
                for run_id in run_ids:
                    written = await _export_run(store, workflow, run_id, sink)
                    checkpoints += written
                    exported += written > 0
                    bar.advance(task)
        return exported, checkpoints

    exported, checkpoints = run_with_store(options_of(url, prefix, cluster), work)
    log.info("exported %d checkpoint(s) of %d run(s) of %s", checkpoints, exported, workflow)
    err_console().print(f"exported {checkpoints} checkpoint(s) of {exported} run(s)")


async def _export_run(store: Checkpointer, workflow: str, run_id: str, sink: IO[bytes]) -> int:
    """Write the run's checkpoints and note; how many checkpoints (0 if it vanished)."""
    written = 0
    for meta in await store.list(workflow, run_id):
        snapshot = await store.load(meta.key)
        if snapshot is None:  # trimmed or deleted since the listing
            continue
        sink.write(orjson.dumps(_checkpoint_line(snapshot)) + b"\n")
        written += 1
    if written:
        note = (await store.run_record(workflow, run_id)).note
        if note is not None:
            line = {"type": "note", "workflow_id": workflow, "run_id": run_id, "note": note}
            sink.write(orjson.dumps(line) + b"\n")
    return written


def _checkpoint_line(snapshot: Snapshot) -> dict[str, JSON]:
    key = snapshot.key
    return {
        "type": "checkpoint",
        "workflow_id": key.workflow_id,
        "run_id": key.run_id,
        "super_step": key.super_step,
        "label": snapshot.label,
        "timestamp_ms": snapshot.timestamp_ms,
        # Channels in name order: Redis does not keep a hash's field order.
        "values": dict(sorted(snapshot.values.items())),
        "metadata": snapshot.metadata,
    }


@contextmanager
def _opened(output: str) -> Iterator[IO[bytes]]:
    if output == "-":
        stream = sys.stdout.buffer
        yield stream
        stream.flush()
        return
    with open(output, "wb") as sink:
        yield sink


@dataclass(frozen=True, slots=True)
class _Line:
    number: int
    checkpoint: Snapshot | None = None
    note: tuple[str, str, JSON] | None = None


@click.command("import")
@click.argument(
    "source", type=click.Path(dir_okay=False, allow_dash=True, path_type=str), default="-"
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace runs that already exist in the target (deleted first, then restored).",
)
@click.option(
    "--ttl",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Let the imported runs expire like a store with this ttl (default: never).",
)
@store_options
def import_(
    source: str,
    overwrite: bool,
    ttl: float | None,
    url: str,
    prefix: str,
    cluster: bool,
) -> None:
    """Import runs exported with ``export`` (a file, or '-' for standard input).

    Checkpoints come back exactly: channels, labels, timestamps, metadata, super-steps, and a
    failed run's note. A run that already has checkpoints in the target is refused unless
    --overwrite. Use --prefix or --redis-url to import somewhere else.
    """
    with _seekable(source) as stream:
        runs, checkpoints = _check(stream, source)

        async def work(store: Checkpointer) -> None:
            existing = [r for r in runs if await store.list(r[0], r[1], limit=1)]
            if existing and not overwrite:
                workflow, run_id = existing[0]
                others = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
                raise click.ClickException(
                    f"run {run_id!r} of workflow {workflow!r} already exists in the target"
                    f"{others}; pass --overwrite to replace"
                )
            for workflow, run_id in existing:
                await store.delete_run(workflow, run_id)
            notes: list[tuple[str, str, JSON]] = []
            stream.seek(0)
            with _progress(checkpoints, "importing checkpoints") as bar:
                task = bar.add_task("import", total=checkpoints)
                for line in _lines(stream, source):
                    if line.checkpoint is not None:
                        await store.save(line.checkpoint)
                        bar.advance(task)
                    elif line.note is not None:
                        notes.append(line.note)
            for workflow, run_id, note in notes:
                lease = await store.acquire_lease(workflow, run_id, IMPORT_OWNER, 30)
                await store.release_lease(lease, note=note)

        run_with_store(options_of(url, prefix, cluster, ttl), work, writes=True)
    log.info("imported %d checkpoint(s) of %d run(s)", checkpoints, len(runs))
    err_console().print(f"imported {checkpoints} checkpoint(s) of {len(runs)} run(s)")


@contextmanager
def _seekable(source: str) -> Iterator[IO[bytes]]:
    """The source as a binary file that can be read twice (standard input is spooled)."""
    if source != "-":
        try:
            with Path(source).open("rb") as stream:
                yield stream
        except OSError as exc:
            raise click.ClickException(f"cannot read {source}: {exc.strerror}") from None
        return
    with tempfile.TemporaryFile() as spool:
        shutil.copyfileobj(sys.stdin.buffer, spool)
        spool.seek(0)
        yield spool


def _check(stream: IO[bytes], source: str) -> tuple[dict[tuple[str, str], None], int]:
    """Validate every line before anything is written: the runs, and how many checkpoints."""
    runs: dict[tuple[str, str], None] = {}
    checkpoints = 0
    for line in _lines(stream, source):
        if line.checkpoint is not None:
            key = line.checkpoint.key
            runs[(key.workflow_id, key.run_id)] = None
            checkpoints += 1
        elif line.note is not None and (line.note[0], line.note[1]) not in runs:
            raise click.ClickException(
                f"{_name(source)}:{line.number}: a note for a run with no checkpoint before it"
            )
    return runs, checkpoints


def _lines(stream: IO[bytes], source: str) -> Iterator[_Line]:
    header_seen = False
    for number, raw in enumerate(stream, start=1):
        if not raw.strip():
            continue
        where = f"{_name(source)}:{number}"
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise click.ClickException(f"{where}: not JSON ({exc})") from None
        if not isinstance(document, dict):
            raise click.ClickException(f"{where}: expected a JSON object")
        if not header_seen:
            if document.get("format") != FORMAT:
                raise click.ClickException(f"{where}: not an atomr-redis-state export")
            if document.get("version") != VERSION:
                raise click.ClickException(
                    f"{where}: export version {document.get('version')!r} is not supported"
                )
            header_seen = True
            continue
        try:
            yield _parse(number, document)
        except (KeyError, TypeError, ValueError) as exc:
            raise click.ClickException(f"{where}: bad {document.get('type')} line: {exc}") from None
    if not header_seen:
        raise click.ClickException(f"{_name(source)}: empty, not an atomr-redis-state export")


def _parse(number: int, document: dict[str, Any]) -> _Line:
    kind = document.get("type")
    if kind == "checkpoint":
        key = CheckpointKey(document["workflow_id"], document["run_id"], document["super_step"])
        snapshot = Snapshot(
            key,
            document["values"],
            document["label"],
            document["timestamp_ms"],
            document["metadata"],
        )
        return _Line(number, checkpoint=snapshot)
    if kind == "note":
        workflow, run_id = document["workflow_id"], document["run_id"]
        if not isinstance(workflow, str) or not isinstance(run_id, str):
            raise TypeError("workflow_id and run_id must be strings")
        return _Line(number, note=(workflow, run_id, document["note"]))
    raise ValueError(f"unknown line type {kind!r}")


def _name(source: str) -> str:
    return "<stdin>" if source == "-" else source
