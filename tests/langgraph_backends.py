"""Backends for the LangGraph saver tests: fakeredis, a real redis-server, a real 3-master cluster.

``saver_backend`` (parametrized over :data:`SAVER_BACKENDS`) makes async and sync savers with a
key prefix of their own on one of them, and gives raw clients to look at what is stored.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest
import redis
from langgraph.checkpoint.serde.base import SerializerProtocol
from redis.asyncio import Redis, RedisCluster

from atomr_redis_state.langgraph import AsyncRedisStateSaver, RedisStateSaver
from atomr_redis_state.langgraph._core import Ttl
from atomr_redis_state.testing import RedisClusterServers, RedisServer

SAVER_BACKENDS = ["fakeredis", "redis", "cluster"]
REAL_BACKENDS = ["redis", "cluster"]


@dataclass
class SaverBackend:
    """One backend: makes savers and lets tests look at raw Redis."""

    name: str
    client: Any
    sync_client: Any
    prefix: str = field(default_factory=lambda: f"lg{uuid.uuid4().hex[:10]}")

    def make(
        self,
        *,
        ttl: Ttl = None,
        serde: SerializerProtocol | None = None,
        prefix: str | None = None,
    ) -> AsyncRedisStateSaver:
        return AsyncRedisStateSaver(self.client, prefix=prefix or self.prefix, ttl=ttl, serde=serde)

    def make_sync(self, *, ttl: Ttl = None, prefix: str | None = None) -> RedisStateSaver:
        return RedisStateSaver(self.sync_client, prefix=prefix or self.prefix, ttl=ttl)

    async def raw_keys(self, prefix: str | None = None) -> list[bytes]:
        """Every key under the prefix (SCAN: fine in a test, never in the library)."""
        pattern = f"{prefix or self.prefix}:*"
        if isinstance(self.client, RedisCluster):
            found: list[bytes] = []
            for node in self.client.get_primaries():
                node_client = Redis(host=node.host, port=int(node.port))
                found += [k async for k in node_client.scan_iter(match=pattern, count=1000)]
                await node_client.aclose()
            return sorted(found)
        return sorted([key async for key in self.client.scan_iter(match=pattern, count=1000)])


@pytest.fixture(params=SAVER_BACKENDS)
async def saver_backend(request: pytest.FixtureRequest) -> AsyncIterator[SaverBackend]:
    name: str = request.param
    client: Any
    sync_client: Any
    if name == "fakeredis":
        server = fakeredis.FakeServer(version=(7, 0))
        client = fakeredis.FakeAsyncRedis(server=server)
        sync_client = fakeredis.FakeRedis(server=server)
    elif name == "redis":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        client = Redis.from_url(redis_server.url)
        sync_client = redis.Redis.from_url(redis_server.url)
    else:
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        client = RedisCluster.from_url(cluster.url)
        sync_client = redis.RedisCluster.from_url(cluster.url)
    yield SaverBackend(name, client, sync_client)
    await client.aclose()
    sync_client.close()


@pytest.fixture(params=REAL_BACKENDS)
async def real_backend(request: pytest.FixtureRequest) -> AsyncIterator[SaverBackend]:
    """A real redis-server or the real cluster (for comparisons with InMemorySaver)."""
    client: Any
    sync_client: Any
    if request.param == "redis":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        client = Redis.from_url(redis_server.url)
        sync_client = redis.Redis.from_url(redis_server.url)
    else:
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        client = RedisCluster.from_url(cluster.url)
        sync_client = redis.RedisCluster.from_url(cluster.url)
    yield SaverBackend(request.param, client, sync_client)
    await client.aclose()
    sync_client.close()
