"""Backends for the contract suite: every behaviour test runs on each of them.

- ``memory``: InMemoryCheckpointer
- ``fakeredis``: RedisCheckpointer on fakeredis (in-process, Lua through lupa)
- ``redis``: RedisCheckpointer on a redis-server these tests start on a free loopback port
- ``redis-acl``: RedisCheckpointer on a redis-server of its own, connected as a Redis user that has
  exactly the store's ACL (``atomr_redis_state.testing.store_acl``) and nothing more
- ``cluster``: RedisCheckpointer on a 3-master Redis Cluster these tests start, via RedisCluster
- ``sqlite``: SqliteCheckpointer on a file of the test's own (every store ``make`` gives shares it)
- ``postgres``: PostgresCheckpointer on a throwaway Postgres these tests start, in a schema of the
  test's own

Without redis-server on PATH the real-Redis tests skip, unless ATOMR_REQUIRE_REDIS=1 (set by
.ci/run), which makes them fail instead; likewise the Postgres tests without Debian's postgresql
binaries, unless ATOMR_REQUIRE_POSTGRES=1.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis, RedisCluster

from atomr_redis_state import Checkpointer, InMemoryCheckpointer, RedisCheckpointer
from atomr_redis_state.store.sql import SqliteCheckpointer
from atomr_redis_state.testing import (
    PostgresServer,
    RedisClusterServers,
    RedisServer,
    grant_prefix,
    postgres_pool,
    require_binaries,
    run_as_admin,
    start_server,
    store_acl,
)

PIPELINING = os.environ.get("ATOMR_TEST_PIPELINING", "1") != "0"
"""Whether the Redis stores under test pipeline automatically (CI runs the suite both ways)."""

BACKENDS = ["memory", "fakeredis", "redis", "redis-acl", "cluster", "sqlite", "postgres"]
REDIS_BACKENDS = ["fakeredis", "redis", "redis-acl", "cluster"]


@dataclass
class Backend:
    """One backend under test: makes checkpointers and lets tests look at raw Redis."""

    name: str
    client: Any = None
    """For looking at raw Redis (an admin on ``redis-acl``); checkpointers get ``store_client``."""
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")
    store_client: Any = None
    """The client ``make`` hands to checkpointers (``client`` when None)."""
    grant: Callable[[str], None] | None = None
    """Gives the store's Redis user a prefix before ``make`` uses it (``redis-acl``)."""
    sql: Callable[..., Any] | None = None
    """Makes a SQL store (``ttl=``, ``keep_last=``) on the test's own database (set up)."""
    opened: list[Any] = field(default_factory=list, repr=False)
    """The SQL stores ``make`` made, closed when the test ends."""

    @property
    def is_redis(self) -> bool:
        return self.client is not None

    @property
    def is_shared(self) -> bool:
        """True when every store ``make`` gives sees the same data (all but ``memory``)."""
        return self.client is not None or self.sql is not None

    def make(
        self,
        *,
        prefix: str | None = None,
        ttl: float | timedelta | None = None,
        keep_last: int | None = None,
    ) -> Checkpointer:
        if self.sql is not None:
            store: Checkpointer = self.sql(ttl=ttl, keep_last=keep_last)
            self.opened.append(store)
            return store
        if self.client is None:
            return InMemoryCheckpointer(ttl=ttl, keep_last=keep_last)
        prefix = prefix or self.prefix
        if self.grant is not None:
            self.grant(prefix)
        client = self.client if self.store_client is None else self.store_client
        return RedisCheckpointer(
            client, prefix=prefix, ttl=ttl, keep_last=keep_last, pipelining=PIPELINING
        )

    async def raw_keys(self, prefix: str | None = None) -> list[bytes]:
        """Every key under a prefix (SCAN: fine in a test, never in the library)."""
        pattern = f"{prefix or self.prefix}:*"
        return sorted([key async for key in self.client.scan_iter(match=pattern, count=1000)])


@pytest.fixture(scope="session")
def redis_acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server for the ``redis-acl`` backend: each test gets a user with the store's ACL."""
    require_binaries()
    server = start_server(tmp_path_factory.mktemp("redis-acl"))
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    name: str = request.param
    client: Any
    if name == "memory":
        yield Backend(name)
    elif name == "fakeredis":
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(version=(7, 0)))
        yield Backend(name, client)
        await client.aclose()
    elif name == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        client = Redis.from_url(server.url)
        yield Backend(name, client)
        await client.aclose()
    elif name == "redis-acl":
        acl_server: RedisServer = request.getfixturevalue("redis_acl_server")
        user, password = f"store-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        backend = Backend(name, Redis.from_url(acl_server.url))
        run_as_admin(acl_server.port, store_acl(user, password, backend.prefix))
        granted = {backend.prefix}

        def grant(prefix: str) -> None:
            if prefix not in granted:
                granted.add(prefix)
                run_as_admin(acl_server.port, grant_prefix(user, prefix))

        backend.grant = grant
        backend.store_client = Redis(
            host="127.0.0.1", port=acl_server.port, username=user, password=password
        )
        yield backend
        await backend.store_client.aclose()
        # Nothing the store tried was refused, not even silently (events are published with
        # redis.pcall): the server's ACL LOG has no entry for this user (but redis-py's
        # CLIENT SETINFO on connect, which it sends best-effort on Redis 7.2+).
        denied = [
            e
            for e in await backend.client.acl_log(count=128)
            if e["username"] == user and e["object"] != "client|setinfo"
        ]
        await backend.client.acl_deluser(user)
        await backend.client.aclose()
        assert denied == [], f"the store's ACL refused: {denied}"
    elif name == "sqlite":
        path = request.getfixturevalue("tmp_path") / "store.db"
        await SqliteCheckpointer(path).setup()
        backend = Backend(name, sql=partial(SqliteCheckpointer, path))
        yield backend
        for store in backend.opened:
            await store.aclose()
    elif name == "postgres":
        postgres: PostgresServer = request.getfixturevalue("postgres_server")
        schema = f"t{uuid.uuid4().hex[:10]}"
        from atomr_redis_state.store.sql import PostgresCheckpointer

        pool = await postgres_pool(postgres.url)
        await PostgresCheckpointer(pool, schema=schema).setup()
        backend = Backend(name, sql=partial(PostgresCheckpointer, pool, schema=schema))
        yield backend
        for store in backend.opened:
            await store.aclose()
        await pool.close()
    else:
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        client = RedisCluster.from_url(cluster.url)
        yield Backend(name, client)
        await client.aclose()


@pytest.fixture
def checkpointer(backend: Backend) -> Checkpointer:
    return backend.make()
