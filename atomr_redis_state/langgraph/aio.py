"""The asyncio saver: :class:`AsyncRedisStateSaver`, for ``graph.ainvoke`` / ``graph.astream``."""

from __future__ import annotations

import asyncio
import builtins
import hashlib
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError, NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..store.redis.connect import client_from_url
from ..store.redis.pipeline import pack
from . import scripts
from ._core import Call, Calls, Op, Pipe, RedisSaverCore, Request, Ttl

T = TypeVar("T")

_EVALSHA = b"EVALSHA"

_IN_FLIGHT = 2
"""At most this many batches on the wire at once (the server works on one while the next
one's replies are read and the one after is gathered)."""

_BATCH = 128
"""At most this many calls in one batch."""

_BATCH_BYTES = 512 * 1024
"""At most this many bytes of packed calls in one batch (one call may be larger)."""

_CONCURRENT_CALLS = 16
"""At most this many script calls in flight for one multi-slot operation on a cluster."""


class AsyncRedisStateSaver(RedisSaverCore):
    """A LangGraph checkpoint saver on Redis or Redis Cluster, for asyncio.

    ``client`` is a ``redis.asyncio.Redis``, a ``redis.asyncio.RedisCluster`` or a
    ``fakeredis.FakeAsyncRedis`` created with ``decode_responses=False`` (the default). It is
    used, not owned: close it yourself (or use :meth:`from_url`, whose client this closes).

    ``ttl`` (seconds or a timedelta) makes threads ephemeral: all keys of a thread expire
    together, no earlier than ``ttl`` and no later than ``2 * ttl`` after its last write.
    ``serde`` is any LangGraph serializer (``JsonPlusSerializer`` by default; an
    ``EncryptedSerializer`` encrypts every stored value). ``prefix`` separates tenants.

    Every saver call on a thread is one atomic Lua script, one round trip.
    """

    def __init__(
        self,
        client: Redis | RedisCluster | Any,
        *,
        prefix: str = "atomr",
        ttl: Ttl = None,
        serde: SerializerProtocol | None = None,
    ) -> None:
        _check_client(client, asynchronous=True)
        super().__init__(
            prefix=prefix, ttl=ttl, serde=serde, cluster=isinstance(client, RedisCluster)
        )
        self.client = client
        self._scripts: dict[str, AsyncScript] = {
            name: client.register_script(scripts.source(name)) for name in scripts.NAMES
        }
        self._shas = {
            name: hashlib.sha1(scripts.source(name).encode()).hexdigest().encode()
            for name in scripts.NAMES
        }
        # A plain redis.asyncio.Redis with a connection pool gets script calls packed here (by
        # hiredis) and sent in batches on pooled connections (see _Batcher): the same EVALSHA on
        # the wire, at a fraction of the client CPU of redis-py's generic command path.
        # Anything else goes through redis-py.
        self._direct = type(client) is Redis and getattr(client, "connection", None) is None
        # Shared with the copies LangGraph makes (``with_allowlist`` is a shallow copy).
        self._batcher = _Batcher(client)
        self._loading: dict[str, asyncio.Future[Any]] = {}
        self._owns_client = False
        # redis-py's RedisCluster discovers the cluster on first use, and concurrent first
        # commands race in that discovery; so a cluster client is initialised once, up front.
        self._cluster = _ClusterStart(self.cluster)
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        prefix: str = "atomr",
        ttl: Ttl = None,
        serde: SerializerProtocol | None = None,
        **client_options: Any,
    ) -> AsyncRedisStateSaver:
        """Connect to ``url`` (``cluster=True`` for Redis Cluster), with the store's default retry
        policy (see :func:`~atomr_redis_state.store.redis.connect.default_retry`); :meth:`aclose`
        closes it."""
        client = client_from_url(url, cluster=cluster, retry=None, options=client_options)
        saver = cls(client, prefix=prefix, ttl=ttl, serde=serde)
        saver._owns_client = True
        return saver

    @classmethod
    @asynccontextmanager
    async def from_conn_string(
        cls,
        conn_string: str,
        *,
        cluster: bool = False,
        prefix: str = "atomr",
        ttl: Ttl = None,
        serde: SerializerProtocol | None = None,
        **client_options: Any,
    ) -> AsyncIterator[AsyncRedisStateSaver]:
        """``async with AsyncRedisStateSaver.from_conn_string(url) as saver:``, the shape of
        langgraph-checkpoint-redis's and langgraph-checkpoint-postgres's savers: a saver on a
        client of its own (as :meth:`from_url` makes it), closed when the block ends."""
        async with cls.from_url(
            conn_string, cluster=cluster, prefix=prefix, ttl=ttl, serde=serde, **client_options
        ) as saver:
            yield saver

    async def setup(self) -> None:
        """Does nothing, and is there so that code written for other savers runs unchanged
        (``await saver.setup()``): the Redis layout needs no schema, index or migration; keys
        are made by the first write."""

    async def asetup(self) -> None:
        """Does nothing (see :meth:`setup`)."""

    async def aclose(self) -> None:
        """Close the client if this saver created it (see :meth:`from_url`)."""
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> AsyncRedisStateSaver:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # The async API

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._got(config, await self._call(self._get_call(config)))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        found = await self._run(self._op_list(config, filter=filter, before=before, limit=limit))
        for item in found:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        call, stored = self._put_call(config, checkpoint, metadata, new_versions)
        await self._call(call)
        return stored

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        call = self._put_writes_call(config, writes, task_id, task_path)
        if call is not None:
            await self._call(call)

    async def adelete_thread(self, thread_id: str) -> None:
        await self._run(self._op_prune([thread_id], "delete"))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._run(self._op_delete_for_runs(run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._run(self._op_copy_thread(source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._run(self._op_prune(thread_ids, strategy))

    # The sync API, for a caller on another thread than the event loop the saver runs on

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._blocking(self.aget_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        found = self._blocking(
            self._run(self._op_list(config, filter=filter, before=before, limit=limit))
        )
        yield from found

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._blocking(self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._blocking(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._blocking(self.adelete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._blocking(self.adelete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._blocking(self.acopy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._blocking(self.aprune(thread_ids, strategy=strategy))

    def _blocking(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the saver's event loop from another thread (as LangGraph does for
        sync nodes); from the loop's own thread, or before any async use, that would
        deadlock, so it is refused."""
        loop = self._loop
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop or loop.is_closed():
            coro.close()
            raise RuntimeError(
                "AsyncRedisStateSaver's sync methods only work from another thread than its "
                "event loop: use graph.ainvoke/astream, or RedisStateSaver for graph.invoke/stream"
            )
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    # Running the operations

    async def _run(self, op: Op[T]) -> T:
        self._loop = asyncio.get_running_loop()
        try:
            request = next(op)
            while True:
                request = op.send(await self._execute(request))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def _execute(self, request: Request) -> Any:
        if isinstance(request, Call):
            return await self._call(request)
        if isinstance(request, Calls):
            limit = asyncio.Semaphore(_CONCURRENT_CALLS)

            async def one(call: Call) -> Any:
                async with limit:
                    return await self._call(call)

            return await asyncio.gather(*(one(call) for call in request.calls))
        pipe: Pipe = request
        await self._cluster_ready()
        async with self.client.pipeline(transaction=False) as pipeline:
            for command in pipe.commands:
                pipeline.execute_command(*command)
            return await pipeline.execute()

    async def _call(self, call: Call) -> Any:
        """Call a script: packed and batched (see :class:`_Batcher`) on a plain client, through
        redis-py otherwise. Either way, on NOSCRIPT the script is loaded and the call sent once
        more (redis-py's own reload on ``RedisCluster`` has been seen to fail again while the
        load reaches every primary: redis-py issue 3935)."""
        self._loop = asyncio.get_running_loop()
        if self._direct:
            sha = self._shas[call.script]
            packed = pack((_EVALSHA, sha, len(call.keys), *call.keys, *call.args))
            try:
                return await self._batcher.submit(packed)
            except NoScriptError:
                await self._reload(call.script)
                return await self._batcher.submit(packed)
        await self._cluster_ready()
        script = self._scripts[call.script]
        try:
            return await script(keys=call.keys, args=call.args)
        except NoScriptError:
            return await script(keys=call.keys, args=call.args)

    async def _reload(self, name: str) -> None:
        """Load script ``name`` again after NOSCRIPT (a restart, a failover, ``SCRIPT FLUSH``):
        the callers that met it at once (a whole batch can) share one ``SCRIPT LOAD``."""
        loading = self._loading.get(name)
        if loading is None:
            loading = asyncio.ensure_future(self.client.script_load(scripts.source(name)))
            self._loading[name] = loading
            loading.add_done_callback(lambda _: self._loading.pop(name, None))
        await asyncio.shield(loading)

    async def _cluster_ready(self) -> None:
        """Initialise a RedisCluster client once, before its first command (a no-op otherwise)."""
        if self._cluster.pending:
            await self._cluster.start(self.client)


class _ClusterStart:
    def __init__(self, pending: bool) -> None:
        self.pending = pending
        self.lock = asyncio.Lock()

    async def start(self, client: Any) -> None:
        async with self.lock:
            if self.pending:
                await client.initialize()
                self.pending = False


class _Batcher:
    """Sends packed script calls in batches: each batch is one write on one pooled connection,
    and its replies are read in order. At most :data:`_IN_FLIGHT` batches are on the wire at
    once; the calls made meanwhile wait and leave together in the next batch (Redis runs
    commands one at a time, so they would wait there anyway), which keeps writes few and large
    under load and adds no wait when the saver is idle. A batch whose connection fails is sent
    once more, on a fresh connection, for its unanswered calls."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.pending: builtins.list[tuple[bytes, asyncio.Future[Any]]] = []
        self.scheduled = False
        self.in_flight = 0
        self.flushing: set[asyncio.Task[None]] = set()

    def submit(self, packed: bytes) -> asyncio.Future[Any]:
        """Queue one packed call; the future of its reply."""
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Any] = loop.create_future()
        self.pending.append((packed, reply))
        if not self.scheduled and self.in_flight < _IN_FLIGHT:
            self.scheduled = True
            loop.call_soon(self._flush_pending)
        return reply

    def _flush_pending(self) -> None:
        self.scheduled = False
        loop = asyncio.get_running_loop()
        while self.pending and self.in_flight < _IN_FLIGHT:
            batch, self.pending = _cut(self.pending)
            self.in_flight += 1
            task = loop.create_task(self._flush(batch))
            self.flushing.add(task)
            task.add_done_callback(self.flushing.discard)

    async def _flush(self, batch: builtins.list[tuple[bytes, asyncio.Future[Any]]]) -> None:
        try:
            await self._exchange(batch)
        except (ConnectionError, RedisTimeoutError):
            # Once more on a fresh connection, for the calls still unanswered: every script
            # gives the same result when it runs twice (a reply may have been lost after it ran).
            left = [item for item in batch if not item[1].done()]
            try:
                await self._exchange(left)
            except BaseException as exc:
                _fail(left, exc)
        except BaseException as exc:
            _fail(batch, exc)
        finally:
            self.in_flight -= 1
            if self.pending and not self.scheduled:
                # After the callers just answered have run: their next calls join the batch.
                self.scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_pending)

    async def _exchange(self, batch: builtins.list[tuple[bytes, asyncio.Future[Any]]]) -> None:
        """Write ``batch`` on a pooled connection and read its replies in order, within one
        deadline for the whole batch (the connection's ``socket_timeout``)."""
        pool = self.client.connection_pool
        connection = await pool.get_connection()
        try:
            async with asyncio.timeout(connection.socket_timeout):
                await connection.send_packed_command([packed for packed, _ in batch])
                parser = getattr(connection, "_parser", None)
                if _reads_directly(parser, connection.protocol):
                    await _read_replies(parser, batch)
                else:
                    for _, reply in batch:
                        try:
                            value = await connection.read_response()
                        except ResponseError as exc:
                            _settle(reply, exc)
                        else:
                            _settle(reply, value)
        except TimeoutError:
            await connection.disconnect(nowait=True)
            raise RedisTimeoutError(
                f"Timeout: a batch of {len(batch)} call(s) took over {connection.socket_timeout} s"
            ) from None
        except BaseException:
            # Replies may still be on their way: never reuse the connection.
            await connection.disconnect(nowait=True)
            raise
        finally:
            await pool.release(connection)


try:  # redis-py's hiredis reply parser, read directly when it is in use (see _read_replies)
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
    from redis._parsers.hiredis import _AsyncHiredisParser as _HIREDIS_PARSER
except ImportError:  # pragma: no cover - another redis-py layout
    _HIREDIS_PARSER = None  # type: ignore[assignment,misc]
    _NOT_ENOUGH_DATA = None


def _reads_directly(parser: Any, protocol: Any) -> bool:
    """Whether :func:`_read_replies` can take the replies from ``parser``: redis-py's hiredis
    parser, on RESP2 (no push messages) or on RESP3 with a hiredis that marks push messages
    (so they go to redis-py's handler, as ``read_response`` would send them)."""
    if _HIREDIS_PARSER is None or type(parser) is not _HIREDIS_PARSER:
        return False
    if protocol in (None, 2, "2"):
        return True
    return getattr(parser, "_hiredis_PushNotificationType", None) is not None and hasattr(
        parser, "handle_push_response"
    )


async def _read_replies(
    parser: Any, batch: builtins.list[tuple[bytes, asyncio.Future[Any]]]
) -> None:
    """Take the batch's replies from redis-py's hiredis parser as they arrive: the same parser,
    error mapping and push handling as ``Connection.read_response``, without its per-reply
    coroutine and timer (the caller keeps one deadline for the whole batch)."""
    reader = parser._reader
    push = getattr(parser, "_hiredis_PushNotificationType", None)
    for _, reply in batch:
        while True:
            value = reader.gets()
            while value is _NOT_ENOUGH_DATA:
                await parser.read_from_socket()
                value = reader.gets()
            if push is None or type(value) is not push:
                break
            await parser.handle_push_response(value)
        if isinstance(value, ConnectionError):
            raise value
        _settle(reply, value)


def _cut(
    pending: builtins.list[tuple[bytes, asyncio.Future[Any]]],
) -> tuple[
    builtins.list[tuple[bytes, asyncio.Future[Any]]],
    builtins.list[tuple[bytes, asyncio.Future[Any]]],
]:
    """The first batch of ``pending`` (at most ``_BATCH`` calls and ``_BATCH_BYTES`` bytes, at
    least one call), and the rest."""
    size = 0
    for count, (packed, _) in enumerate(pending):
        size += len(packed)
        if count == _BATCH or (count and size > _BATCH_BYTES):
            return pending[:count], pending[count:]
    return pending, []


def _settle(reply: asyncio.Future[Any], value: Any) -> None:
    if reply.done():
        return
    if isinstance(value, BaseException):
        reply.set_exception(value)
    else:
        reply.set_result(value)


def _fail(batch: builtins.list[tuple[bytes, asyncio.Future[Any]]], exc: BaseException) -> None:
    for _, reply in batch:
        if not reply.done():
            if isinstance(exc, asyncio.CancelledError):
                reply.cancel()
            else:
                reply.set_exception(exc)


def _check_client(client: Any, *, asynchronous: bool) -> None:
    """Refuse what is no Redis client, a client of the wrong kind, or one that decodes."""
    import redis

    encoder = getattr(client, "get_encoder", None)
    if encoder is None or not hasattr(client, "register_script"):
        raise TypeError(
            "client must be a redis-py client (redis.asyncio.Redis/RedisCluster for "
            f"AsyncRedisStateSaver, redis.Redis/RedisCluster for RedisStateSaver), "
            f"not {type(client).__name__}"
        )
    is_sync = isinstance(client, redis.Redis | redis.RedisCluster)
    if asynchronous and is_sync:
        raise TypeError(
            "AsyncRedisStateSaver needs a redis.asyncio client; use RedisStateSaver with "
            f"a {type(client).__name__}"
        )
    if not asynchronous and not is_sync:
        raise TypeError(
            "RedisStateSaver needs a blocking redis.Redis or redis.RedisCluster client; use "
            f"AsyncRedisStateSaver with a {type(client).__name__}"
        )
    if encoder().decode_responses:
        raise ValueError("create the Redis client with decode_responses=False")
