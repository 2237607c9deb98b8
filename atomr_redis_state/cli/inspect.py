"""Inspection commands: ``runs``, ``history``, ``show``, ``diff``, ``fork`` and ``delete``.

The documents come from :mod:`..views` (``--json`` prints them as they are); this module only
lays them out for a terminal.
"""

from __future__ import annotations

import logging
from typing import cast

import click
import orjson
from rich.table import Table
from rich.text import Text

from ..errors import RunNotFoundError
from ..store.checkpointer import Checkpointer
from ..store.types import JSON, CheckpointKey, Snapshot
from ..views import (
    FORMAT_VERSION,
    Document,
    check_fork_edits,
    diff_json,
    format_path,
    history_view,
    load_snapshot,
    runs_view,
    snapshot_json,
    workflows_view,
)
from .connection import options_of, run_with_store, store_options
from .render import (
    compact,
    console,
    echo_json,
    fold,
    pretty,
    print_table_or_records,
    safe,
    when,
)

log = logging.getLogger(__name__)

STEP = click.IntRange(min=0)

LABEL_WIDTH = 40
"""Characters of a label a table shows (a fork's label names its source run: ``history``
shows it whole)."""

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")


@click.command()
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=10_000),
    default=100,
    show_default=True,
    help="Workflows per page.",
)
@click.option("--after", metavar="WORKFLOW", help="Start after this workflow id (the next page).")
@json_option
@store_options
def workflows(
    limit: int,
    after: str | None,
    as_json: bool,
    url: str,
    prefix: str,
    cluster: bool,
) -> None:
    """List the workflows that have runs under the prefix, in id order.

    The output ends with the --after to pass for the next page; `runs WORKFLOW` lists a
    workflow's runs.
    """

    async def work(store: Checkpointer) -> Document:
        return await workflows_view(store, limit=limit, after=after)

    document = run_with_store(options_of(url, prefix, cluster), work)
    if as_json:
        echo_json(document)
        return
    out = console()
    rows = document["workflows"]
    if not rows:
        out.print(Text(safe(f"no workflows under prefix {prefix!r}")))
        return
    for row in rows:
        out.print(Text(safe(row["workflow_id"])))
    if document["next_after"] is not None:
        out.print(Text(safe(f"more workflows: --after {document['next_after']}")))


@click.command()
@click.argument("workflow")
@click.option(
    "--limit",
    type=click.IntRange(min=1, max=10_000),
    default=50,
    show_default=True,
    help="Runs per page.",
)
@click.option("--after", metavar="RUN", help="Start after this run id (the next page).")
@json_option
@store_options
def runs(
    workflow: str,
    limit: int,
    after: str | None,
    as_json: bool,
    url: str,
    prefix: str,
    cluster: bool,
) -> None:
    """List a workflow's runs: status, latest super-step, last save, pause.

    Runs are in id order, LIMIT at a time; the output ends with the --after to pass for
    the next page. Forks (run ids with ~fork-) are marked.
    """

    async def work(store: Checkpointer) -> Document:
        return await runs_view(store, workflow, limit=limit, after=after)

    document = run_with_store(options_of(url, prefix, cluster), work)
    if as_json:
        echo_json(document)
        return
    out = console()
    rows: list[Document] = document["runs"]
    if not rows:
        out.print(Text(safe(f"no runs of workflow {workflow!r} under prefix {prefix!r}")))
        return
    title = Text(safe(f"runs of workflow {workflow!r}"))
    table = Table(title=title, title_justify="left")
    table.add_column("run", no_wrap=True)
    for column in ("status", "step"):
        table.add_column(column, no_wrap=True)
    table.add_column("label", no_wrap=True, overflow="ellipsis", max_width=LABEL_WIDTH)
    table.add_column("saved at (UTC)", no_wrap=True)
    table.add_column("detail", overflow="fold")
    records = []
    for row in rows:
        run_id = Text(safe(row["run_id"]), style="bold")
        fork = Text("(fork)" if row["fork"] else "", style="cyan")
        step = row["super_step"]
        cells = [
            Text(row["state"], style=_TONE_STYLES.get(row["badge"]["tone"], "")),
            Text("-" if step is None else str(step)),
            Text(safe(row["label"] or "")),
            Text(when(row["updated_at_ms"])),
        ]
        detail = Text(safe(row["detail"]))
        table.add_row(Text.assemble(run_id, " ", fork) if fork.plain else run_id, *cells, detail)
        state, step_text, label, saved = cells  # as lines, the label (maybe long) goes last
        records.append(
            (run_id, [fork, state, step_text, saved, label], [detail] if row["detail"] else [])
        )
    print_table_or_records(out, table, title, records)
    if document["next_after"] is not None:
        out.print(Text(safe(f"more runs: --after {document['next_after']}")))


