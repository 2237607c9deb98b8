"""Automatic pipelining: the calls that concurrent coroutines make in one event-loop iteration
leave together, in one write on one pooled connection, and each caller gets its own reply.

A call is packed (with hiredis when installed) and queued; the first call queued in an
iteration schedules a flush for the next one, so every coroutine that runs in between adds its
call to the same batch. A flush cuts the queue into batches of at most :data:`MAX_BATCH` calls
and :data:`MAX_BATCH_BYTES` bytes, and a call of :data:`SOLO_BYTES` or more (a huge snapshot)
goes in a batch of its own, so that it never holds up small ones. Each batch takes a connection
from the client's pool, writes every call with one ``send_packed_command``, reads the replies in
order, and gives the connection back.

- Each caller gets its own reply or its own error: a script's refusal (``CONFLICT``, ``OOM``,
  ``NOPERM``...) goes to its caller only.
- NOSCRIPT (after ``SCRIPT FLUSH``, a restart or a failover): the batch loads each missing
  script once, on the same connection, and sends again only the calls that failed; there is no
  ``SCRIPT EXISTS`` per batch.
- A caller cancelled while it waits leaves the batch: a call not sent yet is never sent, and
  the reply of one sent already is read and dropped, so the connection stays in step.
- Connection loss or a timeout (the client's ``socket_timeout``, one deadline for the whole
  batch: its write and every reply): the connection is dropped, and the calls still
  unanswered are sent again on a fresh connection by the client's retry policy
  (``Redis(retry=...)``), as redis-py would retry each of them: every call of the store is
  safe to send twice. When the policy gives up, every unanswered caller gets the error.
- On Redis Cluster (:class:`ClusterAutoPipeline`) a flush makes batches per node (by each
  call's slot, from the client's slot map) on that node's connections. A call that meets
  ``MOVED``, ``ASK``, ``TRYAGAIN`` or ``CLUSTERDOWN``, and the unanswered calls of a batch whose
  connection failed, are each sent again through redis-py's cluster client, which follows the
  redirect, refreshes its slot map and retries as it does for any command.

Replies are the raw RESP replies (no redis-py response callbacks).
"""

from __future__ import annotations

import asyncio
import builtins
import math
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MaxConnectionsError,
    NoScriptError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

MAX_BATCH = 128
"""The most calls one batch carries."""
MAX_BATCH_BYTES = 512 * 1024
"""The most bytes of packed calls one batch carries (a single call may exceed it)."""
SOLO_BYTES = 64 * 1024
"""A call this large is sent in a batch of its own, beside the others."""

_EVALSHA = b"EVALSHA"
_NO_TIMEOUT = math.inf
"""No deadline per reply (redis-py's own, an ``asyncio.timeout`` per read): a batch has one."""


