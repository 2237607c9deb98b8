"""The connection pool of the clients the store makes (from_url, from_sentinel).

At most ``max_connections`` (default 100) are opened; past that a call waits up to
``pool_timeout`` for a free one, then fails with StoreUnavailableError. With pipelining off,
each call in flight holds a connection, so more concurrent calls than connections must wait,
not fail.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from atomr_redis_state import (
    CheckpointKey,
    RedisCheckpointer,
    Snapshot,
    StoreUnavailableError,
)
from atomr_redis_state.testing import (
    CuttingProxy,
    RedisClusterServers,
    RedisServer,
    require_binaries,
    running_sentinels,
)

WF = "wf-pool"
KEY = CheckpointKey(WF, "r", 0)
SAVED = Snapshot(KEY, {"a": 1}, timestamp_ms=1)


async def store_connections(server: RedisServer, name: str) -> int:
    """How many connections the server has from clients named ``name``."""
    async with Redis.from_url(server.url) as admin:
        return sum(1 for c in await admin.client_list() if c["name"] == name)


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
async def test_more_than_a_hundred_concurrent_calls_all_get_their_answer(
    redis_server: RedisServer, pipelining: bool
) -> None:
    name = f"pool-{pipelining}"
    async with RedisCheckpointer.from_url(
        redis_server.url, prefix=name, pipelining=pipelining, client_name=name
    ) as store:
        await store.save(SAVED)
        got = await asyncio.gather(*(store.load(KEY) for _ in range(250)))
        assert got == [SAVED] * 250
        assert await store_connections(redis_server, name) <= 100


async def test_past_max_connections_calls_wait_for_a_free_one(redis_server: RedisServer) -> None:
    async with RedisCheckpointer.from_url(
        redis_server.url,
        prefix="pool-small",
        pipelining=False,
        max_connections=3,
        client_name="pool-small",
    ) as store:
        await store.save(SAVED)
        got = await asyncio.gather(*(store.load(KEY) for _ in range(60)))
        assert got == [SAVED] * 60
        assert await store_connections(redis_server, "pool-small") <= 3


async def test_a_call_that_finds_no_free_connection_in_time_is_unavailable(
    redis_server: RedisServer,
) -> None:
    async with (
        CuttingProxy(redis_server.port) as proxy,
        RedisCheckpointer.from_url(
            proxy.url,
            prefix="pool-busy",
            pipelining=False,
            max_connections=2,
            pool_timeout=0.2,
        ) as store,
    ):
        await store.save(SAVED)
        proxy.hold()  # two calls whose replies never come hold both connections
        stuck = [asyncio.ensure_future(store.load(KEY)) for _ in range(2)]
        await proxy.wait_held(1)
        with pytest.raises(StoreUnavailableError, match=r"after 1 attempt\(s\).*call again"):
            await store.load(KEY)
        await proxy.cut()  # and the two calls held are sent again, and answered
        assert await asyncio.gather(*stuck) == [SAVED, SAVED]


async def test_a_sentinel_client_waits_for_a_free_connection_too() -> None:
    require_binaries()
    with running_sentinels(replicas=0) as setup:
        store = RedisCheckpointer.from_sentinel(
            setup.sentinel_addresses,
            setup.service_name,
            prefix="pool-sentinel",
            pipelining=False,
            max_connections=3,
        )
        async with store:
            await store.save(SAVED)
            got = await asyncio.gather(*(store.load(KEY) for _ in range(60)))
            assert got == [SAVED] * 60


async def test_on_a_cluster_calls_past_a_nodes_connections_are_retried(
    redis_cluster: RedisClusterServers,
) -> None:
    async with RedisCheckpointer.from_url(
        redis_cluster.url, cluster=True, prefix="pool-cluster", pipelining=False, max_connections=3
    ) as store:
        await store.save(SAVED)
        got = await asyncio.gather(*(store.load(KEY) for _ in range(60)))
        assert got == [SAVED] * 60