_TONE_STYLES = {
    "active": "blue",
    "waiting": "cyan",
    "attention": "yellow",
    "warning": "magenta",
    "danger": "red",
    "success": "green",
    "muted": "dim",
}


@click.command()
@click.argument("workflow")
@click.argument("run")
@click.option("--limit", type=click.IntRange(min=1), help="Show only the newest LIMIT steps.")
@click.option("--before", type=STEP, metavar="STEP", help="Only steps below STEP (paging back).")
@json_option
@store_options
def history(
    workflow: str,
    run: str,
    limit: int | None,
    before: int | None,
    as_json: bool,
    url: str,
    prefix: str,
    cluster: bool,
) -> None:
    """List a run's checkpoints: super-step, label, save time; forks marked.

    A checkpoint made by fork is marked with the run it came from, and a checkpoint another
    run was forked from is marked with that fork's id.
    """

    async def work(store: Checkpointer) -> Document:
        return await history_view(store, workflow, run, limit=limit, before=before)

    document = run_with_store(options_of(url, prefix, cluster), work)
    if as_json:
        echo_json(document)
        return
    out = console()
    title = Text(safe(f"run {run!r} of workflow {workflow!r}"))
    table = Table(title=title, title_justify="left")
    for column in ("step", "label", "saved at (UTC)"):
        table.add_column(column, no_wrap=True)
    table.add_column("steps run", overflow="fold")
    table.add_column("fork", no_wrap=True)
    records = []
    for row in document["checkpoints"]:
        marks = []
        if row["fork_of"] is not None:
            marks.append(Text(safe(f"forked from {row['fork_of']}"), style="cyan"))
        marks += [Text(safe(f"forked into {fork}"), style="cyan") for fork in row["forked_into"]]
        step, label = Text(str(row["super_step"]), style="bold"), Text(safe(row["label"]))
        saved, ran = Text(when(row["timestamp_ms"])), Text(safe(", ".join(row["steps"] or [])))
        table.add_row(step, label, saved, ran, Text("\n").join(marks))
        records.append((step, [label, saved, ran], marks))
    print_table_or_records(out, table, title, records, same_line=True)


