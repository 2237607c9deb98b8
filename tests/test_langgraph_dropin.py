"""What users of langgraph-checkpoint-redis and langgraph-checkpoint-postgres expect: the same
names, ``from_conn_string`` as a context manager that closes its client, ``setup()`` (a no-op
here), their ttl dict form, and ``list()`` newest first when no namespace is given."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    CheckpointMetadata,
    empty_checkpoint,
)

from atomr_redis_state.langgraph import (
    AsyncRedisSaver,
    AsyncRedisStateSaver,
    RedisSaver,
    RedisStateSaver,
)
from atomr_redis_state.testing import RedisClusterServers, RedisServer
from tests.langgraph_backends import (  # noqa: F401
    SaverBackend,
    real_backend,
    saver_backend,
)

Saver = BaseCheckpointSaver[Any]


def test_the_names_of_langgraph_checkpoint_redis_are_the_same_classes() -> None:
    assert AsyncRedisSaver is AsyncRedisStateSaver
    assert RedisSaver is RedisStateSaver


# from_conn_string and setup


@pytest.fixture(params=["redis", "cluster"])
def server_url(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[str], bool]]:
    """The url to connect to, every node's url (to look at its clients), and whether it is a
    cluster."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        yield server.url, [server.url], False
    else:
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        yield cluster.url, [node.url for node in cluster.nodes], True


def clients_named(urls: list[str], name: str) -> int:
    """How many connections named ``name`` the servers have open."""
    count = 0
    for url in urls:
        admin = redis.Redis.from_url(url)
        count += sum(1 for client in admin.client_list() if client["name"] == name)
        admin.close()
    return count


def a_checkpoint_config(thread: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


def metadata(step: int = 0, source: str = "loop") -> CheckpointMetadata:
    return {"source": source, "step": step, "parents": {}}  # type: ignore[typeddict-item]


async def test_async_from_conn_string_yields_a_working_saver_and_closes_its_client(
    server_url: tuple[str, list[str], bool],
) -> None:
    url, nodes, cluster = server_url
    name = f"lg-{uuid.uuid4().hex[:8]}"
    thread = f"t-{uuid.uuid4()}"
    async with AsyncRedisStateSaver.from_conn_string(
        url, cluster=cluster, prefix=name, client_name=name
    ) as saver:
        await saver.setup()
        stored = await saver.aput(a_checkpoint_config(thread), empty_checkpoint(), metadata(), {})
        got = await saver.aget_tuple(stored)
        assert got is not None
        assert got.config == stored
        assert clients_named(nodes, name) >= 1
        await saver.adelete_thread(thread)
    assert clients_named(nodes, name) == 0


def test_sync_from_conn_string_yields_a_working_saver_and_closes_its_client(
    server_url: tuple[str, list[str], bool],
) -> None:
    url, nodes, cluster = server_url
    name = f"lg-{uuid.uuid4().hex[:8]}"
    thread = f"t-{uuid.uuid4()}"
    with RedisStateSaver.from_conn_string(
        url, cluster=cluster, prefix=name, client_name=name
    ) as saver:
        saver.setup()
        stored = saver.put(a_checkpoint_config(thread), empty_checkpoint(), metadata(), {})
        got = saver.get_tuple(stored)
        assert got is not None
        assert got.config == stored
        assert clients_named(nodes, name) >= 1
        saver.delete_thread(thread)
    assert clients_named(nodes, name) == 0


async def use_and_fail_async(url: str, name: str) -> None:
    async with AsyncRedisSaver.from_conn_string(url, client_name=name) as saver:
        await saver.aget_tuple(a_checkpoint_config("t"))
        raise RuntimeError("boom")


def use_and_fail_sync(url: str, name: str) -> None:
    with RedisSaver.from_conn_string(url, client_name=name) as saver:
        saver.get_tuple(a_checkpoint_config("t"))
        raise RuntimeError("boom")


async def test_from_conn_string_closes_its_client_when_the_block_raises(
    redis_server: RedisServer,
) -> None:
    name = f"lg-{uuid.uuid4().hex[:8]}"
    with pytest.raises(RuntimeError, match="boom"):
        await use_and_fail_async(redis_server.url, name)
    with pytest.raises(RuntimeError, match="boom"):
        use_and_fail_sync(redis_server.url, name)
    assert clients_named([redis_server.url], name) == 0


async def test_setup_writes_nothing_and_can_be_called_again(
    saver_backend: SaverBackend,  # noqa: F811
) -> None:
    saver = saver_backend.make()
    sync_saver = saver_backend.make_sync()
    for _ in range(2):
        assert await saver.setup() is None  # type: ignore[func-returns-value]
        assert await saver.asetup() is None  # type: ignore[func-returns-value]
        assert sync_saver.setup() is None  # type: ignore[func-returns-value]
        assert await sync_saver.asetup() is None  # type: ignore[func-returns-value]
    assert await saver_backend.raw_keys() == []
    stored = await saver.aput(a_checkpoint_config("t"), empty_checkpoint(), metadata(), {})
    assert sync_saver.get_tuple(stored) is not None


# ttl in langgraph-checkpoint-redis's dict form (minutes)


async def test_the_ttl_dict_form_counts_minutes(
    saver_backend: SaverBackend,  # noqa: F811
) -> None:
    saver = saver_backend.make(ttl={"default_ttl": 2, "refresh_on_read": False})
    assert saver.ttl_ms == 120_000
    assert saver_backend.make(ttl=120).ttl_ms == saver.ttl_ms
    await saver.aput(a_checkpoint_config("t"), empty_checkpoint(), metadata(), {})
    keys = await saver_backend.raw_keys()
    assert keys
    for key in keys:
        remaining = await saver_backend.client.pttl(key)
        assert 100_000 < remaining <= 240_000


def test_a_ttl_dict_without_default_ttl_means_no_ttl() -> None:
    client = redis.Redis()  # never connects: no call is made
    assert RedisStateSaver(client, ttl={}).ttl_ms is None
    assert RedisStateSaver(client, ttl={"default_ttl": None}).ttl_ms is None
    assert RedisStateSaver(client, ttl={"default_ttl": 0.5}).ttl_ms == 30_000
    assert RedisStateSaver(client, ttl=timedelta(minutes=1)).ttl_ms == 60_000


@pytest.mark.parametrize(
    ("ttl", "error", "message"),
    [
        ({"default_ttl": 5, "refresh_on_read": True}, ValueError, "refresh_on_read"),
        ({"default_tll": 5}, ValueError, "unknown ttl setting"),
        ({"default_ttl": "5"}, TypeError, "minutes"),
        ({"default_ttl": True}, TypeError, "minutes"),
        ({"default_ttl": 0}, ValueError, "positive"),
        ({"default_ttl": -1}, ValueError, "positive"),
        ({"default_ttl": float("inf")}, ValueError, "positive"),
    ],
)
def test_a_bad_ttl_dict_is_refused(ttl: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        RedisStateSaver(redis.Redis(), ttl=ttl)
