"""Store from a URL: one function picks the store by scheme, and the store works."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from atomr_redis_state import CheckpointKey, InMemoryCheckpointer, RedisCheckpointer, Snapshot
from atomr_redis_state.store.url import open_store, store_from_url
from atomr_redis_state.testing import (
    PostgresServer,
    RedisClusterServers,
    RedisServer,
    SentinelSetup,
    running_sentinels,
)

KEY = CheckpointKey("wf-url", "r", 0)


async def round_trip(url: str, **options: object) -> Snapshot | None:
    async with open_store(url, prefix="t-url", **options) as store:  # type: ignore[arg-type]
        await store.save(Snapshot(KEY, {"a": 1}))
        return await store.latest("wf-url", "r")


def test_memory_url_is_the_in_memory_store() -> None:
    store = store_from_url("memory://", ttl=60, keep_last=3)
    assert isinstance(store, InMemoryCheckpointer)
    assert (store.ttl_ms, store.keep_last) == (60_000, 3)


async def test_redis_url_is_a_working_redis_store(redis_server: RedisServer) -> None:
    store = store_from_url(redis_server.url, prefix="t-url", ttl=60)
    assert isinstance(store, RedisCheckpointer)
    await store.aclose()
    snapshot = await round_trip(redis_server.url)
    assert snapshot is not None
    assert snapshot.values == {"a": 1}


async def test_redis_url_with_cluster_reaches_the_cluster(
    redis_cluster: RedisClusterServers,
) -> None:
    snapshot = await round_trip(redis_cluster.url, cluster=True)
    assert snapshot is not None
    assert snapshot.values == {"a": 1}


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    with running_sentinels(replicas=0) as setup:
        yield setup


async def test_sentinel_url_reaches_the_primary_sentinel_names(sentinels: SentinelSetup) -> None:
    hosts = ",".join(f"{host}:{port}" for host, port in sentinels.sentinel_addresses)
    snapshot = await round_trip(f"redis+sentinel://{hosts}/{sentinels.service_name}/0")
    assert snapshot is not None
    assert snapshot.values == {"a": 1}


@pytest.mark.parametrize(
    "url",
    [
        "http://example.invalid/",
        "localhost:6379",
        "redis+sentinel://127.0.0.1:1/",
        "redis+sentinel://nohost/svc",
        "sqlite://relative.db",
    ],
)
def test_a_url_of_no_known_shape_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"URL|address|Sentinel"):
        store_from_url(url)


def test_cluster_needs_a_redis_url() -> None:
    with pytest.raises(ValueError, match="cluster"):
        store_from_url("memory://", cluster=True)


def test_url_must_be_text() -> None:
    with pytest.raises(TypeError):
        store_from_url(b"redis://localhost")  # type: ignore[arg-type]


async def test_memory_url_round_trips() -> None:
    snapshot = await round_trip("memory://")
    assert snapshot is not None
    assert snapshot.values == {"a": 1}


async def test_sqlite_url_is_a_file_that_keeps_its_runs(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    assert await round_trip(url) is not None
    async with open_store(url) as again:  # another store on the same file
        snapshot = await again.latest("wf-url", "r")
    assert snapshot is not None
    assert snapshot.values == {"a": 1}


async def test_sqlite_memory_url_is_a_private_database() -> None:
    snapshot = await round_trip("sqlite://:memory:")
    assert snapshot is not None
    assert snapshot.values == {"a": 1}


async def test_postgres_url_is_a_working_postgres_store(postgres_server: PostgresServer) -> None:
    schema = f"u{uuid.uuid4().hex[:8]}"
    snapshot = await round_trip(postgres_server.url, schema=schema)
    assert snapshot is not None
    assert snapshot.values == {"a": 1}
    store = store_from_url(postgres_server.url, schema=schema)
    assert type(store).__name__ == "PostgresCheckpointer"
    await store.aclose()  # type: ignore[attr-defined]