@click.command()
@click.argument("workflow")
@click.argument("run")
@click.argument("step", type=STEP, required=False)
@click.option("--full", is_flag=True, help="Show long values whole instead of folded.")
@click.option("--metadata", is_flag=True, help="Also show the metadata (the runner's record).")
@json_option
@store_options
def show(
    workflow: str,
    run: str,
    step: int | None,
    full: bool,
    metadata: bool,
    as_json: bool,
    url: str,
    prefix: str,
    cluster: bool,
) -> None:
    """Show a snapshot's channels (the latest, or super-step STEP), pretty-printed."""

    async def work(store: Checkpointer) -> Snapshot:
        return await load_snapshot(store, workflow, run, step)

    snapshot = run_with_store(options_of(url, prefix, cluster), work)
    if as_json:
        echo_json(snapshot_json(snapshot))
        return
    out = console()
    out.print(
        Text(
            safe(
                f"workflow {workflow!r}, run {run!r}, super-step {snapshot.key.super_step} "
                f"({snapshot.label or 'no label'}), saved {when(snapshot.timestamp_ms)} UTC"
            )
        )
    )
    table = Table(show_lines=True)
    table.add_column("channel", overflow="fold")
    table.add_column("value", overflow="fold")
    for channel, value in sorted(snapshot.values.items()):
        table.add_row(Text(safe(channel)), Text(safe(fold(pretty(value), full=full), lines=True)))
    if metadata:
        for name, value in sorted(snapshot.metadata.items()):
            table.add_row(
                Text(safe(f"(metadata) {name}")),
                Text(safe(fold(pretty(value), full=full), lines=True)),
            )
    out.print(table)
    if not snapshot.values:
        out.print(Text("(no channels)"))


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("workflow")
@click.argument("run")
@click.argument("steps", nargs=-1, required=True, metavar="STEP_A [RUN_B] STEP_B")
@click.option("--full", is_flag=True, help="Show long values whole instead of folded.")
@json_option
@store_options
def diff(
    workflow: str,
    run: str,
    steps: tuple[str, ...],
    full: bool,
    as_json: bool,
    url: str,
    prefix: str,
    cluster: bool,
) -> None:
    """Compare two snapshots channel by channel, and inside their JSON values.

    STEP_A of RUN against STEP_B of RUN, or of RUN_B (a fork, say): what was added, removed,
    changed, and appended to lists.
    """
    if len(steps) not in (2, 3):
        raise click.UsageError("expected STEP_A [RUN_B] STEP_B")
    run_b = steps[1] if len(steps) == 3 else run
    step_a = _step_argument(steps[0], "STEP_A")
    step_b = _step_argument(steps[-1], "STEP_B")

    async def work(store: Checkpointer) -> Document:
        old = await load_snapshot(store, workflow, run, step_a)
        new = await load_snapshot(store, workflow, run_b, step_b)
        return diff_json(old, new)

    document = run_with_store(options_of(url, prefix, cluster), work)
    if as_json:
        echo_json(document)
        return
    changes = cast(list[dict[str, JSON]], document["changes"])
    old_label = cast(dict[str, JSON], document["from"])["label"]
    new_label = cast(dict[str, JSON], document["to"])["label"]
    out = console()
    out.print(
        Text(
            safe(
                f"{run}@{step_a} ({old_label or 'no label'}) -> "
                f"{run_b}@{step_b} ({new_label or 'no label'}): {len(changes)} change(s)"
            )
        )
    )
    for change in changes:
        out.print(_change_text(change, full))


def _step_argument(text: str, name: str) -> int:
    try:
        step = int(text)
    except ValueError:
        step = -1
    if step < 0:
        raise click.BadParameter(f"{text!r} is not a super-step (an integer >= 0)", param_hint=name)
    return step


_MARKS = {"added": ("+", "green"), "appended": ("+", "green"), "removed": ("-", "red")}


def _change_text(change: dict[str, JSON], full: bool) -> Text:
    kind = str(change["kind"])
    mark, style = _MARKS.get(kind, ("~", "yellow"))
    path = format_path(cast(list[str | int], change["path"]))
    text = Text(safe(f"{mark} {kind:<8} {path}: "), style=style)
    limit = 200
    region = change.get("string")
    if isinstance(region, dict) and not full:
        text.append(_string_change(region))
    elif kind == "changed":
        text.append(safe(fold(compact(change["old"]), full=full, limit=limit)))
        text.append(" -> ")
        text.append(safe(fold(compact(change["new"]), full=full, limit=limit)))
    elif kind == "removed":
        text.append(safe(fold(compact(change["old"]), full=full, limit=limit)))
    else:
        text.append(safe(fold(compact(change["new"]), full=full, limit=limit)))
    return text


def _string_change(region: dict[str, JSON]) -> Text:
    """A changed string as the region that differs, in the text around it:
    ``at 999999 of 1000000 chars: …xxx[-a-]{+b+}``."""
    start = cast(int, region["start"])
    old_length = cast(int, region["old_length"])
    new_length = cast(int, region["new_length"])
    sizes = f"{old_length}" if old_length == new_length else f"{old_length} -> {new_length}"
    text = Text(f"string of {sizes} chars, differs at {start}: ")
    before, after = str(region["before"]), str(region["after"])
    text.append(("…" if start > len(before) else "") + _inner(before))
    for side, style, opening, closing in (("old", "red", "[-", "-]"), ("new", "green", "{+", "+}")):
        cut = cast(int, region[f"{side}_cut"])
        part = _inner(str(region[side])) + (f"…(+{cut} chars)" if cut else "")
        text.append(f"{opening}{part}{closing}", style=style)
    old_stop = cast(int, region["old_stop"])
    text.append(_inner(after) + ("…" if old_stop + len(after) < old_length else ""))
    return text