def _python_pack(args: tuple[Any, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        part = arg if type(arg) is bytes else str(arg).encode()
        out += (b"$%d\r\n" % len(part), part, b"\r\n")
    return b"".join(out)


def _packer() -> Callable[[tuple[Any, ...]], bytes]:
    """hiredis's packer (in C) when installed, else a plain Python one."""
    try:
        import hiredis
    except ImportError:  # pragma: no cover (hiredis is a dependency)
        return _python_pack
    return cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)


pack = _packer()
"""Pack one command (a tuple of bytes, str and int arguments) as RESP."""


@dataclass(slots=True)
class _Call:
    packed: bytes
    future: asyncio.Future[Any]
    script: AsyncScript | None
    resend: Callable[[], Awaitable[Any]] | None = None
    """Cluster only: the same call through redis-py's cluster client."""
    slot: int = 0
    with_next: bool = False
    """The next call goes in the same batch, right after this one (see ``scripts_together``)."""


Batch = builtins.list[_Call]


def _groups(calls: Batch) -> builtins.list[Batch]:
    """The calls as runs that must share a batch (``with_next``), in order."""
    groups: builtins.list[Batch] = []
    joined = False
    for call in calls:
        if joined:
            groups[-1].append(call)
        else:
            groups.append([call])
        joined = call.with_next
    return groups


class AutoPipeline:
    """Sends the calls made in one event-loop iteration in batches on ``client``'s pool."""

    def __init__(
        self,
        client: Any,
        *,
        max_batch: int = MAX_BATCH,
        max_bytes: int = MAX_BATCH_BYTES,
        solo_bytes: int = SOLO_BYTES,
    ) -> None:
        self.client = client
        self.max_batch = max_batch
        self.max_bytes = max_bytes
        self.solo_bytes = solo_bytes
        self._queue: Batch = []
        self._tasks: set[asyncio.Task[None]] = set()

    def script(
        self, script: AsyncScript, keys: builtins.list[str], args: builtins.list[Any]
    ) -> asyncio.Future[Any]:
        """EVALSHA ``script``: a future of its reply (NOSCRIPT handled)."""
        packed = pack((_EVALSHA, script.sha, len(keys), *keys, *args))
        return self._submit(_Call(packed, _new_future(), script))

    def command(self, *args: Any) -> asyncio.Future[Any]:
        """Any other command: a future of its raw reply."""
        return self._submit(_Call(pack(args), _new_future(), None))

    def scripts_together(
        self, calls: builtins.list[tuple[AsyncScript, builtins.list[str], builtins.list[Any]]]
    ) -> builtins.list[asyncio.Future[Any]]:
        """EVALSHA each script, in this order, in one batch (one write on one connection), so
        the server runs them in this order: futures of their replies."""
        futures = []
        for i, (script, keys, args) in enumerate(calls):
            packed = pack((_EVALSHA, script.sha, len(keys), *keys, *args))
            call = _Call(packed, _new_future(), script, with_next=i < len(calls) - 1)
            futures.append(self._submit(call))
        return futures

    def _submit(self, call: _Call) -> asyncio.Future[Any]:
        self._queue.append(call)
        if len(self._queue) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        return call.future

    def _flush(self) -> None:
        queued, self._queue = self._queue, []
        self._cut([call for call in queued if not call.future.done()], None)

    def _cut(self, calls: Batch, route: Any) -> None:
        """Start ``calls`` (for ``route``) in bounded batches; a huge call goes on its own."""
        batch: Batch = []
        size = 0
        for group in _groups(calls):
            n = sum(len(call.packed) for call in group)
            if n >= self.solo_bytes:
                self._start(group, route)
                continue
            if batch and (len(batch) + len(group) > self.max_batch or size + n > self.max_bytes):
                self._start(batch, route)
                batch, size = [], 0
            batch += group
            size += n
        if batch:
            self._start(batch, route)

    def _start(self, batch: Batch, route: Any) -> None:
        self._spawn(self._send(batch, route))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, batch: Batch, route: Any) -> None:
        pool = self.client.connection_pool
        try:
            connection = await pool.get_connection()
        except BaseException as exc:  # not sent; the pool's connect retried by the client's policy
            if isinstance(exc, Exception):
                setattr(exc, ATTEMPTS, client_attempts(self.client, exc))
            _fail(batch, exc)
            return
        retry = self.client.get_retry()
        failed = 0
        given: list[Any] = [connection]

        async def count(error: Exception) -> None:
            nonlocal failed
            failed += 1

        try:
            if retry is None:
                await self._exchange(batch, given.pop())
            else:
                await retry.call_with_retry(
                    lambda: self._exchange(
                        [c for c in batch if not c.future.done()], given.pop() if given else None
                    ),
                    count,
                )
        except BaseException as exc:  # every unanswered caller gets the batch's failure
            if isinstance(exc, Exception):
                setattr(exc, ATTEMPTS, max(failed, 1))
            _fail(batch, exc)
        finally:
            for unused in given:
                await pool.release(unused)

    async def _exchange(self, batch: Batch, connection: Any) -> None:
        """One write of ``batch`` on ``connection`` (None: a pooled one), then its replies in
        order, all within the connection's ``socket_timeout`` (one deadline for the whole
        batch)."""
        pool = self.client.connection_pool
        if not batch:
            if connection is not None:
                await pool.release(connection)
            return
        if connection is None:
            connection = await pool.get_connection()
        try:
            await _exchange_on(connection, batch, ())
        finally:
            await pool.release(connection)


