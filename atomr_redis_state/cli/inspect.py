"""Inspection commands: ``runs``, ``history``, ``show``, ``diff``, ``fork`` and ``delete``."""

from __future__ import annotations

import asyncio
import logging

import click
import orjson
from rich.table import Table
from rich.text import Text

from ..errors import RunNotFoundError
from ..graph.outcomes import RunStatus
from ..observability.runs import is_fork, lineage_forks, summarise_run
from ..store.checkpointer import Checkpointer
from ..store.types import JSON, CheckpointKey, CheckpointMeta, Snapshot
from .connection import options_of, run_with_store, store_options
from .diff import Change, diff_channels, format_path
from .render import (
    compact,
    console,
    echo_json,
    fold,
    pretty,
    snapshot_json,
    status_detail,
    status_json,
    when,
)

log = logging.getLogger(__name__)

STATUS_CONCURRENCY = 16
"""Runs whose status ``runs`` reads at once."""

STEP = click.IntRange(min=0)
FORK_LABEL = "fork-of:"

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")


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

    async def work(store: Checkpointer) -> tuple[list[RunStatus], str | None]:
        page = await store.list_runs(workflow, limit=limit + 1, after=after)
        more = len(page) > limit
        page = page[:limit]
        gate = asyncio.Semaphore(STATUS_CONCURRENCY)

        async def status(run_id: str) -> RunStatus:
            async with gate:
                return await summarise_run(store, workflow, run_id)

        statuses = await asyncio.gather(*(status(run_id) for run_id in page))
        return list(statuses), page[-1] if more else None

    statuses, next_after = run_with_store(options_of(url, prefix, cluster), work)
    if as_json:
        rows = [{**status_json(s), "fork": is_fork(s.run_id)} for s in statuses]
        echo_json({"workflow_id": workflow, "runs": rows, "next_after": next_after})
        return
    out = console()
    if not statuses:
        out.print(Text(f"no runs of workflow {workflow!r} under prefix {prefix!r}"))
        return
    table = Table(title=Text(f"runs of workflow {workflow!r}"), title_justify="left")
    table.add_column("run", overflow="fold")
    for column in ("status", "step", "label", "saved at (UTC)"):
        table.add_column(column, no_wrap=True)
    table.add_column("detail", overflow="fold")
    for s in statuses:
        run_text = Text(s.run_id)
        if is_fork(s.run_id):
            run_text.append(" (fork)", style="cyan")
        table.add_row(
            run_text,
            Text(s.state, style=_STATE_STYLES.get(s.state, "")),
            Text("-" if s.super_step is None else str(s.super_step)),
            Text(s.label or ""),
            Text(when(s.updated_at_ms)),
            Text(status_detail(s)),
        )
    out.print(table)
    if next_after is not None:
        out.print(Text(f"more runs: --after {next_after}"))


