"""Fleet commands: ``workers`` (live workers and the runs they hold), ``queue`` (the depth of
each workflow's ready queue) and the liveness probe behind ``worker --check``."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table
from rich.text import Text

from ..fleet.health import Liveness, liveness
from ..store.checkpointer import Checkpointer
from ..views.fleet import QUEUE_PARTS, queue_view, workers_view
from .connection import StoreOptions, options_of, run_with_store, store_options
from .render import Record, console, echo_json, print_table_or_records, safe

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")


@click.command()
@json_option
@store_options
def workers(as_json: bool, url: str, prefix: str, cluster: bool) -> None:
    """List the live workers (from their heartbeats) and the runs each one holds.

    A worker is live while its last heartbeat has not expired (it beats every few seconds and
    a beat lives three of them); one that stops gracefully leaves the list at once.
    """
    document = run_with_store(options_of(url, prefix, cluster), workers_view)
    if as_json:
        echo_json(document)
        return
    out = console()
    found: list[dict[str, Any]] = document["workers"]
    if not found:
        out.print(Text(safe(f"no live workers under prefix {prefix!r}")))
        return
    title = Text(f"{len(found)} live worker(s)")
    table = Table(title=title, title_justify="left")
    table.add_column("worker", overflow="fold")
    for column in ("host", "pid", "workflows", "runs held", "heartbeat"):
        table.add_column(column, overflow="fold")
    records: list[Record] = []
    for worker in found:
        stopping = " (stopping)" if worker["stopping"] else ""
        name = Text(safe(worker["worker_id"]) + stopping)
        runs = [Text(safe(f"{r.get('workflow_id')}/{r.get('run_id')}")) for r in worker["runs"]]
        cells = [
            Text(safe(str(worker["host"]))),
            Text(str(worker["pid"])),
            Text(safe(", ".join(str(w) for w in worker["workflows"]))),
            Text(f"{len(runs)} of {worker['concurrency']} runs"),
            Text(_age(worker["heartbeat_age_s"])),
        ]
        table.add_row(name, *cells[:3], Text("\n").join([cells[3], *runs]), cells[4])
        records.append((name, cells, runs))
    print_table_or_records(out, table, title, records)


@click.command()
@click.argument("workflows", nargs=-1)
@json_option
@store_options
def queue(workflows: tuple[str, ...], as_json: bool, url: str, prefix: str, cluster: bool) -> None:
    """Show how many runs of each workflow are ready, delayed, running, paused, failed (dead
    letters) and blocked.

    Without WORKFLOWS, every workflow with runs and every workflow the live workers run.
    """

    async def work(store: Checkpointer) -> dict[str, Any]:
        return await queue_view(store, workflows)

    document = run_with_store(options_of(url, prefix, cluster), work)
    if as_json:
        echo_json(document)
        return
    out = console()
    rows: list[dict[str, Any]] = document["queues"]
    if not rows:
        out.print(Text(safe(f"no workflows with runs or workers under prefix {prefix!r}")))
        return
    table = Table(title=Text("ready queues"), title_justify="left")
    table.add_column("workflow", overflow="fold")
    for part in QUEUE_PARTS:
        table.add_column(part, justify="right")
    records: list[Record] = []
    for row in rows:
        name = Text(safe(row["workflow_id"]))
        cells = [Text(str(row[part])) for part in QUEUE_PARTS]
        table.add_row(name, *cells)
        parts = [Text(f"{part} {row[part]}") for part in QUEUE_PARTS]
        records.append((name, parts, []))
    print_table_or_records(out, table, Text("ready queues"), records)


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.1f} s ago"


def check_worker(options: StoreOptions, worker_id: str | None) -> None:
    """The liveness probe: exit 0 when this host's worker (or ``worker_id``) has a live
    heartbeat, 1 (with the reason on stderr) otherwise, or when the store cannot be reached."""

    async def work(store: Checkpointer) -> Liveness:
        return await liveness(store, worker_id=worker_id)

    found = run_with_store(options, work)
    if not found.alive:
        click.echo(found.reason, err=True)
        raise SystemExit(1)
    click.echo(found.reason)
