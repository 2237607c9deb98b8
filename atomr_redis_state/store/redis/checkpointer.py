"""The Redis checkpointer: snapshots as hashes, one sorted set of steps per run, Lua for atomicity.

Every public operation costs one round trip on standalone Redis (a script call, or one command),
every script touches keys of a single Redis Cluster slot (see :mod:`.keys`), and every one is
safe to send again after a lost reply: it answers as the first would have.
"""

from __future__ import annotations

import builtins
import logging
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from functools import partial
from typing import Any, cast

import orjson
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ResponseError

from ...errors import (
    AnswerRefusedError,
    CheckpointConflictError,
    CheckpointNotFoundError,
    LeaseHeldError,
    LeaseLostError,
    RunCancelledError,
    RunNotFoundError,
)
from ..checkpointer import BaseCheckpointer, Fields, Stored, WakeUps
from ..codec import WRITE_TOKEN_FIELD, encode_event, pairs_of, write_token
from ..types import (
    Answer,
    CheckpointEvent,
    CheckpointKey,
    Claim,
    Lease,
    Outcome,
    QueueDepth,
    QueueState,
    RunRecord,
    WorkerInfo,
)
from ..validation import check_positive_int, duration_to_ms, ttl_to_ms
from .calls import CLUSTER_RETRY_BUDGET, Calls
from .connect import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_POOL_TIMEOUT,
    client_from_sentinel,
    client_from_url,
)
from .keys import KeyLayout, RunKeys
from .queue import RedisQueue, queue_record
from .scripts import Scripts
from .watch import Subscription

log = logging.getLogger(__name__)


