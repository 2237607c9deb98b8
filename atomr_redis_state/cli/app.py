"""The click commands behind ``atomr-redis-state`` (see :mod:`.cli` for the entry point)."""

from __future__ import annotations

import asyncio
import logging
import shlex
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import click
import fakeredis
from click.core import ParameterSource
from rich.console import Console
from rich.text import Text

from ..store.checkpointer import Checkpointer
from ..store.redis.checkpointer import RedisCheckpointer
from ..store.url import is_redis_url, store_from_url
from .archive import archive
from .connection import (
    DEFAULT_URL,
    StoreOptions,
    failure_message,
    operator_client_options,
    options_of,
    safe_url,
)
from .demo import WORKFLOW_ID, Connect, run_demo
from .fleet import queue, workers
from .inspect import delete, diff, fork, history, runs, show, workflows
from .transfer import export, import_
from .ui import UI_HOST, UI_PORT, bind, require_ui, serve_demo, ui
from .watch import watch
from .worker import worker

DEFAULT_TTL_S = 3600


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="atomr-redis-state", prog_name="atomr-redis-state")
@click.option(
    "--verbose",
    "-v",
    count=True,
    help="Log what the library does to standard error (-v: info, -vv: debug).",
)
def cli(verbose: int) -> None:
    """Durable, shared, per-super-step checkpoints for AI-agent workflows on Redis.

    The inspection commands (workflows, runs, history, show, diff, fork, delete, export,
    import, watch, archive), the inspector (ui) and the fleet's (worker, workers, queue) take
    --redis-url, --prefix and --cluster, or ATOMR_REDIS_URL, ATOMR_PREFIX and ATOMR_CLUSTER from
    the environment.
    """
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        library = logging.getLogger("atomr_redis_state")
        library.addHandler(handler)
        library.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)


@cli.command()
@click.option(
    "--redis-url",
    "--store",
    "url",
    metavar="URL",
    envvar="ATOMR_REDIS_URL",
    show_envvar=True,
    help=(
        "Run on this store instead of an in-process fakeredis: a Redis server "
        "(redis://localhost:6379/0), or sqlite:///demo.db (a file left to inspect) or "
        "postgresql://... The demo only adds runs of its own (fresh run ids, under a fresh "
        "key prefix unless --prefix is given), and never deletes or flushes anything."
    ),
)
@click.option(
    "--prefix",
    metavar="PREFIX",
    envvar="ATOMR_PREFIX",
    show_envvar=True,
    help="Write under this key prefix (default: a fresh atomr-demo-<random> one).",
)
@click.option(
    "--cluster/--no-cluster",
    envvar="ATOMR_CLUSTER",
    default=False,
    show_envvar=True,
    help="The server is a Redis Cluster node.",
)
@click.option(
    "--ttl",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TTL_S,
    show_default=True,
    metavar="SECONDS",
    help="Let the demo's runs expire this many seconds after their last checkpoint.",
)
@click.option(
    "--ui",
    "open_ui",
    is_flag=True,
    help=(
        f"Then serve the inspector on the demo's runs, on {UI_HOST}:{UI_PORT} "
        "(needs the ui extra; Ctrl-C stops)."
    ),
)
@click.pass_context
def demo(
    ctx: click.Context,
    url: str | None,
    prefix: str | None,
    cluster: bool,
    ttl: float,
    open_ui: bool,
) -> None:
    """Run a small agent workflow end to end, checkpointing every super-step.

    A trip-planning agent (plan -> three tool calls in parallel -> human approval ->
    summarise), with no network and no model. You will see each super-step as it is
    checkpointed, a worker crash and the resume on a second worker, the approval of the
    paused run, a fork of a past step replayed with an edit, and the run history; then the
    commands that inspect what it wrote.
    """
    chosen = prefix or f"atomr-demo-{uuid.uuid4().hex[:12]}"
    options = options_of(url or DEFAULT_URL, chosen, cluster, ttl)
    console = Console(highlight=False)
    listener = None
    if open_ui:
        require_ui()
        listener = bind(UI_HOST, UI_PORT)
    try:
        run_id, fork_id = asyncio.run(_demo(url, options, console, listener))
    except Exception as exc:
        raise click.ClickException(failure_message(exc, options, writes=True)) from None
    from_env = {
        name: ctx.get_parameter_source(name) is ParameterSource.ENVIRONMENT
        for name in ("url", "prefix", "cluster")
    }
    _print_inspection(console, url, options, from_env, run_id, fork_id)


