"""The Redis checkpointer: snapshots as hashes, one sorted set of steps per run, Lua for atomicity.

Every public operation costs one round trip on standalone Redis (a script call, or one command),
and every script touches keys of a single Redis Cluster slot (see :mod:`.keys`).
"""

from __future__ import annotations

import asyncio
import builtins
import secrets
from dataclasses import replace
from datetime import timedelta
from typing import Any, cast

import orjson
from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from ...errors import (
    CheckpointConflictError,
    CheckpointNotFoundError,
    LeaseHeldError,
    LeaseLostError,
    RunNotFoundError,
)
from ..checkpointer import BaseCheckpointer, Fields, Stored
from ..codec import WRITE_TOKEN_FIELD, pairs_of
from ..types import CheckpointKey, Lease, RunRecord
from ..validation import check_positive_int, ttl_to_ms
from .keys import KeyLayout
from .scripts import Scripts


class RedisCheckpointer(BaseCheckpointer):
    """Checkpoints in Redis, shared by every worker that uses the same server and ``prefix``.

    ``client`` is a ``redis.asyncio.Redis``, a ``redis.asyncio.RedisCluster`` or a
    ``fakeredis.FakeAsyncRedis`` created with ``decode_responses=False`` (the default). It is
    used, not owned: close it yourself (or use :meth:`from_url`, whose client this closes).

    ``ttl`` (seconds or a timedelta) makes runs ephemeral: a run's keys expire together, no
    earlier than ``ttl`` and no later than ``2 * ttl`` after its last save. ``keep_last`` keeps
    only the highest ``keep_last`` super-steps of each run, trimmed atomically on save.
    """

    def __init__(
        self,
        client: Redis | RedisCluster | Any,
        *,
        prefix: str = "atomr",
        ttl: float | timedelta | None = None,
        keep_last: int | None = None,
    ) -> None:
        encoder = getattr(client, "get_encoder", None)
        if encoder is None or not hasattr(client, "register_script"):
            raise TypeError(
                "client must be a redis.asyncio.Redis, redis.asyncio.RedisCluster or "
                f"fakeredis.FakeAsyncRedis, not {type(client).__name__}"
            )
        if encoder().decode_responses:
            raise ValueError("create the Redis client with decode_responses=False")
        self.client = client
        self.keys = KeyLayout(prefix)
        self.ttl_ms = ttl_to_ms(ttl)
        self.keep_last = None if keep_last is None else check_positive_int(keep_last, "keep_last")
        self._scripts = Scripts.register(client)
        self._owns_client = False
        # redis-py's RedisCluster discovers the cluster on first use, and concurrent first
        # commands race in that discovery; so a cluster client is initialised once, up front.
        self._cluster_pending = isinstance(client, RedisCluster)
        self._cluster_lock = asyncio.Lock()
        self._ttl_arg = str(self.ttl_ms or 0)
        self._keep_last_arg = str(self.keep_last or 0)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        prefix: str = "atomr",
        ttl: float | timedelta | None = None,
        keep_last: int | None = None,
        **client_options: Any,
    ) -> RedisCheckpointer:
        """Connect to ``url`` (``cluster=True`` for Redis Cluster); :meth:`aclose` closes it."""
        client_options["decode_responses"] = False
        client: Redis | RedisCluster
        if cluster:
            client = RedisCluster.from_url(url, **client_options)
        else:
            client = Redis.from_url(url, **client_options)
        checkpointer = cls(client, prefix=prefix, ttl=ttl, keep_last=keep_last)
        checkpointer._owns_client = True
        return checkpointer

    async def aclose(self) -> None:
        """Close the client if this checkpointer created it (see :meth:`from_url`)."""
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> RedisCheckpointer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (
            f"RedisCheckpointer(prefix={self.keys.prefix!r}, ttl_ms={self.ttl_ms}, "
            f"keep_last={self.keep_last})"
        )

    async def _save(
        self,
        key: CheckpointKey,
        fields: Fields,
        *,
        exclusive: bool,
        lease: Lease | None,
        hold_ms: int | None,
    ) -> None:
        run = self.keys.run(key.workflow_id, key.run_id)
        step = str(key.super_step)
        token = ""
        if exclusive:
            # Makes the exclusive save idempotent: a client-side retry after a lost reply
            # finds its own token instead of reporting a conflict with itself.
            token = secrets.token_hex(8)
            fields = [*fields, WRITE_TOKEN_FIELD, token.encode()]
        try:
            await self._call(
                self._scripts.save,
                [
                    run.steps,
                    run.snapshot_prefix + step,
                    run.run_index,
                    run.snapshot_prefix,
                    run.record,
                ],
                [
                    step,
                    token,
                    self._ttl_arg,
                    self._keep_last_arg,
                    key.run_id,
                    "" if lease is None else str(lease.token),
                    "" if hold_ms is None else str(hold_ms),
                    *fields,
                ],
            )
        except ResponseError as exc:
            code, _, detail = str(exc).partition(" ")
            if code == "CONFLICT":
                raise CheckpointConflictError(key.workflow_id, key.run_id, key.super_step) from None
            if code == "LEASEHELD":
                until, _, owner = detail.partition(" ")
                raise LeaseHeldError(key.workflow_id, key.run_id, owner, int(until)) from None
            self._raise_run_error(exc, key.workflow_id, key.run_id, lease)
            raise

    async def _load(self, key: CheckpointKey) -> Stored | None:
        run = self.keys.run(key.workflow_id, key.run_id)
        await self._cluster_ready()
        return cast(Stored, await self.client.hgetall(run.snapshot(key.super_step)))

    async def _latest(self, workflow_id: str, run_id: str) -> tuple[int, Stored] | None:
        run = self.keys.run(workflow_id, run_id)
        reply = await self._call(self._scripts.latest, [run.steps, run.snapshot_prefix], [])
        if reply is None:
            return None
        step, flat = reply
        return int(step), dict(pairs_of(flat))

    async def _list(
        self, workflow_id: str, run_id: str, *, limit: int | None, before: int | None
    ) -> builtins.list[tuple[int, int, str]]:
        run = self.keys.run(workflow_id, run_id)
        upper = "+inf" if before is None else f"({before}"
        flat = await self._call(
            self._scripts.list,
            [run.steps, run.snapshot_prefix],
            [upper, str(limit or 0)],
        )
        it = iter(flat)
        return [
            (int(step), int(ts), label.decode("utf-8"))
            for step, ts, label in zip(it, it, it, strict=True)
        ]

    async def _fork(self, from_key: CheckpointKey, new_run_id: str, fields: Fields) -> None:
        source = self.keys.run(from_key.workflow_id, from_key.run_id)
        target = self.keys.run(from_key.workflow_id, new_run_id)
        step = from_key.super_step
        try:
            await self._call(
                self._scripts.fork,
                [source.snapshot(step), target.snapshot(step), target.steps, target.run_index],
                [str(step), self._ttl_arg, new_run_id, *fields],
            )
        except ResponseError as exc:
            if str(exc).startswith("NOTFOUND"):
                raise CheckpointNotFoundError(
                    from_key.workflow_id, from_key.run_id, from_key.super_step
                ) from None
            raise

    async def _list_runs(
        self, workflow_id: str, *, limit: int, after: str | None
    ) -> builtins.list[str]:
        await self._cluster_ready()
        buckets = self.keys.run_index_buckets(workflow_id)
        live: builtins.list[str] = []
        cursor = after
        while len(live) < limit:
            wanted = limit - len(live)
            low = b"-" if cursor is None else b"(" + cursor.encode("utf-8")
            async with self.client.pipeline(transaction=False) as pipe:
                for bucket in buckets:
                    pipe.zrangebylex(bucket, low, b"+", start=0, num=wanted)
                pages = await pipe.execute()
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

    async def _keep_live(
        self, workflow_id: str, candidates: builtins.list[tuple[str, str]]
    ) -> builtins.list[str]:
        """The candidate runs that still exist; prune the index entries of expired ones."""
        steps_keys = [self.keys.run(workflow_id, run_id).steps for run_id, _ in candidates]
        async with self.client.pipeline(transaction=False) as pipe:
            for steps in steps_keys:
                pipe.exists(steps)
            exists = await pipe.execute()
        stale: dict[str, builtins.list[tuple[str, str]]] = {}
        for (run_id, bucket), steps, found in zip(candidates, steps_keys, exists, strict=True):
            if not found:
                stale.setdefault(bucket, []).append((run_id, steps))
        for bucket, runs in stale.items():
            await self._call(
                self._scripts.prune_runs,
                [bucket, *(steps for _, steps in runs)],
                [run_id for run_id, _ in runs],
            )
        return [run_id for (run_id, _), found in zip(candidates, exists, strict=True) if found]

    async def _delete_run(self, workflow_id: str, run_id: str) -> bool:
        run = self.keys.run(workflow_id, run_id)
        removed = await self._call(
            self._scripts.delete_run,
            [run.steps, run.snapshot_prefix, run.run_index, run.record],
            [run_id],
        )
        return bool(removed)

    async def _acquire_lease(
        self, workflow_id: str, run_id: str, owner: str, ttl_ms: int, *, must_exist: bool
    ) -> Lease:
        run = self.keys.run(workflow_id, run_id)
        try:
            reply = await self._call(
                self._scripts.acquire_lease,
                [run.record, run.steps],
                [owner, str(ttl_ms), "1" if must_exist else "0"],
            )
        except ResponseError as exc:
            self._raise_run_error(exc, workflow_id, run_id, None)
            raise
        if reply[0] == b"held":
            raise LeaseHeldError(workflow_id, run_id, reply[1].decode(), int(reply[2]))
        return Lease(workflow_id, run_id, owner, int(reply[0]), int(reply[1]), ttl_ms)

    async def _renew_lease(self, lease: Lease) -> Lease:
        run = self.keys.run(lease.workflow_id, lease.run_id)
        try:
            until = await self._call(
                self._scripts.renew_lease,
                [run.record, run.steps],
                [str(lease.token), str(lease.ttl_ms)],
            )
        except ResponseError as exc:
            self._raise_run_error(exc, lease.workflow_id, lease.run_id, lease)
            raise
        return replace(lease, expires_at_ms=int(until))

    async def _release_lease(self, lease: Lease, note: bytes | None) -> bool:
        run = self.keys.run(lease.workflow_id, lease.run_id)
        released = await self._call(
            self._scripts.release_lease,
            [run.record],
            [str(lease.token), "0" if note is None else "1", note or b""],
        )
        if not released and note is not None:
            raise LeaseLostError(lease.workflow_id, lease.run_id, lease.token)
        return bool(released)

    async def _run_record(self, workflow_id: str, run_id: str) -> RunRecord:
        run = self.keys.run(workflow_id, run_id)
        now, owner, token, until, ttl, note = await self._call(
            self._scripts.run_record, [run.record], []
        )
        lease = None
        if owner is not None and int(until) > int(now):
            lease = Lease(workflow_id, run_id, owner.decode(), int(token), int(until), int(ttl))
        return RunRecord(lease, None if note is None else orjson.loads(note))

    @staticmethod
    def _raise_run_error(
        exc: ResponseError, workflow_id: str, run_id: str, lease: Lease | None
    ) -> None:
        """Turn a script's LEASELOST or RUNNOTFOUND refusal into its typed error."""
        code = str(exc).partition(" ")[0]
        if code == "LEASELOST":
            raise LeaseLostError(workflow_id, run_id, 0 if lease is None else lease.token) from None
        if code == "RUNNOTFOUND":
            raise RunNotFoundError(workflow_id, run_id) from None

    async def _call(
        self, script: AsyncScript, keys: builtins.list[str], args: builtins.list[Any]
    ) -> Any:
        """Call ``script``, retrying once on NOSCRIPT.

        redis-py already reloads a script on NOSCRIPT; on ``RedisCluster`` the retried EVALSHA
        has been seen to fail again while the load reaches every primary (redis-py issue 3935).
        """
        await self._cluster_ready()
        try:
            return await script(keys=keys, args=args)
        except NoScriptError:
            return await script(keys=keys, args=args)

    async def _cluster_ready(self) -> None:
        """Initialise a RedisCluster client once, before its first command (a no-op otherwise)."""
        if not self._cluster_pending:
            return
        async with self._cluster_lock:
            if self._cluster_pending:
                await self.client.initialize()
                self._cluster_pending = False