class RedisCheckpointer(BaseCheckpointer):
    """Checkpoints in Redis, shared by every worker that uses the same server and ``prefix``.

    ``client`` is a ``redis.asyncio.Redis``, a ``redis.asyncio.RedisCluster`` or a
    ``fakeredis.FakeAsyncRedis`` created with ``decode_responses=False`` (the default). It is
    used, not owned: close it yourself (or use :meth:`from_url` / :meth:`from_sentinel`, whose
    client this closes).

    ``ttl`` (seconds or a timedelta) makes runs ephemeral: a run's keys expire together, no
    earlier than ``ttl`` and no later than ``2 * ttl`` after its last save, and never while a
    lease on it is live (see :meth:`renew_lease`). ``keep_last`` keeps
    only the highest ``keep_last`` super-steps of each run, trimmed atomically on save.
    ``replicas=N`` makes every write return only once N replicas have it (``WAIT``, sent in the
    same round trip), raising :class:`~...errors.DurabilityError` when fewer confirm within
    ``replica_timeout``; not on Redis Cluster. On Redis Cluster a call keeps retrying through
    slot migrations, failovers and redirects for up to ``retry_for`` (default 10 s) before it
    raises :class:`~...errors.StoreUnavailableError`.

    ``pipelining`` (on by default) sends the calls that concurrent coroutines make in one
    event-loop iteration together, in one write on one connection, each caller still getting
    its own reply or error (see :mod:`.pipeline`); ``pipelining=False`` sends each call on its
    own, through redis-py. It applies to ``redis.asyncio.Redis`` clients; fakeredis and
    ``replicas`` (WAIT) calls always go through redis-py.
    """

    def __init__(
        self,
        client: Redis | RedisCluster | Any,
        *,
        prefix: str = "atomr",
        ttl: float | timedelta | None = None,
        keep_last: int | None = None,
        replicas: int = 0,
        replica_timeout: float | timedelta = 1.0,
        retry_for: float | timedelta = CLUSTER_RETRY_BUDGET,
        pipelining: bool = True,
    ) -> None:
        encoder = getattr(client, "get_encoder", None)
        if encoder is None or not hasattr(client, "register_script"):
            raise TypeError(
                "client must be a redis.asyncio.Redis, redis.asyncio.RedisCluster or "
                f"fakeredis.FakeAsyncRedis, not {type(client).__name__}"
            )
        if encoder().decode_responses:
            raise ValueError("create the Redis client with decode_responses=False")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise ValueError(f"replicas must be an int >= 0, got {replicas!r}")
        if replicas and isinstance(client, RedisCluster):
            raise ValueError("replicas (WAIT after each write) is not supported on Redis Cluster")
        self.client = client
        self.keys = KeyLayout(prefix)
        self.ttl_ms = ttl_to_ms(ttl)
        self.keep_last = None if keep_last is None else check_positive_int(keep_last, "keep_last")
        self.replicas = replicas
        wait_ms = cast(int, duration_to_ms(replica_timeout, "replica_timeout"))
        budget_ms = cast(int, duration_to_ms(retry_for, "retry_for"))
        self._calls = Calls(
            client,
            replicas=replicas,
            replica_timeout_ms=wait_ms,
            retry_for=budget_ms / 1000,
            pipelining=bool(pipelining),
        )
        self._scripts = Scripts.register(client)
        self._owned: list[Any] = []
        self._ttl_arg = str(self.ttl_ms or 0)
        self._keep_last_arg = str(self.keep_last or 0)
        self._queue = RedisQueue(client, self._calls, self._scripts, self.keys, self._ttl_arg)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        prefix: str = "atomr",
        ttl: float | timedelta | None = None,
        keep_last: int | None = None,
        replicas: int = 0,
        replica_timeout: float | timedelta = 1.0,
        retry_for: float | timedelta = CLUSTER_RETRY_BUDGET,
        retry: Retry | None = None,
        pipelining: bool = True,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
        **client_options: Any,
    ) -> RedisCheckpointer:
        """Connect to ``url`` (``redis://``, ``rediss://`` for TLS; ``cluster=True`` for Redis
        Cluster); :meth:`aclose` closes the client.

        The client retries a command on connection errors and timeouts by ``retry`` (default:
        :func:`~.connect.default_retry`, 3 retries with exponential backoff and jitter); every
        store operation is safe to retry. ``client_options`` go to redis-py (for example
        ``ssl_ca_certs=``, ``socket_timeout=``).

        The client opens at most ``max_connections`` connections (per node on a cluster). With
        pipelining, concurrent calls share them, a batch per connection; with
        ``pipelining=False`` each call in flight holds one. Past the limit a call waits up to
        ``pool_timeout`` seconds for a free connection, then fails with
        :class:`~...errors.StoreUnavailableError` (on a cluster it is retried for ``retry_for``).
        """
        client = client_from_url(
            url,
            cluster=cluster,
            retry=retry,
            options=client_options,
            max_connections=max_connections,
            pool_timeout=pool_timeout,
        )
        store = cls(
            client,
            prefix=prefix,
            ttl=ttl,
            keep_last=keep_last,
            replicas=replicas,
            replica_timeout=replica_timeout,
            retry_for=retry_for,
            pipelining=pipelining,
        )
        store._owned.append(client)
        return store

    @classmethod
    def from_sentinel(
        cls,
        sentinels: Sequence[tuple[str, int]],
        service_name: str,
        *,
        prefix: str = "atomr",
        ttl: float | timedelta | None = None,
        keep_last: int | None = None,
        replicas: int = 0,
        replica_timeout: float | timedelta = 1.0,
        retry_for: float | timedelta = CLUSTER_RETRY_BUDGET,
        retry: Retry | None = None,
        sentinel_options: dict[str, Any] | None = None,
        pipelining: bool = True,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
        **client_options: Any,
    ) -> RedisCheckpointer:
        """Use the primary that Redis Sentinel names ``service_name``, found again after a
        failover; :meth:`aclose` closes every connection.

        ``sentinels`` are ``(host, port)`` addresses; ``sentinel_options`` go to the
        connections to the Sentinels (for example their password), ``client_options`` to those
        to the primary. With ``replicas=1`` a save returns only once a replica has it, so an
        acknowledged save survives the primary's failure. ``max_connections`` and
        ``pool_timeout``: as in :meth:`from_url`.
        """
        client, sentinel = client_from_sentinel(
            sentinels,
            service_name,
            retry=retry,
            sentinel_options=sentinel_options,
            options=client_options,
            max_connections=max_connections,
            pool_timeout=pool_timeout,
        )
        store = cls(
            client,
            prefix=prefix,
            ttl=ttl,
            keep_last=keep_last,
            replicas=replicas,
            replica_timeout=replica_timeout,
            retry_for=retry_for,
            pipelining=pipelining,
        )
        store._owned += [client, *_sentinel_clients(sentinel)]
        return store

    async def aclose(self) -> None:
        """Close the clients this checkpointer created (see :meth:`from_url`)."""
        for client in self._owned:
            await client.aclose()
        self._owned.clear()

    async def __aenter__(self) -> RedisCheckpointer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (
            f"RedisCheckpointer(prefix={self.keys.prefix!r}, ttl_ms={self.ttl_ms}, "
            f"keep_last={self.keep_last}, replicas={self.replicas})"
        )

    async def _save(
        self,
        key: CheckpointKey,
        fields: Fields,
        *,
        exclusive: bool,
        lease: Lease | None,
        hold_ms: int | None,
        event: CheckpointEvent,
    ) -> None:
        run = self.keys.run(key.workflow_id, key.run_id)
        step = str(key.super_step)
        token = ""
        if exclusive:
            # The snapshot's own digest: a save sent again (by redis-py after a lost reply, or
            # by its caller after an error) finds its own write instead of a conflict.
            token = write_token(fields, lease)
            fields = [*fields, WRITE_TOKEN_FIELD, token.encode()]
        try:
            await self._calls.script(
                self._scripts.save,
                [
                    run.steps,
                    run.snapshot_prefix + step,
                    run.run_index,
                    run.snapshot_prefix,
                    run.record,
                    run.meta,
                ],
                [
                    step,
                    token,
                    self._ttl_arg,
                    self._keep_last_arg,
                    key.run_id,
                    "" if lease is None else str(lease.token),
                    "" if hold_ms is None else str(hold_ms),
                    run.events,
                    encode_event(event),
                    f"{event.timestamp_ms} {event.label}",
                    *fields,
                ],
                durable=True,
            )
        except ResponseError as exc:
            code = str(exc).partition(" ")[0]
            if code == "CONFLICT":
                log.info(
                    "workflow %s run %s: super-step %s already checkpointed",
                    key.workflow_id,
                    key.run_id,
                    step,
                )
                raise CheckpointConflictError(key.workflow_id, key.run_id, key.super_step) from None
            _raise_run_error(exc, key.workflow_id, key.run_id, lease)
            raise

    async def _load(self, key: CheckpointKey) -> Stored | None:
        snapshot = self.keys.run(key.workflow_id, key.run_id).snapshot(key.super_step)
        reply = await self._calls.command("HGETALL", snapshot)
        return reply if type(reply) is dict else dict(pairs_of(reply))

    async def _latest(self, workflow_id: str, run_id: str) -> tuple[int, Stored] | None:
        run = self.keys.run(workflow_id, run_id)
        reply = await self._calls.script(self._scripts.latest, [run.steps, run.snapshot_prefix], [])
        if reply is None:
            return None
        step, flat = reply
        return int(step), dict(pairs_of(flat))

    async def _list(
        self, workflow_id: str, run_id: str, *, limit: int | None, before: int | None
    ) -> builtins.list[tuple[int, int, str]]:
        run = self.keys.run(workflow_id, run_id)
        meta, count = await self._calls.commands(("HGETALL", run.meta), ("ZCARD", run.steps))
        pairs = list(meta.items()) if type(meta) is dict else list(pairs_of(meta))
        if not pairs and not count:
            return []  # no run
        if len(pairs) != count:
            # No meta hash (a run saved before it existed, or no run), or one that a concurrent
            # save or delete changed between the two reads: the script reads it atomically.
            return await self._list_from_snapshots(run, limit=limit, before=before)
        rows = []
        for step, value in pairs:
            ts, _, label = value.partition(b" ")
            rows.append((int(step), int(ts), label.decode("utf-8")))
        rows.sort()
        if before is not None:
            rows = [row for row in rows if row[0] < before]
        return rows[-limit:] if limit else rows

    async def _list_from_snapshots(
        self, run: RunKeys, *, limit: int | None, before: int | None
    ) -> builtins.list[tuple[int, int, str]]:
        upper = "+inf" if before is None else f"({before}"
        flat = await self._calls.script(
            self._scripts.list,
            [run.steps, run.snapshot_prefix],
            [upper, str(limit or 0)],
        )
        it = iter(flat)
        return [
            (int(step), int(ts), label.decode("utf-8"))
            for step, ts, label in zip(it, it, it, strict=True)
        ]

    async def _fork(
        self, from_key: CheckpointKey, new_run_id: str, fields: Fields, event: CheckpointEvent
    ) -> None:
        source = self.keys.run(from_key.workflow_id, from_key.run_id)
        target = self.keys.run(from_key.workflow_id, new_run_id)
        step = from_key.super_step
        try:
            await self._calls.script(
                self._scripts.fork,
                [
                    source.snapshot(step),
                    target.snapshot(step),
                    target.steps,
                    target.run_index,
                    target.meta,
                ],
                [
                    str(step),
                    self._ttl_arg,
                    new_run_id,
                    target.events,
                    encode_event(event),
                    f"{event.timestamp_ms} {event.label}",
                    *fields,
                    WRITE_TOKEN_FIELD,
                    new_run_id.encode(),
                ],
                durable=True,
            )
        except ResponseError as exc:
            code = str(exc).partition(" ")[0]
            if code == "NOTFOUND":
                raise CheckpointNotFoundError(
                    from_key.workflow_id, from_key.run_id, from_key.super_step
                ) from None
            if code == "CONFLICT":
                raise CheckpointConflictError(from_key.workflow_id, new_run_id, step) from None
            raise

    async def _list_runs(
        self, workflow_id: str, *, limit: int, after: str | None
    ) -> builtins.list[str]:
        buckets = self.keys.run_index_buckets(workflow_id)
        live: builtins.list[str] = []
        cursor = after
        while len(live) < limit:
            wanted = limit - len(live)
            low = b"-" if cursor is None else b"(" + cursor.encode("utf-8")
            pages = await self._calls.run(partial(self._index_pages, buckets, low, wanted))
            candidates = sorted(
                (member.decode("utf-8"), bucket)
                for bucket, page in zip(buckets, pages, strict=True)
                for member in page
            )[:wanted]
            if not candidates:
                break
            live += await self._keep_live(workflow_id, candidates)
            if len(candidates) < wanted:
                break
            cursor = candidates[-1][0]
        return live

    async def _index_pages(
        self, buckets: builtins.list[str], low: bytes, wanted: int
    ) -> builtins.list[builtins.list[bytes]]:
        async with self.client.pipeline(transaction=False) as pipe:
            for bucket in buckets:
                pipe.zrangebylex(bucket, low, b"+", start=0, num=wanted)
            return cast(builtins.list[builtins.list[bytes]], await pipe.execute())

    async def _keep_live(
        self, workflow_id: str, candidates: builtins.list[tuple[str, str]]
    ) -> builtins.list[str]:
        """The candidate runs that still exist; prune the index entries of expired ones."""
        steps_keys = [self.keys.run(workflow_id, run_id).steps for run_id, _ in candidates]
        exists = await self._calls.run(lambda: self._exists_each(steps_keys))
        stale: dict[str, builtins.list[tuple[str, str]]] = {}
        for (run_id, bucket), steps, found in zip(candidates, steps_keys, exists, strict=True):
            if not found:
                stale.setdefault(bucket, []).append((run_id, steps))
        for bucket, runs in stale.items():
            await self._calls.script(
                self._scripts.prune_runs,
                [bucket, *(steps for _, steps in runs)],
                [run_id for run_id, _ in runs],
            )
        return [run_id for (run_id, _), found in zip(candidates, exists, strict=True) if found]

    async def _exists_each(self, keys: builtins.list[str]) -> builtins.list[int]:
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.exists(key)
            return cast(builtins.list[int], await pipe.execute())

    async def _list_workflows(self, *, limit: int, after: str | None) -> builtins.list[str]:
        registry = self.keys.workflow_registry_buckets()
        live: builtins.list[str] = []
        cursor = after
        while len(live) < limit:
            wanted = limit - len(live)
            low = b"-" if cursor is None else b"(" + cursor.encode("utf-8")
            pages = await self._calls.run(partial(self._index_pages, registry, low, wanted))
            buckets: dict[str, builtins.list[int]] = {}
            for bucket, page in enumerate(pages):
                for member in page:
                    buckets.setdefault(member.decode("utf-8"), []).append(bucket)
            candidates = sorted(buckets)[:wanted]
            if not candidates:
                break
            # A registry entry outlives the workflow's runs in that bucket (expired, deleted):
            # the workflow counts while any of its run-index buckets exists.
            pairs = [(w, self.keys.run_index_bucket(w, b)) for w in candidates for b in buckets[w]]
            exists = await self._calls.run(partial(self._exists_each, [k for _, k in pairs]))
            found = {w for (w, _), present in zip(pairs, exists, strict=True) if present}
            live += [w for w in candidates if w in found]
            if len(candidates) < wanted:
                break
            cursor = candidates[-1]
        return live

    async def _delete_run(self, workflow_id: str, run_id: str, event: CheckpointEvent) -> bool:
        run = self.keys.run(workflow_id, run_id)
        removed = await self._calls.script(
            self._scripts.delete_run,
            [run.steps, run.snapshot_prefix, run.run_index, run.record, run.deleted, run.meta],
            [run_id, secrets.token_hex(8), run.events, encode_event(event)],
            durable=True,
        )
        return bool(removed)

    async def _acquire_lease(
        self, workflow_id: str, run_id: str, owner: str, ttl_ms: int, *, must_exist: bool
    ) -> Lease:
        run = self.keys.run(workflow_id, run_id)
        try:
            reply = await self._calls.script(
                self._scripts.acquire_lease,
                [run.record, run.steps, run.snapshot_prefix, run.meta, run.run_index],
                [owner, str(ttl_ms), "1" if must_exist else "0", self._ttl_arg, run_id],
                durable=True,
            )
        except ResponseError as exc:
            _raise_run_error(exc, workflow_id, run_id, None)
            raise
        if reply[0] == b"held":
            raise LeaseHeldError(workflow_id, run_id, reply[1].decode(), int(reply[2]))
        token, until, cancel = reply
        return Lease(workflow_id, run_id, owner, int(token), int(until), ttl_ms, cancel == 1)

    async def _renew_lease(self, lease: Lease) -> Lease:
        run = self.keys.run(lease.workflow_id, lease.run_id)
        try:
            until, cancel = await self._calls.script(
                self._scripts.renew_lease,
                [run.record, run.steps, run.snapshot_prefix, run.meta, run.run_index],
                [str(lease.token), str(lease.ttl_ms), self._ttl_arg, lease.run_id],
            )
        except ResponseError as exc:
            _raise_run_error(exc, lease.workflow_id, lease.run_id, lease)
            raise
        return replace(lease, expires_at_ms=int(until), cancel_requested=cancel == 1)

    async def _release_lease(self, lease: Lease, note: bytes | None, *, keep_note: bool) -> bool:
        run = self.keys.run(lease.workflow_id, lease.run_id)
        action = "keep" if keep_note else "0" if note is None else "1"
        released = await self._calls.script(
            self._scripts.release_lease,
            [run.record, run.steps],
            [str(lease.token), action, note or b""],
            durable=True,
        )
        if not released and note is not None:
            raise LeaseLostError(lease.workflow_id, lease.run_id, lease.token)
        return bool(released)

    async def _run_record(self, workflow_id: str, run_id: str) -> RunRecord:
        run = self.keys.run(workflow_id, run_id)
        reply = await self._calls.script(self._scripts.run_record, [run.record], [])
        now, owner, token, until, ttl, note, answer_step, answer, cancel, *queued = reply
        cancel_ms = None if cancel is None else int(cancel)
        lease = None
        if owner is not None and int(until) > int(now):
            lease = Lease(
                workflow_id,
                run_id,
                owner.decode(),
                int(token),
                int(until),
                int(ttl),
                cancel_ms is not None,
            )
        recorded = None
        if answer_step is not None:
            recorded = Answer(int(answer_step), orjson.loads(answer))
        note = None if note is None else orjson.loads(note)
        return RunRecord(lease, note, recorded, cancel_ms, queue_record(queued))

    async def _record_answer(
        self, workflow_id: str, run_id: str, super_step: int, value: bytes, lease: Lease | None
    ) -> None:
        run = self.keys.run(workflow_id, run_id)
        try:
            await self._calls.script(
                self._scripts.record_answer,
                [run.record, run.steps],
                [str(super_step), value, "" if lease is None else str(lease.token)],
                durable=True,
            )
        except ResponseError as exc:
            code, _, detail = str(exc).partition(" ")
            if code == "NOTAT":
                reason = f"the run is at super-step {int(detail)}"
                raise AnswerRefusedError(workflow_id, run_id, super_step, reason) from None
            if code == "ANSWERED":
                raise AnswerRefusedError(workflow_id, run_id, super_step, detail) from None
            _raise_run_error(exc, workflow_id, run_id, lease)
            raise

    # The ready queue: see .queue for how it is laid out and how workers find work.

    async def _submit(
        self, key: CheckpointKey, fields: Fields, delay_ms: int, event: CheckpointEvent
    ) -> bool:
        return await self._queue.submit(key, fields, delay_ms, event)

    async def _claim(self, workflow_id: str, owner: str, ttl_ms: int) -> Claim | None:
        return await self._queue.claim(workflow_id, owner, ttl_ms)

    async def _finish(
        self,
        lease: Lease,
        outcome: Outcome,
        reason: bytes | None,
        retry_ms: int,
        max_attempts: int,
        note: bytes | None,
        *,
        keep_note: bool,
    ) -> QueueState:
        return await self._queue.finish(
            lease, outcome, reason, retry_ms, max_attempts, note, keep_note=keep_note
        )

    async def _requeue(
        self, workflow_id: str, run_id: str, answer: bytes | None, delay_ms: int
    ) -> QueueState:
        return await self._queue.requeue(workflow_id, run_id, answer, delay_ms)

    async def _cancel(self, workflow_id: str, run_id: str) -> QueueState:
        return await self._queue.cancel(workflow_id, run_id)

    async def _queue_depth(self, workflow_id: str) -> QueueDepth:
        return await self._queue.depth(workflow_id)

    def _wake_ups(self, workflow_ids: builtins.list[str]) -> AbstractAsyncContextManager[WakeUps]:
        return self._queue.wake_ups(workflow_ids)

    async def _heartbeat(self, worker_id: str, info: bytes, ttl_ms: int) -> None:
        await self._queue.heartbeat(worker_id, info, ttl_ms)

    async def _workers(self) -> builtins.list[WorkerInfo]:
        return await self._queue.workers()

    async def _forget_worker(self, worker_id: str) -> None:
        await self._queue.forget_worker(worker_id)

    async def _take_permit(self, workflow_id: str, holder: str, limit: int, ttl_ms: int) -> bool:
        return bool(await self._queue.permit(workflow_id, "take", ttl_ms, limit, [holder]))

    async def _renew_permits(
        self, workflow_id: str, holders: builtins.list[str], ttl_ms: int
    ) -> int:
        return await self._queue.permit(workflow_id, "renew", ttl_ms, 0, holders)

    async def _drop_permit(self, workflow_id: str, holder: str) -> None:
        await self._queue.permit(workflow_id, "drop", 1, 0, [holder])

    @asynccontextmanager
    async def _watch(
        self, workflow_id: str, run_id: str | None
    ) -> AsyncIterator[AsyncIterator[CheckpointEvent]]:
        if run_id is None:
            channels = self.keys.event_channels(workflow_id)
        else:
            channels = [self.keys.run(workflow_id, run_id).events]
        subscription = Subscription(self.client, self._calls, channels, workflow_id, run_id)
        try:
            await subscription.open()
            yield subscription.events()
        finally:
            await subscription.aclose()


def _raise_run_error(
    exc: ResponseError, workflow_id: str, run_id: str, lease: Lease | None
) -> None:
    """Turn a script's LEASELOST, LEASEHELD, CANCELLED or RUNNOTFOUND refusal into its typed
    error."""
    code, _, detail = str(exc).partition(" ")
    if code == "LEASELOST":
        raise LeaseLostError(workflow_id, run_id, 0 if lease is None else lease.token) from None
    if code == "LEASEHELD":
        until, _, owner = detail.partition(" ")
        raise LeaseHeldError(workflow_id, run_id, owner, int(until)) from None
    if code == "CANCELLED":
        raise RunCancelledError(workflow_id, run_id) from None
    if code == "RUNNOTFOUND":
        raise RunNotFoundError(workflow_id, run_id) from None


def _sentinel_clients(sentinel: Sentinel) -> builtins.list[Any]:
    """The connections a Sentinel object keeps to the Sentinels themselves."""
    return list(sentinel.sentinels)