async def _demo(
    url: str | None, options: StoreOptions, console: Console, listener: socket.socket | None
) -> tuple[str, str]:
    async with _workers(url, options) as connect:
        if url is None:
            console.print("store: in-process fakeredis (pass --redis-url to use a server)")
        else:
            where = f"{safe_url(url)}{' (cluster)' if options.cluster else ''}"
            tenant = f", key prefix {options.prefix!r}" if is_redis_url(url) else ""
            console.print(f"store: {where}{tenant}, ttl {options.ttl:g} s")
        ids = await run_demo(connect, console)
        if listener is not None:  # the inspector, while the runs are there (even in fakeredis)
            await serve_demo(connect(), options.prefix, listener)
        return ids


@asynccontextmanager
async def _workers(url: str | None, options: StoreOptions) -> AsyncIterator[Connect]:
    """Yield a function that opens a new connection per worker; close them all at the end."""
    closers: list[Callable[[], Awaitable[None]]] = []
    server = fakeredis.FakeServer() if url is None else None

    def connect() -> Checkpointer:
        if url is None:
            client = fakeredis.FakeAsyncRedis(server=server)
            closers.append(client.aclose)
            return RedisCheckpointer(client, prefix=options.prefix, ttl=options.ttl)
        extra = operator_client_options() if is_redis_url(url) else {}
        store = store_from_url(
            url, cluster=options.cluster, prefix=options.prefix, ttl=options.ttl, **extra
        )
        close = getattr(store, "aclose", None)
        if close is not None:
            closers.append(close)
        return store

    try:
        probe = connect()
        setup = getattr(probe, "setup", None)
        if setup is not None:  # a SQL store: its tables, made (or migrated) once
            await setup()
        await probe.latest(WORKFLOW_ID, "probe")  # fails now if the server is unreachable
        yield connect
    finally:
        for close in closers:
            await close()


def _print_inspection(
    console: Console,
    url: str | None,
    options: StoreOptions,
    from_env: dict[str, bool],
    run_id: str,
    fork_id: str,
) -> None:
    """Print the commands that look at what the demo wrote (or say that it is gone)."""
    console.print()
    if url is None:
        console.print(
            "The runs lived in this process's fakeredis and are gone. To keep them and look at "
            "them afterwards, run the demo on a file or a server: "
            "atomr-redis-state demo --store sqlite:///demo.db (or --redis-url "
            "redis://localhost:6379/0)"
        )
        return
    where = []
    if not from_env["url"]:
        where.append(f"--redis-url {shlex.quote(safe_url(url))}")
    if not from_env["prefix"] and is_redis_url(url):
        where.append(f"--prefix {shlex.quote(options.prefix)}")
    if options.cluster and not from_env["cluster"]:
        where.append("--cluster")
    tail = " ".join(where)
    workflow = shlex.quote(WORKFLOW_ID)
    run, fork = shlex.quote(run_id), shlex.quote(fork_id)
    console.print(
        Text(f"Inspect what the demo wrote (it expires {options.ttl:g} s after its last save):")
    )
    for command in (
        f"runs {workflow}",
        f"history {workflow} {run}",
        f"show {workflow} {fork}",
        f"diff {workflow} {run} 5 {fork} 5",
        f"watch {workflow}",
    ):
        console.print(Text(f"  atomr-redis-state {command} {tail}".rstrip()), soft_wrap=True)


for _command in (
    workflows,
    runs,
    history,
    show,
    diff,
    fork,
    delete,
    export,
    import_,
    watch,
    archive,
    ui,
    worker,
    workers,
    queue,
):
    cli.add_command(_command)
