"""The blocking saver: :class:`RedisStateSaver`, for ``graph.invoke`` / ``graph.stream``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from redis import Redis, RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from ..store.redis.connect import sync_client_from_url
from . import scripts
from ._core import Call, Calls, Op, Pipe, RedisSaverCore, Request, Ttl
from .aio import _check_client

T = TypeVar("T")


class RedisStateSaver(RedisSaverCore):
    """The blocking twin of :class:`.AsyncRedisStateSaver`: same options, same keys, same
    scripts, for ``graph.invoke`` / ``graph.stream`` with a ``redis.Redis`` or
    ``redis.RedisCluster`` client (``decode_responses=False``).

    Its async methods run the blocking ones in a worker thread (``asyncio.to_thread``), so it
    also serves ``graph.ainvoke``; for asyncio code, :class:`.AsyncRedisStateSaver` is faster.
    """

    def __init__(
        self,
        client: Redis | RedisCluster | Any,
        *,
        prefix: str = "atomr",
        ttl: Ttl = None,
        serde: SerializerProtocol | None = None,
    ) -> None:
        _check_client(client, asynchronous=False)
        super().__init__(
            prefix=prefix, ttl=ttl, serde=serde, cluster=isinstance(client, RedisCluster)
        )
        self.client = client
        self._scripts: dict[str, Script] = {
            name: client.register_script(scripts.source(name)) for name in scripts.NAMES
        }
        self._owns_client = False

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
    ) -> RedisStateSaver:
        """Connect to ``url`` (``cluster=True`` for Redis Cluster), with the store's default retry
        policy (see :func:`~atomr_redis_state.store.redis.connect.default_retry`); :meth:`close`
        closes it."""
        client = sync_client_from_url(url, cluster=cluster, retry=None, options=client_options)
        saver = cls(client, prefix=prefix, ttl=ttl, serde=serde)
        saver._owns_client = True
        return saver

    @classmethod
    @contextmanager
    def from_conn_string(
        cls,
        conn_string: str,
        *,
        cluster: bool = False,
        prefix: str = "atomr",
        ttl: Ttl = None,
        serde: SerializerProtocol | None = None,
        **client_options: Any,
    ) -> Iterator[RedisStateSaver]:
        """``with RedisStateSaver.from_conn_string(url) as saver:``, the shape of
        langgraph-checkpoint-redis's and langgraph-checkpoint-postgres's savers: a saver on a
        client of its own (as :meth:`from_url` makes it), closed when the block ends."""
        with cls.from_url(
            conn_string, cluster=cluster, prefix=prefix, ttl=ttl, serde=serde, **client_options
        ) as saver:
            yield saver

    def setup(self) -> None:
        """Does nothing, and is there so that code written for other savers runs unchanged
        (``saver.setup()``): the Redis layout needs no schema, index or migration; keys are
        made by the first write."""

    async def asetup(self) -> None:
        """Does nothing (see :meth:`setup`)."""

    def close(self) -> None:
        """Close the client if this saver created it (see :meth:`from_url`)."""
        if not self._owns_client:
            return
        if isinstance(self.client, RedisCluster):
            # redis-py 8.0's RedisCluster.close() leaves its nodes' pooled connections open.
            nodes: Any = self.client.nodes_manager.nodes_cache.values()
            for node in nodes:
                if node.redis_connection is not None:
                    node.redis_connection.connection_pool.disconnect()
        self.client.close()

    def __enter__(self) -> RedisStateSaver:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # The sync API

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._run(self._op_get_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        yield from self._run(self._op_list(config, filter=filter, before=before, limit=limit))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._run(self._op_put(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._run(self._op_put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._run(self._op_prune([thread_id], "delete"))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._run(self._op_delete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run(self._op_copy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._run(self._op_prune(thread_ids, strategy))

    # The async API, in a worker thread

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        op = self._op_list(config, filter=filter, before=before, limit=limit)
        for item in await asyncio.to_thread(self._run, op):
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)

    # Running the operations

    def _run(self, op: Op[T]) -> T:
        try:
            request = next(op)
            while True:
                request = op.send(self._execute(request))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _execute(self, request: Request) -> Any:
        if isinstance(request, Call):
            return self._call(request)
        if isinstance(request, Calls):
            return [self._call(call) for call in request.calls]
        pipe: Pipe = request
        with self.client.pipeline(transaction=False) as pipeline:
            for command in pipe.commands:
                pipeline.execute_command(*command)
            return pipeline.execute()

    def _call(self, call: Call) -> Any:
        """Call a script, retrying once on NOSCRIPT (see AsyncRedisStateSaver._call)."""
        script = self._scripts[call.script]
        try:
            return script(keys=call.keys, args=call.args)
        except NoScriptError:
            return script(keys=call.keys, args=call.args)