class ClusterAutoPipeline(AutoPipeline):
    """:class:`AutoPipeline` for a ``RedisCluster``: batches per node."""

    def script(
        self, script: AsyncScript, keys: builtins.list[str], args: builtins.list[Any]
    ) -> asyncio.Future[Any]:
        packed = pack((_EVALSHA, script.sha, len(keys), *keys, *args))
        call = _Call(packed, _new_future(), script, partial(_script, script, keys, args))
        call.slot = key_slot(keys[0].encode())
        return self._submit(call)

    def command(self, *args: Any) -> asyncio.Future[Any]:
        call = _Call(pack(args), _new_future(), None, partial(self.client.execute_command, *args))
        call.slot = key_slot(args[1].encode() if type(args[1]) is str else args[1])
        return self._submit(call)

    def _flush(self) -> None:
        queued, self._queue = self._queue, []
        by_node: dict[str, tuple[Any, Batch]] = {}
        nodes = self.client.nodes_manager
        for call in queued:
            if call.future.done():
                continue
            try:
                node = nodes.get_node_from_slot(call.slot)
            except Exception:  # no node for the slot right now: redis-py's path finds one
                self._spawn(_resend(call))
                continue
            by_node.setdefault(node.name, (node, []))[1].append(call)
        for node, calls in by_node.values():
            self._cut(calls, node)

    def _start(self, batch: Batch, route: Any) -> None:
        self._spawn(self._send_to_node(batch, route))

    async def _send_to_node(self, batch: Batch, node: Any) -> None:
        """The batch on one of ``node``'s connections; what it could not answer, through
        redis-py (redirects, a lost connection: the cluster client handles those)."""
        again: Batch = []
        try:
            connection = node.acquire_connection()
        except Exception:  # too many connections to this node: one at a time through redis-py
            again = batch
        else:
            try:
                await node.disconnect_if_needed(connection)
                if not connection.is_connected:
                    await connection.connect()
                again = await _exchange_on(connection, batch, _REROUTE)
            except asyncio.CancelledError:
                _fail(batch, asyncio.CancelledError())
                raise
            except Exception:
                again = [call for call in batch if not call.future.done()]
            finally:
                node.release(connection)
        for call in again:
            self._spawn(_resend(call))


_REROUTE = (AskError, TryAgainError, ClusterDownError)
"""Cluster replies a call is sent again for, through redis-py (``MovedError`` is an
``AskError``)."""


async def _exchange_on(
    connection: Any, batch: Batch, reroute: tuple[type[Exception], ...]
) -> Batch:
    """Write ``batch`` on ``connection`` and read its replies in order, within one deadline
    (the connection's ``socket_timeout``); the calls whose reply is one of ``reroute``."""
    try:
        async with asyncio.timeout(connection.socket_timeout):
            await connection.send_packed_command([call.packed for call in batch])
            missing, rerouted = await _read_replies(connection, batch, reroute)
            if missing:
                rerouted += await _load_and_resend(connection, missing, reroute)
            return rerouted
    except TimeoutError:
        await connection.disconnect(nowait=True)
        raise RedisTimeoutError(
            f"Timeout: a batch of {len(batch)} call(s) took over {connection.socket_timeout} s"
        ) from None
    except BaseException:
        # Replies may still be on their way: never reuse this connection.
        await connection.disconnect(nowait=True)
        raise


