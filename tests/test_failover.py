"""Failover under load, with Redis Sentinel: a primary, one replica and three Sentinels. Workers
save through ``RedisCheckpointer.from_sentinel(..., replicas=1)`` (a save is acknowledged only
once the replica has it); the primary is SIGKILLed mid-load; the Sentinels promote the replica,
the old primary comes back empty as a replica of the new one, and the workers carry on.

Checked: every error a worker saw in between is one of the library's typed errors (a raw
redis-py exception is a failure); every acknowledged save is on the promoted primary, exactly as
written; no snapshot is partial (each hash has ``:label`` and ``:ts``) or orphaned (each is listed
in its run's steps set, and each listed step has its hash)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from redis.asyncio import Redis

from atomr_redis_state import (
    AtomrStateError,
    CheckpointConflictError,
    CheckpointKey,
    DurabilityError,
    RedisCheckpointer,
    Snapshot,
    StoreUnavailableError,
)
from atomr_redis_state.testing import (
    RedisServer,
    SentinelSetup,
    free_port,
    require_binaries,
    start_sentinels,
)

WF = "wf-failover"
WORKERS = 4


@dataclass
class Worker:
    """One worker's own run and what it saw."""

    index: int
    acked: dict[int, dict[str, object]] = field(default_factory=dict)
    acked_after_failover: int = 0
    typed: Counter[str] = field(default_factory=Counter)
    raw: list[str] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return f"run-{self.index}"


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSetup]:
    require_binaries()
    setup = start_sentinels(tmp_path)
    yield setup
    setup.stop()


async def work(
    worker: Worker, setup: SentinelSetup, prefix: str, stop: asyncio.Event, failed_over: list[bool]
) -> None:
    store = RedisCheckpointer.from_sentinel(
        setup.sentinel_addresses,
        setup.service_name,
        prefix=prefix,
        replicas=1,
        replica_timeout=0.5,
        sentinel_options={"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
        socket_timeout=2,
        socket_connect_timeout=0.5,
    )
    step = 0
    try:
        while not stop.is_set():
            values: dict[str, object] = {"worker": worker.index, "step": step, "pad": "x" * 300}
            snapshot = Snapshot(CheckpointKey(WF, worker.run_id, step), dict(values))  # type: ignore[arg-type]
            while not stop.is_set():  # the same snapshot until it is acknowledged
                try:
                    await store.save(snapshot, exclusive=True)
                except (StoreUnavailableError, DurabilityError) as exc:
                    worker.typed[type(exc).__name__] += 1
                    await asyncio.sleep(0.05)
                    continue
                except CheckpointConflictError as exc:
                    # Its own run, the same snapshot: a retry must find its own write.
                    worker.raw.append(f"conflict with its own write: {exc!r}")
                    await asyncio.sleep(0.05)
                    break
                except AtomrStateError as exc:
                    worker.typed[type(exc).__name__] += 1
                    await asyncio.sleep(0.05)
                    continue
                except Exception as exc:  # a raw redis-py (or other) error: a library bug
                    worker.raw.append(repr(exc))
                    await asyncio.sleep(0.05)
                    continue
                worker.acked[step] = values
                if failed_over:
                    worker.acked_after_failover += 1
                break
            step += 1
            await asyncio.sleep(0.005)
    finally:
        await store.aclose()


async def wait_until(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@pytest.mark.timeout(60)
async def test_every_acknowledged_save_survives_a_sentinel_failover(
    sentinels: SentinelSetup,
) -> None:
    setup = sentinels
    started = time.monotonic()
    prefix = f"failover-{uuid.uuid4().hex[:8]}"
    old_port = setup.master.port
    workers = [Worker(i) for i in range(WORKERS)]
    stop = asyncio.Event()
    failed_over: list[bool] = []
    tasks = [asyncio.create_task(work(w, setup, prefix, stop, failed_over)) for w in workers]
    try:
        await asyncio.sleep(1.5)
        assert all(w.acked for w in workers), "the workers saved nothing before the failover"
        setup.master.kill()  # SIGKILL: no shutdown, no last replication
        killed_at = time.monotonic()
        await wait_until(lambda: setup.master_port() not in (None, old_port), 20, "a failover")
        new_port = setup.master_port()
        assert new_port == setup.replicas[0].port
        await asyncio.to_thread(setup.wait_for_master, new_port)
        failed_over.append(True)
        failover_seconds = time.monotonic() - killed_at
        # The old primary comes back, empty, as a replica of the new one: acks resume.
        await asyncio.to_thread(setup.restart_as_replica, setup.master, new_port)
        deadline = time.monotonic() + 15
        while min(w.acked_after_failover for w in workers) < 5:
            assert time.monotonic() < deadline, "the workers did not carry on after failover"
            assert all(not t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        task.result()

    raw = {w.index: w.raw for w in workers if w.raw}
    assert raw == {}, f"untyped errors (or conflicts with their own writes): {raw}"

    promoted = Redis(host="127.0.0.1", port=new_port)
    store = RedisCheckpointer(promoted, prefix=prefix)
    try:
        for worker in workers:
            for step, values in worker.acked.items():
                loaded = await store.load(CheckpointKey(WF, worker.run_id, step))
                assert loaded is not None, f"acknowledged save lost: {worker.run_id}@{step}"
                assert loaded.values == values
        await check_no_partial_or_orphan_snapshots(promoted, prefix)
    finally:
        await promoted.aclose()
    total = time.monotonic() - started
    print(  # shown with -s: what the failover cost
        f"failover in {failover_seconds:.1f} s, test {total:.1f} s, "
        f"acked {sum(len(w.acked) for w in workers)}, "
        f"typed errors {sum((w.typed for w in workers), Counter())}"
    )


async def check_no_partial_or_orphan_snapshots(client: Redis, prefix: str) -> None:
    snapshots = [k async for k in client.scan_iter(match=f"{prefix}:*:snap:*", count=1000)]
    assert snapshots
    for key in snapshots:
        fields = await client.hkeys(key)
        assert b":label" in fields, f"partial snapshot {key!r}: {fields}"
        assert b":ts" in fields, f"partial snapshot {key!r}: {fields}"
        run_part, _, step = key.rpartition(b":snap:")
        assert await client.zscore(run_part + b":steps", step) is not None, f"orphan {key!r}"
    async for steps_key in client.scan_iter(match=f"{prefix}:*:steps", count=1000):
        run_part = steps_key[: -len(b":steps")]
        for step in await client.zrange(steps_key, 0, -1):
            assert await client.exists(run_part + b":snap:" + step), f"{steps_key!r} {step!r}"


@pytest.mark.timeout(30)
async def test_watch_fails_typed_when_its_server_goes_away(tmp_path: Path) -> None:
    """A watcher whose Redis dies gets StoreUnavailableError, like every other call, not
    redis-py's ConnectionError (the events loop is outside the store's error mapping)."""
    require_binaries()
    server = RedisServer(free_port(), tmp_path / "watched").start()
    store = RedisCheckpointer.from_url(server.url, prefix="watch-dies")

    async def watch_while_the_server_dies() -> None:
        async with store.watch(WF) as events:
            server.kill()
            await asyncio.wait_for(anext(aiter(events)), timeout=20)

    try:
        with pytest.raises(StoreUnavailableError):
            await watch_while_the_server_dies()
    finally:
        server.stop()
        await store.aclose()