_STATE_STYLES = {
    "queued": "cyan",
    "blocked": "magenta",
    "cancelled": "dim",
    "running": "blue",
    "paused": "yellow",
    "completed": "green",
    "failed": "red",
    "not_found": "dim",
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

    async def work(store: Checkpointer) -> tuple[list[CheckpointMeta], dict[int, list[str]]]:
        metas = await store.list(workflow, run, limit=limit, before=before)
        if not metas and not await store.list(workflow, run, limit=1):
            raise RunNotFoundError(workflow, run)
        return metas, await _forks_by_step(store, workflow, run)

    metas, forks = run_with_store(options_of(url, prefix, cluster), work)
    if as_json:
        rows: list[JSON] = [
            {
                "super_step": m.super_step,
                "label": m.label,
                "timestamp_ms": m.timestamp_ms,
                "fork_of": _fork_source(m.label),
                "forked_into": list(forks.get(m.super_step, [])),
            }
            for m in metas
        ]
        echo_json({"workflow_id": workflow, "run_id": run, "checkpoints": rows})
        return
    out = console()
    table = Table(title=Text(f"run {run!r} of workflow {workflow!r}"), title_justify="left")
    for column in ("step", "label", "saved at (UTC)"):
        table.add_column(column, no_wrap=True)
    table.add_column("fork", overflow="fold")
    for m in metas:
        marks = []
        source = _fork_source(m.label)
        if source is not None:
            marks.append(f"forked from {source}")
        marks += [f"forked into {fork}" for fork in forks.get(m.super_step, [])]
        table.add_row(
            Text(str(m.super_step)),
            Text(m.label),
            Text(when(m.timestamp_ms)),
            Text("\n".join(marks)),
        )
    out.print(table)


def _fork_source(label: str) -> str | None:
    return label[len(FORK_LABEL) :] if label.startswith(FORK_LABEL) else None


async def _forks_by_step(store: Checkpointer, workflow: str, run: str) -> dict[int, list[str]]:
    """The forks made from ``run``, by the super-step they were made from."""
    forks: dict[int, list[str]] = {}
    for other in await lineage_forks(store, workflow, run):
        if not is_fork(other):
            continue
        metas = await store.list(workflow, other)
        if metas and metas[0].label == FORK_LABEL + run:
            forks.setdefault(metas[0].super_step, []).append(other)
    return forks


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
        return await _snapshot(store, workflow, run, step)

    snapshot = run_with_store(options_of(url, prefix, cluster), work)
    if as_json:
        echo_json(snapshot_json(snapshot))
        return
    out = console()
    out.print(
        Text(
            f"workflow {workflow!r}, run {run!r}, super-step {snapshot.key.super_step} "
            f"({snapshot.label or 'no label'}), saved {when(snapshot.timestamp_ms)} UTC"
        )
    )
    table = Table(show_lines=True)
    table.add_column("channel", overflow="fold")
    table.add_column("value", overflow="fold")
    for channel, value in sorted(snapshot.values.items()):
        table.add_row(Text(channel), Text(fold(pretty(value), full=full)))
    if metadata:
        for name, value in sorted(snapshot.metadata.items()):
            table.add_row(Text(f"(metadata) {name}"), Text(fold(pretty(value), full=full)))
    out.print(table)
    if not snapshot.values:
        out.print(Text("(no channels)"))


async def _snapshot(store: Checkpointer, workflow: str, run: str, step: int | None) -> Snapshot:
    """The snapshot at ``step`` (the latest if None); a one-line error when there is none."""
    if step is None:
        latest = await store.latest(workflow, run)
        if latest is None:
            raise RunNotFoundError(workflow, run)
        return latest
    snapshot = await store.load(CheckpointKey(workflow, run, step))
    if snapshot is not None:
        return snapshot
    metas = await store.list(workflow, run)
    if not metas:
        raise RunNotFoundError(workflow, run)
    steps = ", ".join(str(m.super_step) for m in metas[-20:])
    more = "..., " if len(metas) > 20 else ""
    raise click.ClickException(
        f"run {run!r} of workflow {workflow!r} has no super-step {step} (it has {more}{steps})"
    )


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

    async def work(store: Checkpointer) -> tuple[Snapshot, Snapshot]:
        return (
            await _snapshot(store, workflow, run, step_a),
            await _snapshot(store, workflow, run_b, step_b),
        )

    old, new = run_with_store(options_of(url, prefix, cluster), work)
    changes = diff_channels(old.values, new.values)
    if as_json:
        echo_json(
            {
                "workflow_id": workflow,
                "from": {"run_id": run, "super_step": step_a, "label": old.label},
                "to": {"run_id": run_b, "super_step": step_b, "label": new.label},
                "changes": [change.to_json() for change in changes],
            }
        )
        return
    out = console()
    out.print(
        Text(
            f"{run}@{step_a} ({old.label or 'no label'}) -> "
            f"{run_b}@{step_b} ({new.label or 'no label'}): {len(changes)} change(s)"
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


def _change_text(change: Change, full: bool) -> Text:
    mark, style = _MARKS.get(change.kind, ("~", "yellow"))
    text = Text(f"{mark} {change.kind:<8} {format_path(change.path)}: ", style=style)
    limit = 200
    if change.kind == "changed":
        text.append(fold(compact(change.old), full=full, limit=limit))
        text.append(" -> ")
        text.append(fold(compact(change.new), full=full, limit=limit))
    elif change.kind == "removed":
        text.append(fold(compact(change.old), full=full, limit=limit))
    else:
        text.append(fold(compact(change.new), full=full, limit=limit))
    return text


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
@json_option
@store_options
def fork(
    workflow: str,
    run: str,
    step: int,
    edits: tuple[str, ...],
    as_json: bool,
    url: str,
    prefix: str,
    cluster: bool,
) -> None:
    """Fork super-step STEP of RUN into a new run, with edits; print the new run id."""
    changes = dict(_edit(text) for text in edits)

    async def work(store: Checkpointer) -> str:
        return await store.fork(CheckpointKey(workflow, run, step), changes)

    new_run = run_with_store(options_of(url, prefix, cluster), work)
    if as_json:
        echo_json(
            {
                "workflow_id": workflow,
                "run_id": new_run,
                "from": {"run_id": run, "super_step": step},
            }
        )
        return
    console().print(Text(f"forked {run}@{step} into {new_run}"))


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
        raise click.ClickException(str(RunNotFoundError(workflow, run)))
    if not yes:
        click.confirm(
            f"Delete run {run!r} of workflow {workflow!r} ({found} checkpoint(s))?",
            abort=True,
            err=True,
        )

    async def work(store: Checkpointer) -> bool:
        return await store.delete_run(workflow, run)

    deleted = run_with_store(options, work)
    log.info("deleted run %s of workflow %s: %s", run, workflow, deleted)
    if as_json:
        echo_json(
            {"workflow_id": workflow, "run_id": run, "deleted": deleted, "checkpoints": found}
        )
        return
    if not deleted:
        raise click.ClickException(f"run {run!r} of workflow {workflow!r} was already gone")
    console().print(Text(f"deleted run {run} of workflow {workflow} ({found} checkpoint(s))"))
