"""Every operation is safe to retry, by redis-py after a lost reply or by its caller after an
error, and the store's edge (memory limits, huge durations, replicas) fails with typed errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, cast

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError

from atomr_redis_state import (
    CheckpointConflictError,
    CheckpointKey,
    DurabilityError,
    RedisCheckpointer,
    Snapshot,
    StoreOutOfMemoryError,
)
from atomr_redis_state.store.ids import fork_run_id
from atomr_redis_state.testing import RedisClusterServers, RedisServer, running_server
from tests.conftest import Backend
from tests.test_redis_store import DeliveredTwice

WF = "wf-retry"


def snap(run: str, step: int, **values: Any) -> Snapshot:
    return Snapshot(CheckpointKey(WF, run, step), {"step": step, **values})


on_redis = pytest.mark.parametrize("backend", ["fakeredis", "redis", "cluster"], indirect=True)


class LosesReplies(Connection):
    """A connection that loses the reply to every other script call after the server ran it,
    as a dropped connection or a timeout would: redis-py's retry then sends the call again."""

    lost = 0
    _armed = False

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        packed = command if isinstance(command, bytes) else b"".join(command)
        LosesReplies._armed = b"EVALSHA" in packed[:40]
        await super().send_packed_command(command, check_health)

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        reply = await super().read_response(*args, **kwargs)
        if LosesReplies._armed and LosesReplies.lost % 2 == 0:
            LosesReplies._armed = False
            LosesReplies.lost += 1
            await self.disconnect()
            raise ConnectionError("the reply was lost")
        if LosesReplies._armed:
            LosesReplies.lost += 1
        return reply


