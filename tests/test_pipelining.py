"""Automatic pipelining: concurrent calls share writes, and each caller gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, ClassVar, cast

import fakeredis
import pytest
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import Connection

from atomr_redis_state import (
    CheckpointConflictError,
    CheckpointKey,
    RedisCheckpointer,
    Snapshot,
)
from atomr_redis_state.store.redis.pipeline import SOLO_BYTES, AutoPipeline, ClusterAutoPipeline
from atomr_redis_state.testing import RedisClusterServers, RedisServer

WF = "wf-pipe"


def snap(run: str, step: int, **values: Any) -> Snapshot:
    return Snapshot(CheckpointKey(WF, run, step), {"step": step, **values})


HANDSHAKE = (b"HELLO", b"CLIENT", b"AUTH", b"SELECT", b"PING")


class Writes(Connection):
    """Records every write but a connection's handshake: how many parts (one per pipelined
    call) and bytes it carried."""

    log: ClassVar[list[tuple[int, int]]] = []

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        parts = [command] if isinstance(command, bytes) else list(command)
        name = parts[0].split(b"\r\n", 3)[2].upper() if parts[0].startswith(b"*") else b""
        if name not in HANDSHAKE:
            Writes.log.append((len(parts), sum(len(p) for p in parts)))
        await super().send_packed_command(command, check_health)


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, connection_class=Writes)
    yield client
    await client.aclose()


@pytest.fixture
async def store(client: Redis) -> AsyncIterator[RedisCheckpointer]:
    store = RedisCheckpointer(client, prefix=f"pipe{id(client)}")
    await store.save(snap("warm", 0))  # loads the scripts used below
    await store.latest(WF, "warm")
    Writes.log.clear()
    yield store
    for run in await store.list_runs(WF):
        await store.delete_run(WF, run)


async def test_concurrent_calls_leave_in_one_write_and_each_gets_its_reply(
    store: RedisCheckpointer,
) -> None:
    runs = [f"r{i}" for i in range(20)]
    await asyncio.gather(*(store.save(snap(run, int(run[1:]))) for run in runs))
    assert Writes.log == [(20, Writes.log[0][1])]
    Writes.log.clear()
    latest = await asyncio.gather(*(store.latest(WF, run) for run in runs))
    assert [s.key.super_step if s else None for s in latest] == list(range(20))
    assert len(Writes.log) == 1


async def test_each_caller_gets_its_own_error(store: RedisCheckpointer) -> None:
    await store.save(snap("taken", 0))
    results = await asyncio.gather(
        store.save(snap("taken", 0, by="other"), exclusive=True),
        store.save(snap("free", 0), exclusive=True),
        store.latest(WF, "taken"),
        return_exceptions=True,
    )
    assert isinstance(results[0], CheckpointConflictError)
    assert results[1] is None
    assert isinstance(results[2], Snapshot)
    assert results[2].values == {"step": 0}
    assert len(Writes.log) == 2  # the first save, then one batch


async def test_noscript_loads_each_script_once_and_resends_only_what_failed(
    store: RedisCheckpointer, client: Redis
) -> None:
    await store.save(snap("a", 0))
    await client.script_flush()
    await client.config_resetstat()
    Writes.log.clear()
    found = await asyncio.gather(*(store.latest(WF, run) for run in ["a", "b", "a", "c"]))
    assert [s is not None for s in found] == [True, False, True, False]
    writes = list(Writes.log)
    stats = await client.info("commandstats")
    assert stats["cmdstat_script|load"]["calls"] == 1
    assert "cmdstat_script|exists" not in stats
    assert [n for n, _ in writes] == [4, 1, 4]  # the batch, the load, the calls again


async def test_a_cancelled_caller_leaves_the_others_and_the_connection_in_step(
    store: RedisCheckpointer,
) -> None:
    await store.save(snap("a", 0))
    calls = [asyncio.ensure_future(store.latest(WF, "a")) for _ in range(5)]
    calls[2].cancel()
    await asyncio.sleep(0)  # the batch is cut: the cancelled call is not sent
    calls[3].cancel()  # sent already: its reply is read and dropped
    done = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(done[2], asyncio.CancelledError)
    assert isinstance(done[3], asyncio.CancelledError)
    assert all(isinstance(done[i], Snapshot) for i in (0, 1, 4))
    for step in range(1, 4):  # the connections still answer in order
        await store.save(snap("a", step))
        latest = await store.latest(WF, "a")
        assert latest is not None
        assert latest.key.super_step == step


async def test_a_huge_snapshot_goes_in_a_batch_of_its_own(store: RedisCheckpointer) -> None:
    huge = "x" * SOLO_BYTES
    await asyncio.gather(
        store.save(snap("big", 0, blob=huge)), *(store.save(snap(f"s{i}", 0)) for i in range(8))
    )
    assert sorted(n for n, _ in Writes.log) == [1, 8]
    small = next(size for n, size in Writes.log if n == 8)
    assert small < SOLO_BYTES


async def test_batches_are_bounded_in_calls_and_bytes(client: Redis) -> None:
    pipeline = AutoPipeline(client, max_batch=3, max_bytes=10_000)
    Writes.log.clear()
    replies = await asyncio.gather(*(pipeline.command("ECHO", str(i)) for i in range(7)))
    assert replies == [str(i).encode() for i in range(7)]
    assert sorted(n for n, _ in Writes.log) == [1, 3, 3]
    Writes.log.clear()
    big = "y" * 4_000
    await asyncio.gather(*(pipeline.command("ECHO", big) for _ in range(5)))
    assert sorted(n for n, _ in Writes.log) == [1, 2, 2]


async def test_scripts_sent_together_share_a_batch_in_their_order(
    client: Redis, store: RedisCheckpointer
) -> None:
    """A queue call and its hint update (``scripts_together``) are never split over two
    batches, which two connections could run in either order."""
    pipeline = AutoPipeline(client, max_batch=3, max_bytes=100_000)
    echo = client.register_script("return ARGV[1]")
    await echo(args=["load"])
    Writes.log.clear()
    lone = pipeline.command("ECHO", "first")
    together = [
        pipeline.scripts_together([(echo, [], [f"{i}a"]), (echo, [], [f"{i}b"])]) for i in range(3)
    ]
    assert await lone == b"first"
    replies = [await asyncio.gather(*futures) for futures in together]
    assert replies == [[f"{i}a".encode(), f"{i}b".encode()] for i in range(3)]
    # 7 calls, at most 3 a batch, pairs kept whole: [lone, 0a, 0b], [1a, 1b], [2a, 2b].
    assert sorted(n for n, _ in Writes.log) == [2, 2, 3]


async def test_a_lost_connection_is_retried_for_every_unanswered_caller(
    redis_server: RedisServer,
) -> None:
    async with RedisCheckpointer.from_url(redis_server.url, prefix="pipe-kill") as store:
        await store.save(snap("r", 0))
        admin = Redis.from_url(redis_server.url)
        await admin.client_kill_filter(_type="normal", skipme=True)
        found = await asyncio.gather(*(store.latest(WF, "r") for _ in range(10)))
        assert all(s is not None and s.key.super_step == 0 for s in found)
        await store.delete_run(WF, "r")
        await admin.aclose()


async def test_pipelining_can_be_turned_off(client: Redis) -> None:
    store = RedisCheckpointer(client, prefix=f"pipe-off{id(client)}", pipelining=False)
    assert store._calls.pipeline is None
    await store.save(snap("r", 0))
    Writes.log.clear()
    await asyncio.gather(*(store.latest(WF, "r") for _ in range(5)))
    assert len(Writes.log) == 5
    await store.delete_run(WF, "r")


def test_fakeredis_is_not_pipelined() -> None:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(version=(7, 0)))
    assert RedisCheckpointer(client)._calls.pipeline is None


@pytest.fixture
async def cluster_store(redis_cluster: RedisClusterServers) -> AsyncIterator[RedisCheckpointer]:
    store = RedisCheckpointer.from_url(redis_cluster.url, cluster=True, prefix="pipe-cluster")
    await store.latest(WF, "warm")  # discovers the nodes
    for node in cast(RedisCluster, store.client).get_nodes():
        await node.disconnect()
        node._connections.clear()
        node._free.clear()
        node.connection_class = Writes
    Writes.log.clear()
    yield store
    for run in await store.list_runs(WF):
        await store.delete_run(WF, run)
    await store.aclose()


async def test_on_a_cluster_calls_are_batched_per_node(cluster_store: RedisCheckpointer) -> None:
    assert isinstance(cluster_store._calls.pipeline, ClusterAutoPipeline)
    runs = [f"r{i}" for i in range(30)]
    await asyncio.gather(*(cluster_store.save(snap(run, 0)) for run in runs))
    await asyncio.gather(*(cluster_store.latest(WF, run) for run in runs))  # loads the script
    Writes.log.clear()
    found = await asyncio.gather(*(cluster_store.latest(WF, run) for run in runs))
    assert all(s is not None and s.key.super_step == 0 for s in found)
    assert sum(n for n, _ in Writes.log) == 30
    assert len(Writes.log) <= 3  # one write per node


async def test_on_a_cluster_noscript_is_loaded_once_per_node(
    cluster_store: RedisCheckpointer, redis_cluster: RedisClusterServers
) -> None:
    runs = [f"n{i}" for i in range(12)]
    await asyncio.gather(*(cluster_store.save(snap(run, 0)) for run in runs))
    admins = [Redis(host="127.0.0.1", port=node.port) for node in redis_cluster.nodes]
    for admin in admins:
        await admin.script_flush()
        await admin.config_resetstat()
    found = await asyncio.gather(*(cluster_store.latest(WF, run) for run in runs))
    assert all(s is not None and s.key.super_step == 0 for s in found)
    for admin in admins:
        stats = await admin.info("commandstats")
        assert stats.get("cmdstat_script|load", {"calls": 0})["calls"] <= 1
        assert "cmdstat_script|exists" not in stats
        await admin.aclose()
