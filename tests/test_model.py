"""The in-memory store answers every operation sequence as Redis does (tests/model.py).

Random sequences of saves (exclusive or not, the same snapshot saved twice), loads, latest,
list (limit, before), forks (a fresh id, none, the same fork sent twice, a fork id reused),
deletes and list_runs, with and without ``ttl`` and ``keep_last``, run on real Redis (the
judge), fakeredis and the in-memory store side by side, and on Redis, SQLite and Postgres. The
Hypothesis profile is ``ci`` (200 sequences); ``ATOMR_HYPOTHESIS_PROFILE=long`` runs 2,000.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from atomr_redis_state import Checkpointer, InMemoryCheckpointer, RedisCheckpointer
from atomr_redis_state.store.sql import PostgresCheckpointer, SqliteCheckpointer
from atomr_redis_state.testing import PostgresServer, RedisServer, postgres_pool
from tests.model import Config, NamedFactory, Op, compare, configs, sequences

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
PROFILE = os.environ.get("ATOMR_HYPOTHESIS_PROFILE", "ci")


@asynccontextmanager
async def memory(ttl: float | None, keep_last: int | None) -> AsyncIterator[Checkpointer]:
    yield InMemoryCheckpointer(ttl=ttl, keep_last=keep_last)


@asynccontextmanager
async def fake(ttl: float | None, keep_last: int | None) -> AsyncIterator[Checkpointer]:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(version=(7, 0)))
    yield RedisCheckpointer(client, ttl=ttl, keep_last=keep_last)
    await client.aclose()


def real_redis(client: Redis) -> NamedFactory:
    """Stores on a real Redis, each under a prefix of its own, over one client (and one
    event loop) for every sequence."""

    @asynccontextmanager
    async def open_store(ttl: float | None, keep_last: int | None) -> AsyncIterator[Checkpointer]:
        prefix = f"model-{uuid.uuid4().hex[:12]}"
        yield RedisCheckpointer(client, prefix=prefix, ttl=ttl, keep_last=keep_last)

    return NamedFactory("redis", open_store)


def sqlite_store(path: Path) -> NamedFactory:
    """SQLite stores on one file, emptied for every sequence."""

    @asynccontextmanager
    async def open_store(ttl: float | None, keep_last: int | None) -> AsyncIterator[Checkpointer]:
        async with SqliteCheckpointer(path, ttl=ttl, keep_last=keep_last) as store:
            await store.setup()
            await asyncio.to_thread(empty_sqlite, path)
            yield store

    return NamedFactory("sqlite", open_store)


def empty_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM atomr_snapshots")
        conn.execute("DELETE FROM atomr_runs")


def postgres_store(pool: AsyncConnectionPool[Any], schema: str) -> NamedFactory:
    """Postgres stores on one schema, emptied for every sequence."""

    @asynccontextmanager
    async def open_store(ttl: float | None, keep_last: int | None) -> AsyncIterator[Checkpointer]:
        store = PostgresCheckpointer(pool, schema=schema, ttl=ttl, keep_last=keep_last)
        async with pool.connection() as conn:
            await conn.execute(f'TRUNCATE "{schema}".atomr_snapshots, "{schema}".atomr_runs')
        yield store

    return NamedFactory("postgres", open_store)


def check_sequences(loop: asyncio.AbstractEventLoop, factories: list[NamedFactory]) -> None:
    """Every sequence Hypothesis draws (the profile's number) gets the same answers from every
    factory's store as from the first's."""

    @settings(settings.get_profile(PROFILE))
    @given(config=configs(), sequence=sequences())
    def check(config: Config, sequence: list[Op]) -> None:
        loop.run_until_complete(compare(factories, config, sequence))

    check()


@pytest.mark.timeout(300 if PROFILE == "ci" else 0)  # 0: none, for the long profile
def test_every_store_answers_every_sequence_as_redis_does(redis_server: RedisServer) -> None:
    loop = asyncio.new_event_loop()
    client = Redis.from_url(redis_server.url)
    factories = [real_redis(client), NamedFactory("fakeredis", fake)]
    factories.append(NamedFactory("memory", memory))
    try:
        check_sequences(loop, factories)
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()


@pytest.mark.timeout(600 if PROFILE == "ci" else 0)
def test_the_sql_stores_answer_every_sequence_as_redis_does(
    redis_server: RedisServer, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    loop = asyncio.new_event_loop()
    client = Redis.from_url(redis_server.url)
    pool = loop.run_until_complete(postgres_pool(postgres_server.url))
    schema = f"model_{uuid.uuid4().hex[:8]}"
    loop.run_until_complete(PostgresCheckpointer(pool, schema=schema).setup())
    factories = [
        real_redis(client),
        sqlite_store(tmp_path / "model.db"),
        postgres_store(pool, schema),
    ]
    try:
        check_sequences(loop, factories)
    finally:
        loop.run_until_complete(client.aclose())
        loop.run_until_complete(pool.close())
        loop.close()