@pytest.fixture(params=["redis", "cluster"])
async def losing(request: pytest.FixtureRequest) -> AsyncIterator[RedisCheckpointer]:
    """A store whose client loses replies, with the default retry policy of from_url."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        store = RedisCheckpointer.from_url(
            server.url, prefix="losing", connection_class=LosesReplies
        )
    else:
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        store = RedisCheckpointer.from_url(cluster.url, cluster=True, prefix="losing")
        await store.latest(WF, "warm-up")  # discovers the nodes
        for node in cast(RedisCluster, store.client).get_nodes():
            # redis-py's cluster client takes no connection_class: swap its connections
            await node.disconnect()
            node._connections.clear()
            node._free.clear()
            node.connection_class = LosesReplies
    LosesReplies.lost = 0
    yield store
    for run in await store.list_runs(WF):
        await store.delete_run(WF, run)
    await store.aclose()


async def test_operations_answer_the_same_when_their_reply_is_lost(
    losing: RedisCheckpointer,
) -> None:
    run = f"run-{id(losing)}"
    await losing.save(snap(run, 0), exclusive=True)
    await losing.save(snap(run, 1), exclusive=True)
    forked = await losing.fork(CheckpointKey(WF, run, 1), {"step": 10})
    lease = await losing.acquire_lease(WF, run, "w", 30)
    await losing.save(snap(run, 2), exclusive=True, lease=lease)
    assert await losing.release_lease(lease, note="done")
    assert [m.super_step for m in await losing.list(WF, run)] == [0, 1, 2]
    assert sorted(await losing.list_runs(WF)) == sorted([run, forked])
    assert await losing.delete_run(WF, forked)
    assert await losing.delete_run(WF, run)
    assert LosesReplies.lost > 5


@on_redis
async def test_a_fork_sent_twice_makes_one_fork_and_returns_its_id(backend: Backend) -> None:
    twice = RedisCheckpointer(DeliveredTwice(backend.client), prefix=backend.prefix)
    await twice.save(snap("r", 0))
    forked = await twice.fork(CheckpointKey(WF, "r", 0), {"step": 5})
    assert await twice.list_runs(WF) == sorted(["r", forked])
    fork = await twice.latest(WF, forked)
    assert fork is not None
    assert fork.values == {"step": 5}


@on_redis
async def test_a_delete_sent_twice_still_says_it_deleted(backend: Backend) -> None:
    twice = RedisCheckpointer(DeliveredTwice(backend.client), prefix=backend.prefix)
    await twice.save(snap("r", 0))
    assert await twice.delete_run(WF, "r")
    assert not await twice.delete_run(WF, "r")  # a new call: nothing left to delete


async def test_a_caller_retrying_an_exclusive_save_gets_the_first_answer(backend: Backend) -> None:
    store = backend.make()
    mine = snap("r", 0, by="me")
    await store.save(mine, exclusive=True)
    await store.save(mine, exclusive=True)  # the caller retries after an unknown outcome
    with pytest.raises(CheckpointConflictError):
        await store.save(snap("r", 0, by="someone else"), exclusive=True)


async def test_a_caller_retrying_a_fork_with_its_run_id_gets_the_same_fork(
    backend: Backend,
) -> None:
    store = backend.make()
    await store.save(snap("r", 0))
    fork_id = fork_run_id("r")
    assert await store.fork(CheckpointKey(WF, "r", 0), {"x": 1}, run_id=fork_id) == fork_id
    assert await store.fork(CheckpointKey(WF, "r", 0), {"x": 1}, run_id=fork_id) == fork_id
    assert await store.list_runs(WF) == sorted(["r", fork_id])


async def test_a_fork_id_whose_run_already_holds_that_step_by_a_save_is_a_conflict(
    backend: Backend,
) -> None:
    store = backend.make()
    await store.save(snap("r", 0, x=0))
    fork_id = fork_run_id("r")
    await store.save(snap(fork_id, 0, x="saved, not forked"))
    with pytest.raises(CheckpointConflictError):
        await store.fork(CheckpointKey(WF, "r", 0), {"x": 1}, run_id=fork_id)
    copy = await store.load(CheckpointKey(WF, fork_id, 0))
    assert copy is not None
    assert copy.values["x"] == "saved, not forked"


async def test_a_fork_overwritten_by_a_save_is_no_longer_that_fork(backend: Backend) -> None:
    store = backend.make()
    await store.save(snap("r", 0))
    fork_id = await store.fork(CheckpointKey(WF, "r", 0), {"x": 1})
    await store.save(snap(fork_id, 0, x=2))
    with pytest.raises(CheckpointConflictError):
        await store.fork(CheckpointKey(WF, "r", 0), {"x": 1}, run_id=fork_id)


async def test_a_fork_id_of_another_lineage_is_refused(backend: Backend) -> None:
    store = backend.make()
    await store.save(snap("r", 0))
    with pytest.raises(ValueError, match="fork_run_id"):
        await store.fork(CheckpointKey(WF, "r", 0), run_id=fork_run_id("other"))
    assert await store.list_runs(WF) == ["r"]


@pytest.mark.parametrize("ttl", [timedelta.max, 10**12, float(2**60)], ids=repr)
def test_a_ttl_beyond_what_redis_holds_is_refused(backend: Backend, ttl: Any) -> None:
    with pytest.raises(ValueError, match="ttl must be at most"):
        backend.make(ttl=ttl)


@pytest.mark.parametrize("backend", ["fakeredis", "redis", "cluster"], indirect=True)
async def test_the_longest_ttl_writes_integer_deadlines(backend: Backend) -> None:
    store = backend.make(ttl=10**11)
    await store.save(snap("r", 0))
    await store.fork(CheckpointKey(WF, "r", 0))
    lease = await store.acquire_lease(WF, "r", "w", 10**11)
    await store.save(snap("r", 1), lease=lease)
    keys = await backend.raw_keys()
    deadlines = [await backend.client.pexpiretime(key) for key in keys]
    assert all(deadline > 10**14 for deadline in deadlines), dict(zip(keys, deadlines, strict=True))
    assert len(await store.list_runs(WF)) == 2


async def test_from_url_clients_retry_by_default(redis_server: RedisServer) -> None:
    async with RedisCheckpointer.from_url(redis_server.url, prefix="killed") as store:
        retry = cast(Redis, store.client).get_retry()
        assert retry is not None
        assert retry.get_retries() >= 3
        await store.save(snap("r", 0))
        admin = Redis.from_url(redis_server.url)
        await admin.client_kill_filter(_type="normal", skipme=True)
        await admin.aclose()
        await store.save(snap("r", 1), exclusive=True)  # reconnects and retries, no error
        assert [m.super_step for m in await store.list(WF, "r")] == [0, 1]
        await store.delete_run(WF, "r")


async def test_over_maxmemory_every_write_is_refused_whole() -> None:
    with running_server(["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]) as server:
        client = Redis.from_url(server.url)
        store = RedisCheckpointer(client, prefix="full", ttl=3600)
        big = "x" * 400_000
        refused = 0
        for step in range(20):
            try:
                await store.save(snap("r", step, blob=big))
            except StoreOutOfMemoryError:
                refused += 1
        used = (await client.info("memory"))["used_memory"]
        assert refused > 10
        assert used < 3 * 1024 * 1024, used
        saved = [m.super_step for m in await store.list(WF, "r")]
        with pytest.raises(StoreOutOfMemoryError, match="maxmemory"):
            await store.save(snap("r", 99, blob=big), exclusive=True)
        with pytest.raises(StoreOutOfMemoryError):
            await store.fork(CheckpointKey(WF, "r", saved[0]))
        assert [m.super_step for m in await store.list(WF, "r")] == saved
        assert await store.list_runs(WF) == ["r"]
        for step in saved:  # every snapshot saved is whole
            loaded = await store.load(CheckpointKey(WF, "r", step))
            assert loaded is not None
            assert loaded.values["blob"] == big
        assert await store.delete_run(WF, "r")  # deleting frees memory: allowed
        await client.aclose()


async def test_a_save_waits_for_its_replicas(tmp_path: Any) -> None:
    with running_server() as primary, running_server() as spare:
        replica = Redis.from_url(spare.url)
        await replica.replicaof("127.0.0.1", primary.port)
        for _ in range(100):
            if (await replica.info("replication"))["master_link_status"] == "up":
                break
            await asyncio.sleep(0.05)
        durable = RedisCheckpointer.from_url(primary.url, prefix="d", replicas=1, replica_timeout=2)
        await durable.save(snap("r", 0))
        assert await replica.exists(durable.keys.run(WF, "r").snapshot(0))
        await replica.replicaof("NO", "ONE")
        await asyncio.sleep(0.1)
        impatient = RedisCheckpointer.from_url(
            primary.url, prefix="d", replicas=1, replica_timeout=0.1
        )
        with pytest.raises(DurabilityError) as raised:
            await impatient.save(snap("r", 1))
        assert (raised.value.required, raised.value.confirmed) == (1, 0)
        await durable.aclose()
        await impatient.aclose()
        await replica.aclose()


async def test_replicas_are_refused_on_a_cluster(redis_cluster: RedisClusterServers) -> None:
    client = RedisCluster.from_url(redis_cluster.url)
    with pytest.raises(ValueError, match="Cluster"):
        RedisCheckpointer(client, replicas=1)
    await client.aclose()


async def test_from_url_takes_every_store_option(redis_cluster: RedisClusterServers) -> None:
    store = RedisCheckpointer.from_url(
        redis_cluster.url, cluster=True, prefix="opts", ttl=60, keep_last=3, retry_for=2.5
    )
    assert (store.ttl_ms, store.keep_last) == (60_000, 3)
    await store.save(snap("r", 0))
    assert await store.delete_run(WF, "r")
    await store.aclose()
