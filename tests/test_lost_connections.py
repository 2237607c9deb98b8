"""A connection that dies while calls are in flight: the store's promise, on any redis-py.

A proxy the test drives (``testing.CuttingProxy``) lets the calls reach the server and run,
holds their replies back, then kills the connection before any reply or in the middle of one.
Without retries every caller left without its reply gets a typed error; with retries every
caller gets the answer the first attempt would have given (every call is safe to send twice).
Nothing here depends on how fast a client notices a closed socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from atomr_redis_state import (
    CheckpointKey,
    RedisCheckpointer,
    Snapshot,
    StoreUnavailableError,
)
from atomr_redis_state.store.ids import fork_run_id
from atomr_redis_state.testing import CuttingProxy, RedisServer

WF = "wf-lost"
CALLS = 4


def snap(run: str, step: int, **values: Any) -> Snapshot:
    return Snapshot(CheckpointKey(WF, run, step), {"step": step, **values}, timestamp_ms=1)


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[CuttingProxy]:
    async with CuttingProxy(redis_server.port) as proxy:
        yield proxy


def store_behind(
    proxy: CuttingProxy, *, pipelining: bool, retries: int, prefix: str
) -> RedisCheckpointer:
    return RedisCheckpointer.from_url(
        proxy.url, prefix=prefix, retry=Retry(NoBackoff(), retries), pipelining=pipelining
    )


async def reply_bytes(proxy: CuttingProxy, calls: Callable[[], Awaitable[object]]) -> int:
    """How many reply bytes one round of ``calls`` takes (run twice: the first one opens the
    pool's connections, whose handshake replies are no part of a round)."""
    await calls()
    before = proxy.replied
    await calls()
    return proxy.replied - before


async def cut_in_flight(
    proxy: CuttingProxy, calls: Callable[[], Awaitable[list[object]]], size: int, fraction: float
) -> list[object]:
    """Run ``calls`` with their replies held until all ``size`` bytes are back, then kill the
    connections after ``fraction`` of each one's replies; what each caller got."""
    proxy.hold()
    results = asyncio.ensure_future(calls())
    await proxy.wait_held(size)
    await proxy.cut(fraction)
    return await results


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
@pytest.mark.parametrize("fraction", [0.0, 0.5], ids=["before-any-reply", "mid-reply"])
async def test_without_retries_every_unanswered_caller_gets_a_typed_error(
    proxy: CuttingProxy, pipelining: bool, fraction: float
) -> None:
    store = store_behind(proxy, pipelining=pipelining, retries=0, prefix=f"lost-{pipelining}")
    saved = snap("r", 0, text="x" * 100)
    await store.save(saved)
    key = saved.key

    def loads() -> Awaitable[list[object]]:
        return asyncio.gather(*(store.load(key) for _ in range(CALLS)), return_exceptions=True)

    size = await reply_bytes(proxy, loads)
    got = await cut_in_flight(proxy, loads, size, fraction)
    errors = [g for g in got if isinstance(g, StoreUnavailableError)]
    assert all(g == saved or isinstance(g, StoreUnavailableError) for g in got), got
    assert all("call again" in str(e) for e in errors)
    if fraction == 0.0:
        assert len(errors) == CALLS
    else:  # at least the call whose reply was cut in two has no answer
        assert errors
    assert await store.load(key) == saved  # and the store works again
    await store.delete_run(WF, "r")
    await store.aclose()


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
@pytest.mark.parametrize("fraction", [0.0, 0.5], ids=["before-any-reply", "mid-reply"])
async def test_with_retries_every_caller_gets_the_answer_of_its_first_attempt(
    proxy: CuttingProxy, pipelining: bool, fraction: float
) -> None:
    store = store_behind(proxy, pipelining=pipelining, retries=3, prefix=f"kept-{pipelining}")
    await store.save(snap("source", 0))
    source = CheckpointKey(WF, "source", 0)

    def writes(run: str, fork_id: str) -> Callable[[], Awaitable[list[object]]]:
        """Exclusive saves and a fork: a second run of any of them that did not know the
        first had run would be a conflict."""

        def calls() -> Awaitable[list[object]]:
            return asyncio.gather(
                *(store.save(snap(run, step), exclusive=True) for step in range(CALLS - 1)),
                store.fork(source, {"edited": True}, run_id=fork_id),
                return_exceptions=True,
            )

        return calls

    size = await reply_bytes(proxy, writes("warm", fork_run_id("source")))
    connections = proxy.connections
    fork_id = fork_run_id("source")
    got = await cut_in_flight(proxy, writes("r", fork_id), size, fraction)
    assert got == [None] * (CALLS - 1) + [fork_id]
    assert proxy.connections > connections  # the calls were sent again, on a new connection
    assert [m.super_step for m in await store.list(WF, "r")] == list(range(CALLS - 1))
    for step in range(CALLS - 1):
        assert await store.load(CheckpointKey(WF, "r", step)) == snap("r", step)
    forked = await store.load(CheckpointKey(WF, fork_id, 0))
    assert forked is not None
    assert forked.values == {"step": 0, "edited": True}
    await store.aclose()


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
@pytest.mark.parametrize("retries", [0, 2])
async def test_the_error_counts_every_attempt_the_client_made(
    proxy: CuttingProxy, pipelining: bool, retries: int
) -> None:
    """A server that drops every connection: the error says how often the call was tried, the
    client's own retries included, and it was tried exactly that often."""
    store = store_behind(proxy, pipelining=pipelining, retries=retries, prefix="counted")
    proxy.refuse = True
    with pytest.raises(StoreUnavailableError) as refused:
        await store.latest(WF, "r")
    assert f"after {retries + 1} attempt(s)" in str(refused.value)
    assert proxy.connections == retries + 1
    await store.aclose()
