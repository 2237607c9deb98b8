"""One function that picks the store by the URL's scheme, for the CLI, the demo and apps:

- ``redis://host:6379/0``, ``rediss://...``, ``unix:///run/redis.sock``:
  :class:`~.redis.RedisCheckpointer` (``cluster=True`` for a Redis Cluster);
- ``redis+sentinel://host:26379,host:26380/service[/db]``: the primary Sentinel names;
- ``postgresql://user@host/db`` (or ``postgres://``): :class:`~.sql.PostgresCheckpointer`
  (extra ``[postgres]``);
- ``sqlite:///relative.db``, ``sqlite:////absolute.db``, ``sqlite://:memory:``:
  :class:`~.sql.SqliteCheckpointer` (extra ``[sqlite]``);
- ``memory://``: :class:`~.memory.InMemoryCheckpointer`, for this process only.

The SQL stores create (or migrate) their schema when opened with :func:`open_store`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

from .checkpointer import Checkpointer
from .memory import InMemoryCheckpointer

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
SENTINEL_SCHEMES = frozenset({"redis+sentinel", "rediss+sentinel"})
POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})
SCHEMES = (*sorted(REDIS_SCHEMES | SENTINEL_SCHEMES | POSTGRES_SCHEMES), "sqlite", "memory")


def is_redis_url(url: str) -> bool:
    """True for a ``redis://``, ``rediss://`` or ``unix://`` URL: Redis client options apply."""
    return url.partition("://")[0].lower() in REDIS_SCHEMES


def store_from_url(
    url: str,
    *,
    prefix: str = "atomr",
    ttl: float | timedelta | None = None,
    keep_last: int | None = None,
    cluster: bool = False,
    **options: Any,
) -> Checkpointer:
    """The store ``url`` names (see the table above), not yet connected.

    ``prefix`` names the tenant on Redis; ``cluster`` connects to a Redis Cluster. ``options``
    go to the store's constructor (for example ``schema=`` on Postgres, ``ssl_ca_certs=`` on
    Redis). Raises ValueError for a URL of no known scheme.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, not {type(url).__name__}")
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in REDIS_SCHEMES:
        from .redis.checkpointer import RedisCheckpointer

        return RedisCheckpointer.from_url(
            url, cluster=cluster, prefix=prefix, ttl=ttl, keep_last=keep_last, **options
        )
    if cluster:
        raise ValueError(f"cluster=True needs a redis:// or rediss:// URL, not {scheme}://")
    if scheme in SENTINEL_SCHEMES:
        from .redis.checkpointer import RedisCheckpointer

        sentinels, service, client_options = _sentinel_parts(url)
        return RedisCheckpointer.from_sentinel(
            sentinels,
            service,
            prefix=prefix,
            ttl=ttl,
            keep_last=keep_last,
            **client_options,
            **options,
        )
    if scheme in POSTGRES_SCHEMES:
        from .sql import PostgresCheckpointer

        return PostgresCheckpointer(url, ttl=ttl, keep_last=keep_last, **options)
    if scheme == "sqlite":
        path = _sqlite_path(url)
        from .sql import SqliteCheckpointer

        return SqliteCheckpointer(path, ttl=ttl, keep_last=keep_last, **options)
    if scheme == "memory":
        return InMemoryCheckpointer(ttl=ttl, keep_last=keep_last, **options)
    known = ", ".join(f"{s}://" for s in SCHEMES)
    raise ValueError(f"not a store URL (expected one of {known})")


@asynccontextmanager
async def open_store(
    url: str,
    *,
    prefix: str = "atomr",
    ttl: float | timedelta | None = None,
    keep_last: int | None = None,
    cluster: bool = False,
    **options: Any,
) -> AsyncIterator[Checkpointer]:
    """``async with open_store(url) as store:``: :func:`store_from_url`, with a SQL store's
    schema set up first and every connection the store opened closed after."""
    store = store_from_url(
        url, prefix=prefix, ttl=ttl, keep_last=keep_last, cluster=cluster, **options
    )
    try:
        setup = getattr(store, "setup", None)
        if setup is not None:
            await setup()
        yield store
    finally:
        close = getattr(store, "aclose", None)
        if close is not None:
            await close()


def _sqlite_path(url: str) -> str:
    """``sqlite:///relative/path``, ``sqlite:////absolute/path`` or ``sqlite://:memory:``."""
    rest = url.partition("://")[2]
    if rest == ":memory:":
        return ":memory:"
    if not rest.startswith("/") or rest == "/":
        raise ValueError("a SQLite URL is sqlite:///relative.db, sqlite:////absolute.db or ...")
    return unquote(rest[1:])


def _sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, dict[str, Any]]:
    """``redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]``."""
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    sentinels: list[tuple[str, int]] = []
    for address in hosts.split(","):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a Sentinel address is host:port, not {address!r}")
        sentinels.append((host.strip("[]"), int(port)))
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(
            "a Sentinel URL names the service: redis+sentinel://host:port/service[/db]"
        )
    options: dict[str, Any] = {}
    if len(path) == 2:
        options["db"] = int(path[1])
    if credentials:
        user, _, password = credentials.partition(":")
        if user:
            options["username"] = unquote(user)
        if password:
            options["password"] = unquote(password)
    if parts.scheme.lower().startswith("rediss"):
        options["ssl"] = True
    return sentinels, path[0], options
