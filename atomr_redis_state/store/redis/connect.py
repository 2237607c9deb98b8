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
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
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


def client_from_url(
    url: str, *, cluster: bool, retry: Retry | None, options: dict[str, Any]
) -> Redis | RedisCluster:
    """A standalone or cluster client for ``url`` that returns bytes and retries by ``retry``."""
    options = {**options, "decode_responses": False, "retry": retry or default_retry()}
    if cluster:
        return RedisCluster.from_url(url, **options)
    return Redis.from_url(url, **options)


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
) -> tuple[Redis, Sentinel]:
    """A client of the primary that the Sentinels name ``service_name``, found again after a
    failover; and the Sentinel object (whose connections the caller closes)."""
    sentinel = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
        list(sentinels), sentinel_kwargs=sentinel_options, **options
    )
    client = sentinel.master_for(
        service_name, redis_class=Redis, decode_responses=False, retry=retry or default_retry()
    )
    return client, sentinel