async def _read_replies(
    connection: Any, batch: Batch, reroute: tuple[type[Exception], ...]
) -> tuple[Batch, Batch]:
    """Read one reply per call into its future; the script calls that met NOSCRIPT, and those
    whose reply is one of ``reroute``."""
    missing: Batch = []
    rerouted: Batch = []
    for call in batch:
        try:
            reply = await connection.read_response(timeout=_NO_TIMEOUT)
        except NoScriptError as exc:
            if call.script is not None:
                missing.append(call)
            elif not call.future.done():
                call.future.set_exception(exc)
        except ResponseError as exc:
            if isinstance(exc, reroute):
                rerouted.append(call)
            elif not call.future.done():
                call.future.set_exception(exc)
        else:
            if not call.future.done():
                call.future.set_result(reply)
    return missing, rerouted


async def _load_and_resend(
    connection: Any, calls: Batch, reroute: tuple[type[Exception], ...]
) -> Batch:
    """Load each missing script once (one write), then send the calls that met NOSCRIPT again
    (another); the calls whose reply is then one of ``reroute``."""
    scripts = {id(call.script): call.script for call in calls if call.script is not None}
    await connection.send_packed_command(
        [pack((b"SCRIPT", b"LOAD", script.script)) for script in scripts.values()]
    )
    failed: dict[int, ResponseError] = {}
    for key in scripts:
        try:
            await connection.read_response(timeout=_NO_TIMEOUT)
        except ResponseError as exc:  # NOPERM, for one: its callers get that error
            failed[key] = exc
    for call in calls:
        if id(call.script) in failed and not call.future.done():
            call.future.set_exception(failed[id(call.script)])
    calls = [call for call in calls if not call.future.done()]
    if not calls:
        return []
    await connection.send_packed_command([call.packed for call in calls])
    missing, rerouted = await _read_replies(connection, calls, reroute)
    for call in missing:  # loaded a moment ago and gone again (a SCRIPT FLUSH in between)
        if not call.future.done():
            call.future.set_exception(NoScriptError("the script could not be loaded"))
    return rerouted


async def _script(script: AsyncScript, keys: builtins.list[str], args: builtins.list[Any]) -> Any:
    """A script call through redis-py, once more on NOSCRIPT (redis-py issue 3935)."""
    try:
        return await script(keys=keys, args=args)
    except NoScriptError:
        return await script(keys=keys, args=args)


async def _resend(call: _Call) -> None:
    """Send ``call`` through redis-py's cluster client; its outcome goes to its caller."""
    if call.future.done() or call.resend is None:
        return
    try:
        reply = await call.resend()
    except BaseException as exc:  # the caller's, as the reply would have been
        _fail([call], exc)
    else:
        if not call.future.done():
            call.future.set_result(reply)


def _new_future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


def _fail(batch: Batch, exc: BaseException) -> None:
    for call in batch:
        if not call.future.done():
            if isinstance(exc, asyncio.CancelledError):
                call.future.cancel()
            else:
                call.future.set_exception(exc)


ATTEMPTS = "atomr_attempts"
"""The attribute on a batch's failure that says how often its calls were tried."""


def client_attempts(client: Any, error: BaseException) -> int:
    """How many times ``client`` tried a call that failed with ``error``: once, plus the
    retries of its policy when that policy retries such errors (redis-py retries a connection
    error or a timeout until the policy gives up)."""
    getter = getattr(client, "get_retry", None)
    policy = getter() if getter is not None else getattr(client, "retry", None)
    if policy is None or not isinstance(error, _RETRIED) or _pool_exhausted(error):
        return 1
    retries = int(policy.get_retries())
    return 1 + max(retries, 0)


_RETRIED = (RedisConnectionError, RedisTimeoutError)


def _pool_exhausted(error: BaseException) -> bool:
    """The pool had no connection to give (nothing was sent, nothing retried)."""
    return isinstance(error, MaxConnectionsError) or str(error) == "No connection available."
