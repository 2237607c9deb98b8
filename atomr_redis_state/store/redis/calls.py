"""How the Redis store talks to Redis: script calls and commands, with typed failures.

One :class:`Calls` per checkpointer. It initialises a cluster client once, reloads scripts on
NOSCRIPT, rides out a cluster's slot migrations and failovers for a bounded time, waits for
replicas when asked to, and turns what Redis refuses into the library's typed errors.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar, cast

from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    ClusterDownError,
    ClusterError,
    ConnectionError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)

from ...errors import (
    DurabilityError,
    StoreConfigurationError,
    StoreOutOfMemoryError,
    StorePermissionError,
    StoreUnavailableError,
)
from .pipeline import ATTEMPTS, AutoPipeline, ClusterAutoPipeline, client_attempts

T = TypeVar("T")

log = logging.getLogger(__name__)

CLUSTER_RETRY_BUDGET = 10.0
"""Seconds a call on Redis Cluster keeps retrying through slot migrations and failovers."""

_UNAVAILABLE = (ConnectionError, TimeoutError, ClusterDownError, ClusterError, TryAgainError)
"""Failures whose outcome is unknown and that a retry can get past (every call is idempotent)."""

PERMISSION_HINT = (
    "grant the store's Redis user the ACL in the README's Security section "
    "(scripts need +evalsha +script|load +time, and keys ~<prefix>:*)"
)


_CONFIGURATION_PROBLEMS = (
    (
        "CERTIFICATE_VERIFY_FAILED",
        "the Redis server's TLS certificate does not verify: check "
        "ssl_ca_certs (the CA that signed it) and the host name in the URL",
    ),
    ("DB index is out of range", "the server has no such database: check the index in the URL"),
    ("invalid DB index", "the server has no such database: check the index in the URL"),
    ("Invalid Database", "the server has no such database: check the index in the URL"),
    (
        "SELECT is not allowed in cluster mode",
        "Redis Cluster has only database 0: leave the index out of the URL",
    ),
)
"""Text in a redis-py error that marks a setting no retry will fix, and what to do about it."""


def configuration_problem(exc: BaseException) -> str | None:
    """What is wrong with the connection settings, when ``exc`` (or an error it was raised
    from) says so; None for a failure that may pass (a lost connection, a timeout)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return _CONFIGURATION_PROBLEMS[0][1]
        text = str(seen)
        for marker, problem in _CONFIGURATION_PROBLEMS:
            if marker in text:
                return problem
        seen = seen.__cause__ or seen.__context__
    return None


async def _all_or_first_error(futures: builtins.list[asyncio.Future[Any]]) -> builtins.list[Any]:
    """The replies, in order; the first call's error before any later one's."""
    replies = await asyncio.gather(*futures, return_exceptions=True)
    for reply in replies:
        if isinstance(reply, BaseException):
            raise reply
    return replies


def can_pipeline(client: Any) -> bool:
    """True for a redis-py asyncio ``Redis`` or ``RedisCluster`` client (not fakeredis, not a
    wrapper): the clients whose connections :mod:`.pipeline` batches calls on."""
    if isinstance(client, RedisCluster):
        return True
    return isinstance(client, Redis) and not type(client).__module__.startswith("fakeredis")


