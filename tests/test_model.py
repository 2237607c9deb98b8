"""The in-memory store answers every operation sequence as Redis does (tests/model.py).

Random sequences of saves (exclusive or not, the same snapshot saved twice), loads, latest,
list (limit, before), forks (a fresh id, none, the same fork sent twice, a fork id reused),
deletes and list_runs, with and without ``ttl`` and ``keep_last``, run on real Redis (the
judge), fakeredis and the in-memory store side by side. The Hypothesis profile is ``ci``
(200 sequences); ``ATOMR_HYPOTHESIS_PROFILE=long`` runs 2,000.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from redis.asyncio import Redis

from atomr_redis_state import Checkpointer, InMemoryCheckpointer, RedisCheckpointer
from atomr_redis_state.testing import RedisServer
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


@pytest.mark.timeout(300 if PROFILE == "ci" else 0)  # 0: none, for the long profile
def test_every_store_answers_every_sequence_as_redis_does(redis_server: RedisServer) -> None:
    loop = asyncio.new_event_loop()
    client = Redis.from_url(redis_server.url)
    factories = [real_redis(client), NamedFactory("fakeredis", fake)]
    factories.append(NamedFactory("memory", memory))

    @settings(settings.get_profile(PROFILE))
    @given(config=configs(), sequence=sequences())
    def check(config: Config, sequence: list[Op]) -> None:
        loop.run_until_complete(compare(factories, config, sequence))

    try:
        check()
    finally:
        loop.run_until_complete(client.aclose())
        loop.close()
