"""How a command reaches the store: shared options, the connection, and one-line errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import click
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import AtomrStateError, StoreUnavailableError
from ..store.checkpointer import Checkpointer
from ..store.url import open_store

log = logging.getLogger(__name__)

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_PREFIX = "atomr"

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """Where the store is: ``--redis-url``, ``--prefix``, ``--cluster`` (and ``--ttl`` to write)."""

    url: str = DEFAULT_URL
    prefix: str = DEFAULT_PREFIX
    cluster: bool = False
    ttl: float | None = None


Opener = Callable[[StoreOptions], AbstractAsyncContextManager[Checkpointer]]
"""Opens the store for one command and closes it after."""


def open_url(options: StoreOptions) -> AbstractAsyncContextManager[Checkpointer]:
    """The default :data:`Opener`: the store the URL names (Redis, Postgres, SQLite; see
    :func:`~..store.url.store_from_url`), with connections of its own."""
    return open_store(options.url, cluster=options.cluster, prefix=options.prefix, ttl=options.ttl)


@dataclass(slots=True)
class CliEnv:
    """What the command line runs against; tests pass their own as ``obj`` (fakeredis)."""

    opener: Opener = open_url


def store_options(command: Callable[P, T]) -> Callable[P, T]:
    """Add ``--redis-url``, ``--prefix`` and ``--cluster`` (each also read from the environment)."""
    decorators = [
        click.option(
            "--redis-url",
            "url",
            metavar="URL",
            envvar="ATOMR_REDIS_URL",
            default=DEFAULT_URL,
            show_default=True,
            show_envvar=True,
            help=(
                "The store: a Redis URL (any node of a cluster with --cluster), "
                "postgresql://... or sqlite:///path.db."
            ),
        ),
        click.option(
            "--prefix",
            metavar="PREFIX",
            envvar="ATOMR_PREFIX",
            default=DEFAULT_PREFIX,
            show_default=True,
            show_envvar=True,
            help="The key prefix the store was created with.",
        ),
        click.option(
            "--cluster/--no-cluster",
            envvar="ATOMR_CLUSTER",
            default=False,
            show_envvar=True,
            help="Connect to a Redis Cluster.",
        ),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


def options_of(url: str, prefix: str, cluster: bool, ttl: float | None = None) -> StoreOptions:
    if "{" in prefix or "}" in prefix or not prefix:
        raise click.BadParameter(
            "a prefix is non-empty and has no '{' or '}'", param_hint="--prefix"
        )
    return StoreOptions(url, prefix, cluster, ttl)


def run_with_store(
    options: StoreOptions, work: Callable[[Checkpointer], Coroutine[Any, Any, T]]
) -> T:
    """Open the store, run ``work`` on it, close it; turn any failure into a one-line error."""
    env = click.get_current_context().find_object(CliEnv) or CliEnv()

    async def main() -> T:
        try:
            opened = env.opener(options)
        except ValueError as exc:  # a malformed URL, from redis-py
            raise click.ClickException(f"{safe_url(options.url)}: {one_line(exc)}") from None
        async with opened as store:
            return await work(store)

    try:
        return asyncio.run(main())
    except (click.ClickException, click.exceptions.Exit, click.Abort):
        raise
    except (RedisConnectionError, RedisTimeoutError, StoreUnavailableError, OSError) as exc:
        log.debug("cannot reach Redis", exc_info=True)
        raise click.ClickException(
            f"cannot reach Redis at {safe_url(options.url)}: {one_line(exc)}"
        ) from None
    except AtomrStateError as exc:
        log.debug("store error", exc_info=True)
        raise click.ClickException(one_line(exc)) from None
    except RedisError as exc:
        log.debug("Redis error", exc_info=True)
        raise click.ClickException(f"Redis error: {one_line(exc)}") from None
    except (ValueError, TypeError) as exc:  # an argument the store refused
        log.debug("bad argument", exc_info=True)
        raise click.ClickException(one_line(exc)) from None
    except Exception as exc:  # anything else: still one line (-vv logs the traceback)
        log.debug("command failed", exc_info=True)
        raise click.ClickException(f"{type(exc).__name__}: {one_line(exc)}") from None


def safe_url(url: str) -> str:
    """``url`` without its password, for printing."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<malformed URL>"
    if password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:" if parts.username else ":"
    return parts._replace(netloc=f"{user}***@{host}").geturl()


def one_line(exc: BaseException) -> str:
    """The exception's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__