class Calls:
    """Sends the store's scripts and commands to one client."""

    def __init__(
        self,
        client: Any,
        *,
        replicas: int = 0,
        replica_timeout_ms: int = 1000,
        retry_for: float = CLUSTER_RETRY_BUDGET,
        pipelining: bool = True,
    ) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.pipeline: AutoPipeline | None = None
        if pipelining and can_pipeline(client):
            self.pipeline = (ClusterAutoPipeline if self.cluster else AutoPipeline)(client)
        self.replicas = replicas
        self.replica_timeout_ms = replica_timeout_ms
        self.retry_for = retry_for
        # redis-py's RedisCluster discovers the cluster on first use, and concurrent first
        # commands race in that discovery; so a cluster client is initialised once, up front.
        self._cluster_pending = self.cluster
        self._cluster_lock = asyncio.Lock()

    async def script(
        self,
        script: AsyncScript,
        keys: builtins.list[str],
        args: builtins.list[Any],
        *,
        durable: bool = False,
    ) -> Any:
        """Call ``script``; with ``durable``, also wait for the replicas, in one round trip."""
        if durable and self.replicas:
            return await self.run(lambda: self._script_and_wait(script, keys, args))
        pipeline = self.pipeline
        if pipeline is not None:
            return await self.run(lambda: pipeline.script(script, keys, args))
        return await self.run(lambda: self._script(script, keys, args))

    async def many(
        self, calls: builtins.list[tuple[AsyncScript, builtins.list[str], builtins.list[Any]]]
    ) -> builtins.list[Any]:
        """Call many read-only or idempotent scripts (of many slots) together: batched by the
        automatic pipeline, else in one redis-py pipeline on standalone Redis, else (a cluster
        without pipelining) a few at a time. Their replies, in order."""
        pipeline = self.pipeline
        if pipeline is not None:
            return await asyncio.gather(
                *(self.run(partial(pipeline.script, *call)) for call in calls)
            )
        if not self.cluster:
            return await self.run(lambda: self._in_order(calls, wait=False))
        limit = asyncio.Semaphore(8)

        async def one(call: tuple[AsyncScript, builtins.list[str], builtins.list[Any]]) -> Any:
            async with limit:
                return await self.script(*call)

        return await asyncio.gather(*(one(call) for call in calls))

    async def in_order(
        self, calls: builtins.list[tuple[AsyncScript, builtins.list[str], builtins.list[Any]]]
    ) -> builtins.list[Any]:
        """Call several scripts (of different slots) in this order: in one batch of the
        automatic pipeline (or one redis-py pipeline, then WAIT for the replicas if asked), so
        one round trip, on standalone Redis; one after the other on Redis Cluster. The replies,
        or the first script's error."""
        if self.cluster:
            return [await self.script(script, keys, args) for script, keys, args in calls]
        pipeline = self.pipeline
        if pipeline is not None and not self.replicas:
            return await self.run(lambda: _all_or_first_error(pipeline.scripts_together(calls)))
        return await self.run(lambda: self._in_order(calls))

    async def _in_order(
        self,
        calls: builtins.list[tuple[AsyncScript, builtins.list[str], builtins.list[Any]]],
        *,
        wait: bool = True,
    ) -> builtins.list[Any]:
        for _ in range(2):
            async with self.client.pipeline(transaction=False) as pipe:
                for script, keys, args in calls:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                waits = wait and self.replicas > 0
                if waits:
                    pipe.execute_command("WAIT", self.replicas, self.replica_timeout_ms)
                replies = await pipe.execute(raise_on_error=False)
            if any(isinstance(reply, NoScriptError) for reply in replies):
                # Load them all and send them all again, in order: every script is idempotent.
                for script, _, _ in calls:
                    await self.client.script_load(script.script)
                continue
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            if waits and int(replies[-1]) < self.replicas:
                raise DurabilityError(self.replicas, int(replies[-1]), self.replica_timeout_ms)
            return cast(builtins.list[Any], replies[: len(calls)])
        raise NoScriptError("the scripts could not be loaded")

    async def commands(self, *commands: tuple[Any, ...]) -> builtins.list[Any]:
        """Send several commands in one round trip; their raw replies (pipelined), else
        redis-py's parsed replies."""
        pipeline = self.pipeline
        if pipeline is not None:
            return await self.run(
                lambda: asyncio.gather(*(pipeline.command(*command) for command in commands))
            )
        return await self.run(lambda: self._pipelined(commands))

    async def _pipelined(self, commands: tuple[tuple[Any, ...], ...]) -> builtins.list[Any]:
        async with self.client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)
            return cast(builtins.list[Any], await pipe.execute())

    async def command(self, *args: Any) -> Any:
        """Send one command; its raw reply when pipelined, else redis-py's parsed reply."""
        pipeline = self.pipeline
        if pipeline is not None:
            return await self.run(lambda: pipeline.command(*args))
        return await self.run(lambda: self.client.execute_command(*args))

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run ``operation`` (one or more commands), with typed errors and cluster retries."""
        started = time.monotonic()
        attempt = 0
        tried = 0  # with the client's own retries
        while True:
            attempt += 1
            try:
                await self._cluster_ready()
                return await operation()
            except OutOfMemoryError as exc:
                raise StoreOutOfMemoryError(
                    "Redis is over its maxmemory (noeviction): nothing was written; free memory "
                    "(delete runs, set a ttl or keep_last) or raise maxmemory"
                ) from exc
            except NoPermissionError as exc:
                raise StorePermissionError(f"{exc}; {PERMISSION_HINT}") from exc
            except (AuthenticationError, AuthenticationWrongNumberOfArgsError) as exc:
                raise StorePermissionError(f"Redis refused the credentials: {exc}") from exc
            except (*_UNAVAILABLE, AttributeError) as exc:
                problem = configuration_problem(exc)
                if problem is not None:
                    raise StoreConfigurationError(f"{problem} ({exc})") from exc
                # AttributeError: redis-py's cluster client can drop a connection that another
                # call is using while it re-reads the slot map during a reshard. Whether or not
                # that call ran, running it again is safe: every call is idempotent.
                if isinstance(exc, AttributeError) and not self.cluster:
                    raise
                elapsed = time.monotonic() - started
                tried += getattr(exc, ATTEMPTS, None) or client_attempts(self.client, exc)
                if not self.cluster or elapsed >= self.retry_for:
                    raise StoreUnavailableError(
                        f"Redis unavailable after {tried} attempt(s) in {elapsed:.1f} s "
                        f"({type(exc).__name__}: {exc}); the outcome is unknown: call again "
                        "with the same arguments"
                    ) from exc
                delay = random.uniform(0, min(1.0, 0.02 * 2**attempt))
                log.info("cluster call failed (%r); retrying in %.2f s", exc, delay)
                await asyncio.sleep(delay)
            except ResponseError as exc:
                problem = configuration_problem(exc)
                if problem is not None:
                    raise StoreConfigurationError(f"{problem} ({exc})") from exc
                if "can't run this command" in str(exc) or "no permissions" in str(exc):
                    raise StorePermissionError(
                        f"the Redis user may not run a command the store needs ({exc}); "
                        f"{PERMISSION_HINT}"
                    ) from exc
                raise

    async def _script(
        self, script: AsyncScript, keys: builtins.list[str], args: builtins.list[Any]
    ) -> Any:
        """Call ``script``, retrying once on NOSCRIPT.

        redis-py already reloads a script on NOSCRIPT; on ``RedisCluster`` the retried EVALSHA
        has been seen to fail again while the load reaches every primary (redis-py issue 3935).
        """
        try:
            return await script(keys=keys, args=args)
        except NoScriptError:
            return await script(keys=keys, args=args)

    async def _script_and_wait(
        self, script: AsyncScript, keys: builtins.list[str], args: builtins.list[Any]
    ) -> Any:
        """EVALSHA then WAIT in one pipeline: the reply comes once the replicas have the write."""
        for _ in range(2):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                pipe.execute_command("WAIT", self.replicas, self.replica_timeout_ms)
                reply, confirmed = await pipe.execute(raise_on_error=False)
            if isinstance(reply, NoScriptError):
                await self.client.script_load(script.script)
                continue
            if isinstance(reply, Exception):
                raise reply
            if isinstance(confirmed, Exception):
                raise confirmed
            if int(confirmed) < self.replicas:
                raise DurabilityError(self.replicas, int(confirmed), self.replica_timeout_ms)
            return reply
        raise NoScriptError("the script could not be loaded")

    async def ready(self) -> None:
        """Make sure the client is ready for commands (initialises a cluster client once)."""
        await self._cluster_ready()

    async def _cluster_ready(self) -> None:
        """Initialise a RedisCluster client once, before its first command (a no-op otherwise)."""
        if not self._cluster_pending:
            return
        async with self._cluster_lock:
            if self._cluster_pending:
                await self.client.initialize()
                self._cluster_pending = False
