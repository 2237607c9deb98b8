"""The click commands behind ``atomr-redis-state`` (see :mod:`.cli` for the entry point)."""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import click
import fakeredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rich.console import Console

from ..store.redis.checkpointer import RedisCheckpointer
from .connection import one_line as _one_line
from .connection import safe_url as _safe_url
from .demo import Connect, run_demo
from .fleet import queue, workers
from .inspect import delete, diff, fork, history, runs, show
from .transfer import export, import_
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

    The inspection commands (runs, history, show, diff, fork, delete, export, import, watch)
    and the fleet's (worker, workers, queue) take --redis-url, --prefix and --cluster, or
    ATOMR_REDIS_URL, ATOMR_PREFIX and ATOMR_CLUSTER from the environment.
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
    metavar="URL",
    help=(
        "Run on this Redis server (for example redis://localhost:6379/0) instead of an "
        "in-process fakeredis. The demo writes only under a fresh key prefix of its own, and "
        "never deletes or flushes anything."
    ),
)
@click.option(
    "--ttl",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TTL_S,
    show_default=True,
    metavar="SECONDS",
    help="Let the demo's runs expire this many seconds after their last checkpoint.",
)
def demo(redis_url: str | None, ttl: float) -> None:
    """Run a small agent workflow end to end, checkpointing every super-step.

    A trip-planning agent (plan -> three tool calls in parallel -> human approval ->
    summarise), with no network and no model. You will see each super-step as it is
    checkpointed, a worker crash and the resume on a second worker, the approval of the
    paused run, a fork of a past step replayed with an edit, and the run history.
    """
    console = Console(highlight=False)
    try:
        asyncio.run(_demo(redis_url, ttl, console))
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise click.ClickException(
            f"cannot reach Redis at {_safe_url(redis_url or '')}: {_one_line(exc)}"
        ) from None
    except Exception as exc:
        raise click.ClickException(f"{type(exc).__name__}: {_one_line(exc)}") from None


async def _demo(redis_url: str | None, ttl: float, console: Console) -> None:
    prefix = f"atomr-demo-{uuid.uuid4().hex[:12]}"
    async with _workers(redis_url, prefix, ttl) as connect:
        if redis_url is None:
            console.print("store: in-process fakeredis (pass --redis-url to use a server)")
        else:
            console.print(f"store: {_safe_url(redis_url)}, key prefix {prefix!r}, ttl {ttl:g} s")
        await run_demo(connect, console)


@asynccontextmanager
async def _workers(redis_url: str | None, prefix: str, ttl: float) -> AsyncIterator[Connect]:
    """Yield a function that opens a new connection per worker; close them all at the end."""
    closers: list[Callable[[], Awaitable[None]]] = []
    server = fakeredis.FakeServer() if redis_url is None else None

    def connect() -> RedisCheckpointer:
        if redis_url is None:
            client = fakeredis.FakeAsyncRedis(server=server)
            closers.append(client.aclose)
            return RedisCheckpointer(client, prefix=prefix, ttl=ttl)
        checkpointer = RedisCheckpointer.from_url(redis_url, prefix=prefix, ttl=ttl)
        closers.append(checkpointer.aclose)
        return checkpointer

    try:
        probe = connect()
        await probe.client.ping()
        yield connect
    finally:
        for close in closers:
            await close()


for _command in (
    runs,
    history,
    show,
    diff,
    fork,
    delete,
    export,
    import_,
    watch,
    worker,
    workers,
    queue,
):
    cli.add_command(_command)
