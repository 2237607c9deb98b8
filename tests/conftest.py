"""Backends for the contract suite: every behaviour test runs on each of them.

- ``memory``: InMemoryCheckpointer
- ``fakeredis``: RedisCheckpointer on fakeredis (in-process, Lua through lupa)
- ``redis``: RedisCheckpointer on a redis-server these tests start on a free loopback port
- ``cluster``: RedisCheckpointer on a 3-master Redis Cluster these tests start, via RedisCluster

Without redis-server on PATH the real-Redis tests skip, unless ATOMR_REQUIRE_REDIS=1 (set by
.ci/run), which makes them fail instead.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis, RedisCluster

from atomr_redis_state import Checkpointer, InMemoryCheckpointer, RedisCheckpointer
from atomr_redis_state.testing import RedisClusterServers, RedisServer

BACKENDS = ["memory", "fakeredis", "redis", "cluster"]
REDIS_BACKENDS = ["fakeredis", "redis", "cluster"]


@dataclass
class Backend:
    """One backend under test: makes checkpointers and lets tests look at raw Redis."""

    name: str
    client: Any = None
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}")

    @property
    def is_redis(self) -> bool:
        return self.client is not None

    def make(
        self,
        *,
        prefix: str | None = None,
        ttl: float | timedelta | None = None,
        keep_last: int | None = None,
    ) -> Checkpointer:
        if self.client is None:
            return InMemoryCheckpointer(ttl=ttl, keep_last=keep_last)
        return RedisCheckpointer(
            self.client, prefix=prefix or self.prefix, ttl=ttl, keep_last=keep_last
        )

    async def raw_keys(self, prefix: str | None = None) -> list[bytes]:
        """Every key under a prefix (SCAN: fine in a test, never in the library)."""
        pattern = f"{prefix or self.prefix}:*"
        return sorted([key async for key in self.client.scan_iter(match=pattern, count=1000)])


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
    else:
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        client = RedisCluster.from_url(cluster.url)
        yield Backend(name, client)
        await client.aclose()


@pytest.fixture
def checkpointer(backend: Backend) -> Checkpointer:
    return backend.make()