def _inner(text: str) -> str:
    """A piece of a string as it is inside a JSON string (quotes and escapes), made safe."""
    return safe(compact(text)[1:-1])


@click.command()
@click.argument("workflow")
@click.argument("run")
@click.argument("step", type=STEP)
@click.option(
    "--set",
    "edits",
    multiple=True,
    metavar="CHANNEL=JSON",
    help="Set a channel of the fork to a JSON value (repeatable), e.g. --set 'plan=\"short\"'.",
)
@click.option(
    "--new-channel",
    is_flag=True,
    help="Let --set add channels the checkpoint does not have (refused by default: a typo).",
)
@json_option
@store_options
def fork(
    workflow: str,
    run: str,
    step: int,
    edits: tuple[str, ...],
    new_channel: bool,
    as_json: bool,
    url: str,
    prefix: str,
    cluster: bool,
) -> None:
    """Fork super-step STEP of RUN into a new run, with edits; print the new run id.

    --set may only name channels the checkpoint has, unless --new-channel.
    """
    changes = dict(_edit(text) for text in edits)

    async def work(store: Checkpointer) -> str:
        key = CheckpointKey(workflow, run, step)
        if changes and not new_channel:
            source = await store.load(key)
            if source is not None:  # else fork says the checkpoint is missing
                check_fork_edits(source, changes)
        return await store.fork(key, changes)

    new_run = run_with_store(options_of(url, prefix, cluster), work, writes=True)
    if as_json:
        echo_json(
            {
                "format_version": FORMAT_VERSION,
                "kind": "fork",
                "workflow_id": workflow,
                "run_id": new_run,
                "from": {"run_id": run, "super_step": step},
            }
        )
        return
    console().print(Text(safe(f"forked {run}@{step} into {new_run}")))


def _edit(text: str) -> tuple[str, JSON]:
    channel, sep, raw = text.partition("=")
    if not sep:
        raise click.BadParameter(f"{text!r} is not CHANNEL=JSON", param_hint="--set")
    try:
        value: JSON = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise click.BadParameter(
            f"{raw!r} is not JSON (a string needs quotes: {channel}='\"text\"')",
            param_hint="--set",
        ) from None
    return channel, value


@click.command()
@click.argument("workflow")
@click.argument("run")
@click.option("--yes", "-y", is_flag=True, help="Delete without asking.")
@json_option
@store_options
def delete(
    workflow: str,
    run: str,
    yes: bool,
    as_json: bool,
    url: str,
    prefix: str,
    cluster: bool,
) -> None:
    """Delete a run: every checkpoint and its lease (its forks stay). Asks first."""
    options = options_of(url, prefix, cluster)

    async def count(store: Checkpointer) -> int:
        return len(await store.list(workflow, run))

    found = run_with_store(options, count)
    if not found:
        raise click.ClickException(safe(str(RunNotFoundError(workflow, run))))
    if not yes:
        click.confirm(
            safe(f"Delete run {run!r} of workflow {workflow!r} ({found} checkpoint(s))?"),
            abort=True,
            err=True,
        )

    async def work(store: Checkpointer) -> bool:
        return await store.delete_run(workflow, run)

    deleted = run_with_store(options, work, writes=True)
    log.info("deleted run %s of workflow %s: %s", run, workflow, deleted)
    if as_json:
        echo_json(
            {
                "format_version": FORMAT_VERSION,
                "kind": "delete",
                "workflow_id": workflow,
                "run_id": run,
                "deleted": deleted,
                "checkpoints": found,
            }
        )
        return
    if not deleted:
        raise click.ClickException(safe(f"run {run!r} of workflow {workflow!r} was already gone"))
    console().print(Text(safe(f"deleted run {run} of workflow {workflow} ({found} checkpoint(s))")))
