"""The batcher behind the Postgres store's group commit: calls made together go together, each
caller gets its own outcome, and no caller is left waiting, whatever happens to a sender."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from atomr_redis_state.store.sql.batches import Batcher


class Lost(Exception):
    pass


def echo_batcher(
    *, senders: int = 1, limit: int = 32
) -> tuple[Batcher[int, int], list[list[int]], asyncio.Event]:
    """A batcher whose batches answer each call with its argument (a negative one with an
    error), once ``gate`` is set; ``sent`` records the batches."""
    sent: list[list[int]] = []
    gate = asyncio.Event()
    gate.set()

    async def send(calls: list[int]) -> Sequence[int | BaseException]:
        sent.append(list(calls))
        await gate.wait()
        return [ValueError(n) if n < 0 else n for n in calls]

    return Batcher(send, senders=senders, limit=limit, lost=Lost), sent, gate


async def test_calls_made_together_go_in_one_batch_and_each_gets_its_own_outcome() -> None:
    batcher, sent, _ = echo_batcher()
    outcomes = await asyncio.gather(
        batcher.call(1), batcher.call(-2), batcher.call(3), return_exceptions=True
    )
    assert sent == [[1, -2, 3]]
    assert outcomes[0] == 1
    assert isinstance(outcomes[1], ValueError)
    assert outcomes[2] == 3


async def test_a_call_made_alone_goes_alone() -> None:
    batcher, sent, _ = echo_batcher()
    assert await batcher.call(1) == 1
    assert await batcher.call(2) == 2
    assert sent == [[1], [2]]


async def test_calls_made_while_every_sender_is_busy_wait_for_the_next_batch() -> None:
    batcher, sent, gate = echo_batcher(limit=2)
    gate.clear()
    first = asyncio.ensure_future(batcher.call(1))
    await asyncio.sleep(0.01)  # in flight
    later = [asyncio.ensure_future(batcher.call(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0.01)
    gate.set()
    assert await asyncio.gather(first, *later) == [1, 2, 3, 4]
    assert sent == [[1], [2, 3], [4]]


async def test_a_cancelled_sender_fails_its_batch_as_lost_and_leaves_no_call_waiting() -> None:
    batcher, _, gate = echo_batcher(limit=2)
    gate.clear()
    calls = [asyncio.ensure_future(batcher.call(n)) for n in range(4)]
    await asyncio.sleep(0.01)  # [0, 1] in flight, 2 and 3 queued
    (sender,) = batcher._tasks
    sender.cancel()
    await asyncio.sleep(0.01)
    gate.set()
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
    assert isinstance(outcomes[0], Lost)
    assert isinstance(outcomes[1], Lost)
    assert outcomes[2:] == [2, 3]
    assert await asyncio.wait_for(batcher.call(9), 5) == 9


async def test_a_cancelled_caller_is_skipped_if_its_call_was_not_sent_yet() -> None:
    batcher, sent, gate = echo_batcher()
    gate.clear()
    first = asyncio.ensure_future(batcher.call(1))
    await asyncio.sleep(0.01)
    dropped = asyncio.ensure_future(batcher.call(2))
    kept = asyncio.ensure_future(batcher.call(3))
    await asyncio.sleep(0)
    dropped.cancel()
    gate.set()
    assert await first == 1
    assert await kept == 3
    assert sent == [[1], [3]]
