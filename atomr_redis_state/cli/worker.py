"""``atomr-redis-state worker``: run a fleet worker process on the store's ready queue."""

from __future__ import annotations

import logging
import os
import sys
from contextlib import AsyncExitStack

import click

from ..fleet.worker import DEFAULT_GRACE, DEFAULT_LEASE_TTL, Worker
from ..fleet.workflow import load_target
from ..store.checkpointer import Checkpointer
from ..store.url import open_store
from .connection import options_of, run_with_store, store_options
from .fleet import check_worker

log = logging.getLogger(__name__)


@click.command()
@click.argument("target", metavar="MODULE:ATTRIBUTE", required=False)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    envvar="ATOMR_CONCURRENCY",
    show_envvar=True,
    help="How many runs this process runs at once.",
)
@click.option(
    "--lease-ttl",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_LEASE_TTL,
    show_default=True,
    metavar="SECONDS",
    envvar="ATOMR_LEASE_TTL",
    show_envvar=True,
    help="How long a crashed worker's run waits before another worker takes it over.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_GRACE,
    show_default=True,
    metavar="SECONDS",
    envvar="ATOMR_GRACE",
    show_envvar=True,
    help="On SIGTERM/SIGINT, how long running layers may finish before their runs are released.",
)
@click.option(
    "--worker-id",
    metavar="ID",
    envvar="ATOMR_WORKER_ID",
    show_envvar=True,
    help="This worker's name (default: host, pid and a random suffix), e.g. the pod name.",
)
@click.option("--burst", is_flag=True, help="Exit once nothing is left to claim.")
@click.option(
    "--check",
    is_flag=True,
    help=(
        "A liveness probe instead: exit 0 if a worker on this host (or the one named by "
        "--worker-id) has a live heartbeat, 1 if not; runs nothing."
    ),
)
@click.option(
    "--archive-to",
    metavar="URL",
    envvar="ATOMR_ARCHIVE_URL",
    show_envvar=True,
    help=(
        "Move every run this worker completes to this store (postgresql://..., "
        "sqlite:///path.db), verified before it leaves the queue's store."
    ),
)
@store_options
def worker(
    target: str | None,
    concurrency: int,
    lease_ttl: float,
    grace: float,
    worker_id: str | None,
    burst: bool,
    check: bool,
    archive_to: str | None,
    url: str,
    prefix: str,
    cluster: bool,
) -> None:
    """Claim and run the runs of the workflows in MODULE:ATTRIBUTE.

    MODULE:ATTRIBUTE names a Registry, a Workflow, a list of workflows, or a function
    returning one of those (for example ``myapp.agents:workflows``), imported from the
    current directory first. SIGTERM or SIGINT stops the worker gracefully: it claims nothing
    more, lets each run finish its current layer (up to --grace seconds), and releases it to
    the queue; a second signal releases every run at once. Logs claims, completions, retries
    and takeovers to standard error.

    With --check (a Kubernetes exec liveness probe), MODULE:ATTRIBUTE is not needed: the
    command looks for a live heartbeat of a worker whose host is this machine's name (a pod's
    name), or of --worker-id, and exits 0 if there is one, 1 otherwise.
    """
    options = options_of(url, prefix, cluster)
    if check:
        check_worker(options, worker_id)
        return
    if target is None:
        raise click.UsageError("Missing argument 'MODULE:ATTRIBUTE' (or pass --check).")
    _log_to_stderr()
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())

    async def work(store: Checkpointer) -> None:
        registry = await load_target(target)
        async with AsyncExitStack() as stack:
            archive = None
            if archive_to is not None:
                archive = await stack.enter_async_context(open_store(archive_to))
            pool = Worker(
                store,
                registry,
                concurrency=concurrency,
                worker_id=worker_id,
                lease_ttl=lease_ttl,
                grace=grace,
                archive_to=archive,
            )
            with pool.handle_signals():
                await pool.run(burst=burst)

    run_with_store(options, work)


def _log_to_stderr() -> None:
    """A worker logs at INFO by default (unless ``-v``/``-vv`` set the library's logging)."""
    library = logging.getLogger("atomr_redis_state")
    if any(not isinstance(h, logging.NullHandler) for h in library.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    library.addHandler(handler)
    library.setLevel(logging.INFO)
