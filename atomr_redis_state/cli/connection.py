"""How a command reaches the store: shared options, the connection, and one-line errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

import click
from redis.exceptions import AskError, InvalidResponse, RedisClusterException, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import AtomrStateError, StoreUnavailableError
from ..store.checkpointer import Checkpointer
from ..store.redis.connect import default_retry
from ..store.url import is_redis_url, open_store
from ..views import escape_text

log = logging.getLogger(__name__)

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_PREFIX = "atomr"

CONNECT_TIMEOUT = 2.0
"""Seconds an operator command waits to connect (a wrong port, ``rediss://`` against a plain
port) before it says so; the library's own default is redis-py's, longer."""

COMMAND_TIMEOUT = 30.0
"""Seconds an operator command waits for a reply."""

CONNECT_RETRIES = 1
"""Times an operator command retries a failed connection or command (each store call is safe
to retry): enough for a blip, few enough to fail within seconds."""


def operator_client_options() -> dict[str, Any]:
    """The redis-py options of an operator command's client: short timeouts, one retry."""
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": COMMAND_TIMEOUT,
        "retry": default_retry(CONNECT_RETRIES),
    }


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
    :func:`~..store.url.store_from_url`), with connections of its own (a Redis client with the
    operator commands' short timeouts)."""
    extra = operator_client_options() if is_redis_url(options.url) else {}
    return open_store(
        options.url, cluster=options.cluster, prefix=options.prefix, ttl=options.ttl, **extra
    )


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
    options: StoreOptions,
    work: Callable[[Checkpointer], Coroutine[Any, Any, T]],
    *,
    writes: bool = False,
) -> T:
    """Open the store, run ``work`` on it, close it; turn any failure into a one-line error.

    ``writes`` says the work changes the store: when Redis cannot be reached mid-way, the
    message then says the change may or may not have been made (a read says no such thing).
    """
    env = click.get_current_context().find_object(CliEnv) or CliEnv()

    async def main() -> T:
        async with contextlib.AsyncExitStack() as stack:
            try:
                store = await stack.enter_async_context(env.opener(options))
            except ValueError as exc:  # a malformed URL, from redis-py or the scheme
                raise click.ClickException(f"{safe_url(options.url)}: {one_line(exc)}") from None
            result = await work(store)
        return result  # noqa: RET504  (outside the stack: mypy 1.10 sees it may swallow errors)

    try:
        return asyncio.run(main())
    except click.ClickException as exc:
        if type(exc) is click.ClickException:  # a failure the work described: it may quote ids
            raise click.ClickException(escape_text(exc.message)) from None
        raise
    except (click.exceptions.Exit, click.Abort):
        raise
    except Exception as exc:
        log.debug("command failed", exc_info=True)
        message = failure_message(exc, options, writes=writes)
        raise click.ClickException(escape_text(message)) from None


def failure_message(exc: Exception, options: StoreOptions, *, writes: bool = False) -> str:
    """One line saying what went wrong and, where it is known, what to do about it."""
    where = safe_url(options.url)
    cause = exc.__cause__ if isinstance(exc, StoreUnavailableError) else exc
    if _is_redirect(exc) or _is_redirect(cause):
        return (
            f"the server at {where} is a Redis Cluster node: pass --cluster "
            "(or set ATOMR_CLUSTER=1)"
        )
    if isinstance(exc, RedisClusterException) and "not enabled" in str(exc):
        return f"the server at {where} is not a Redis Cluster node: leave out --cluster"
    if isinstance(exc, InvalidResponse):
        return (
            f"the server at {where} does not answer as Redis does ({one_line(exc)}): "
            "is that the Redis port?"
        )
    if isinstance(
        exc, RedisConnectionError | RedisTimeoutError | StoreUnavailableError | OSError
    ) and isinstance(cause, BaseException):
        message = f"cannot reach Redis at {where}: {one_line(cause).rstrip('.')}"
        if isinstance(cause, RedisTimeoutError) and options.url.startswith("rediss://"):
            message += " (if the server does not use TLS, use redis://)"
        if writes and "connecting to" not in str(cause):  # lost after the command was sent
            message += "; the change may or may not have been made: look before running it again"
        return message
    if isinstance(exc, AtomrStateError):
        return one_line(exc)
    if isinstance(exc, RedisError):
        return f"Redis error at {where}: {one_line(exc)}"
    if isinstance(exc, ValueError | TypeError):  # an argument the store refused
        return one_line(exc)
    return f"{type(exc).__name__}: {one_line(exc)}"


def _is_redirect(exc: BaseException | None) -> bool:
    """A MOVED or ASK reply: the server is a cluster node and the key lives elsewhere."""
    if isinstance(exc, AskError):
        return True
    text = str(exc)
    return isinstance(exc, RedisError) and text.startswith(("MOVED ", "ASK "))


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
