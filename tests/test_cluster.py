"""Redis Cluster for real: runs spread over the masters, and resharding loses no write."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.crc import key_slot
from redis.exceptions import TryAgainError

from atomr_redis_state import CheckpointKey, RedisCheckpointer, Snapshot, StoreUnavailableError
from atomr_redis_state.testing import RedisClusterServers

WF = "wf-cluster"


@pytest.fixture
async def cluster_client(redis_cluster: RedisClusterServers) -> AsyncIterator[RedisCluster]:
    client = RedisCluster.from_url(redis_cluster.url)
    yield client
    await client.aclose()


async def test_runs_of_one_workflow_spread_over_every_master(
    cluster_client: RedisCluster, redis_cluster: RedisClusterServers
) -> None:
    cp = RedisCheckpointer(cluster_client, prefix="spread")
    runs = [f"run-{i}" for i in range(300)]
    await asyncio.gather(*(cp.save(Snapshot(CheckpointKey(WF, r, 0), {})) for r in runs))
    owners = Counter(owner_port(cluster_client, cp.keys.run(WF, run).steps) for run in runs)
    assert set(owners) == {node.port for node in redis_cluster.nodes}
    assert min(owners.values()) >= 0.2 * len(runs), owners
    for run in runs:
        await cp.delete_run(WF, run)


async def command(node: Redis, *args: str | int | bytes) -> Any:
    """Send a raw command to one node (redis-py leaves execute_command untyped)."""
    return await node.execute_command(*args)  # type: ignore[no-untyped-call]


def owner_port(client: RedisCluster, key: str) -> int:
    """The port of the master that owns ``key``."""
    node = client.get_node_from_key(key)
    assert node is not None
    return int(node.port)


class SlotMigration:
    """Moves one slot between two masters by hand, as redis-cli --cluster reshard does."""

    def __init__(self, slot: int, source_port: int, target_port: int) -> None:
        self.slot, self.target_port = slot, target_port
        self.source, self.target = Redis(port=source_port), Redis(port=target_port)

    async def begin(self) -> None:
        source_id = (await command(self.source, "CLUSTER", "MYID")).decode()
        self.target_id = (await command(self.target, "CLUSTER", "MYID")).decode()
        await command(self.target, "CLUSTER", "SETSLOT", self.slot, "IMPORTING", source_id)
        await command(self.source, "CLUSTER", "SETSLOT", self.slot, "MIGRATING", self.target_id)

    async def move(self, *keys: str | bytes) -> None:
        await command(
            self.source, "MIGRATE", "127.0.0.1", self.target_port, "", 0, 5000, "KEYS", *keys
        )

    async def move_all(self, batch: int = 2, pause: float = 0.02) -> None:
        while keys := await command(self.source, "CLUSTER", "GETKEYSINSLOT", self.slot, batch):
            await self.move(*keys)
            await asyncio.sleep(pause)

    async def finish(self) -> None:
        await command(self.target, "CLUSTER", "SETSLOT", self.slot, "NODE", self.target_id)
        await command(self.source, "CLUSTER", "SETSLOT", self.slot, "NODE", self.target_id)
        await self.source.aclose()
        await self.target.aclose()


async def migrate_slot(slot: int, source_port: int, target_port: int) -> None:
    migration = SlotMigration(slot, source_port, target_port)
    await migration.begin()
    await migration.move_all()
    await migration.finish()


def other_master(redis_cluster: RedisClusterServers, port: int) -> int:
    return next(n.port for n in redis_cluster.nodes if n.port != port)


async def save_steps(cp: RedisCheckpointer, run: str, steps: int) -> int:
    """A worker's loop: resume from latest, save the next step exclusively; retry TRYAGAIN."""
    retries = 0
    while True:
        try:
            latest = await cp.latest(WF, run)
            step = 0 if latest is None else latest.key.super_step + 1
            if step == steps:
                return retries
            await cp.save(
                Snapshot(CheckpointKey(WF, run, step), {"step": step, "pad": "x" * 200}),
                exclusive=True,
            )
        except TryAgainError:
            retries += 1
            await asyncio.sleep(0.02)


async def test_resharding_during_saves_loses_and_duplicates_nothing(
    cluster_client: RedisCluster, redis_cluster: RedisClusterServers
) -> None:
    cp = RedisCheckpointer(cluster_client, prefix="reshard", keep_last=10)
    run = "run-resharded"
    for step in range(20):
        await cp.save(Snapshot(CheckpointKey(WF, run, step), {"step": step, "pad": "x" * 200}))
    steps_key = cp.keys.run(WF, run).steps
    slot = key_slot(steps_key.encode())
    source = owner_port(cluster_client, steps_key)
    target = other_master(redis_cluster, source)

    await asyncio.gather(save_steps(cp, run, 120), migrate_slot(slot, source, target))

    history = await cp.list(WF, run)
    assert [m.super_step for m in history] == list(range(110, 120))
    snapshot_keys = [k async for k in cluster_client.scan_iter(match="reshard:*:snap:*")]
    assert len(snapshot_keys) == 10  # trimmed snapshots left nowhere, on neither node
    for step in (110, 119):
        snapshot = await cp.load(CheckpointKey(WF, run, step))
        assert snapshot is not None
        assert snapshot.values["step"] == step
    forked = await cp.fork(CheckpointKey(WF, run, 115), {"status": "forked"})
    assert (await cp.latest(WF, forked)) is not None
    source_node = Redis(port=source)
    assert await command(source_node, "CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    await source_node.aclose()
    await cp.delete_run(WF, run)
    await cp.delete_run(WF, forked)


async def test_a_run_split_across_nodes_mid_migration_waits_rather_than_misreads(
    cluster_client: RedisCluster, redis_cluster: RedisClusterServers
) -> None:
    cp = RedisCheckpointer(cluster_client, prefix="split", retry_for=1.0)
    run = "run-split"
    for step in range(5):
        await cp.save(Snapshot(CheckpointKey(WF, run, step), {"step": step}))
    keys = cp.keys.run(WF, run)
    source = owner_port(cluster_client, keys.steps)
    migration = SlotMigration(
        key_slot(keys.steps.encode()), source, other_master(redis_cluster, source)
    )
    await migration.begin()
    await migration.move(keys.snapshot(4))  # the newest snapshot leaves; its steps set stays

    with pytest.raises(StoreUnavailableError, match="TTL exhausted"):
        await cp.latest(WF, run)  # neither None nor step 3: TRYAGAIN until retry_for runs out
    with pytest.raises(StoreUnavailableError):
        await cp.delete_run(WF, run)

    async def finish_soon() -> None:
        await asyncio.sleep(0.3)
        await migration.move_all()
        await migration.finish()

    finishing = asyncio.create_task(finish_soon())
    latest = await cp.latest(WF, run)  # waits out the migration: the caller sees no error
    await finishing
    assert latest is not None
    assert latest.values == {"step": 4}
    assert await cp.delete_run(WF, run)
