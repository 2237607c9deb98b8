"""Clients the store makes for itself: from a URL (standalone or cluster) or from Sentinel.

An injected client keeps its own retry policy; the clients made here get
:func:`default_retry`, because every store operation is safe to send again (a lost reply, a
dropped connection): the store answers a retried call as it would have answered the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import Redis as SyncRedis
from redis import RedisCluster as SyncRedisCluster
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError, TimeoutError
from redis.retry import Retry as SyncRetry

DEFAULT_RETRIES = 3
"""How often a client made by the store retries a command on a connection error or timeout."""


def default_retry(retries: int = DEFAULT_RETRIES) -> Retry:
    """Bounded retries with exponential backoff and full jitter: 50 ms, 100 ms, 200 ms... up
    to 2 s between attempts, on connection errors and timeouts only."""
    return Retry(_backoff(), retries, supported_errors=(ConnectionError, TimeoutError))


def default_sync_retry(retries: int = DEFAULT_RETRIES) -> SyncRetry:
    """:func:`default_retry` for redis-py's synchronous clients."""
    return SyncRetry(_backoff(), retries, supported_errors=(ConnectionError, TimeoutError))


def _backoff() -> ExponentialWithJitterBackoff:
    return ExponentialWithJitterBackoff(cap=2.0, base=0.05)


DEFAULT_MAX_CONNECTIONS = 100
"""Connections a client made by the store opens at most (per node on Redis Cluster)."""
DEFAULT_POOL_TIMEOUT = 10.0
"""Seconds a call waits for a free connection when all of them are busy."""


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's Sentinel pool, whose callers wait for a free connection (as in a
    ``BlockingConnectionPool``) instead of failing when all of them are busy."""


def client_from_url(
    url: str,
    *,
    cluster: bool,
    retry: Retry | None,
    options: dict[str, Any],
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT,
) -> Redis | RedisCluster:
    """A standalone or cluster client for ``url`` that returns bytes and retries by ``retry``.

    A standalone client's pool opens at most ``max_connections``; past that a call waits up
    to ``pool_timeout`` seconds for one to be free (a ``BlockingConnectionPool``), then fails
    with a connection error. A cluster client opens at most ``max_connections`` per node;
    past that a call fails and the store retries it for up to its ``retry_for``.
    """
    options = {**options, "decode_responses": False, "retry": retry or default_retry()}
    options.setdefault("max_connections", max_connections)
    if cluster:
        return RedisCluster.from_url(url, **options)
    pool = BlockingConnectionPool.from_url(url, timeout=pool_timeout, **options)
    return Redis.from_pool(pool)  # which closes the pool with the client


def sync_client_from_url(
    url: str, *, cluster: bool, retry: SyncRetry | None, options: dict[str, Any]
) -> SyncRedis | SyncRedisCluster:
    """:func:`client_from_url` for redis-py's synchronous clients."""
    options = {**options, "decode_responses": False, "retry": retry or default_sync_retry()}
    if cluster:
        return SyncRedisCluster.from_url(url, **options)
    return SyncRedis.from_url(url, **options)


def client_from_sentinel(
    sentinels: Sequence[tuple[str, int]],
    service_name: str,
    *,
    retry: Retry | None,
    sentinel_options: dict[str, Any] | None,
    options: dict[str, Any],
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT,
) -> tuple[Redis, Sentinel]:
    """A client of the primary that the Sentinels name ``service_name``, found again after a
    failover; and the Sentinel object (whose connections the caller closes). Its pool is sized
    and waits as :func:`client_from_url`'s."""
    sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
        list(sentinels), sentinel_kwargs=sentinel_options, **options
    )
    client = sentinel.master_for(
        service_name,
        redis_class=Redis,
        connection_pool_class=BlockingSentinelConnectionPool,
        decode_responses=False,
        retry=retry or default_retry(),
        max_connections=max_connections,
        timeout=pool_timeout,
    )
    return client, sentinel
