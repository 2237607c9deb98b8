"""What only the Redis store has: key layout, tenants, round trips, scripts and clients."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection

from atomr_redis_state import (
    CheckpointConflictError,
    CheckpointKey,
    Claim,
    Lease,
    Outcome,
    RedisCheckpointer,
    Snapshot,
)
from atomr_redis_state.store.redis.keys import SLOT_BUCKETS, KeyLayout
from atomr_redis_state.store.redis.scripts import Scripts, script_source
from atomr_redis_state.testing import RedisServer
from tests.conftest import REDIS_BACKENDS, Backend

LUA_DIR = Path(__file__).resolve().parent.parent / "lua"
WF = "wf-redis"

on_redis = pytest.mark.parametrize("backend", REDIS_BACKENDS, indirect=True)


def snap(run: str, step: int) -> Snapshot:
    return Snapshot(CheckpointKey(WF, run, step), {"step": step})


def hash_tag(key: bytes) -> bytes:
    match = re.search(rb"\{([^}]+)\}", key)
    assert match, key
    return match.group(1)


@on_redis
async def test_every_key_starts_with_the_prefix(backend: Backend) -> None:
    cp = backend.make(prefix="tenant:a")
    await cp.save(snap("r", 0))
    await cp.fork(CheckpointKey(WF, "r", 0))
    keys = [k async for k in backend.client.scan_iter(match="tenant:a*")]
    assert len(keys) == 8  # two runs' hash, steps, meta; the run index; the workflow registry
    assert all(k.startswith(b"tenant:a:{") for k in keys)


@on_redis
async def test_prefixes_isolate_tenants(backend: Backend) -> None:
    one, two = (
        backend.make(prefix=backend.prefix + "-1"),
        backend.make(prefix=backend.prefix + "-2"),
    )
    await one.save(snap("r", 0))
    await two.save(snap("r", 5))
    latest_one, latest_two = await one.latest(WF, "r"), await two.latest(WF, "r")
    assert latest_one is not None
    assert latest_one.key.super_step == 0
    assert latest_two is not None
    assert latest_two.key.super_step == 5
    assert await one.list_runs(WF) == ["r"]
    await one.delete_run(WF, "r")
    assert await two.latest(WF, "r") is not None


@on_redis
async def test_a_run_its_forks_and_their_index_share_one_hash_tag(backend: Backend) -> None:
    cp = backend.make()
    await cp.save(snap("r", 0))
    forked = await cp.fork(CheckpointKey(WF, "r", 0))
    await cp.fork(CheckpointKey(WF, forked, 0))
    keys = await backend.raw_keys()
    assert len(keys) == 11  # three runs' hash, steps, meta; the run index, workflow registry
    assert len({hash_tag(k) for k in keys}) == 1


@on_redis
async def test_runs_of_one_workflow_spread_over_many_tags(backend: Backend) -> None:
    cp = backend.make()
    for i in range(300):
        await cp.save(snap(f"run-{i}", 0))
    tags = {hash_tag(k) for k in await backend.raw_keys()}
    assert len(tags) > SLOT_BUCKETS // 2


@on_redis
async def test_a_refused_value_writes_nothing(backend: Backend) -> None:
    cp = backend.make()
    with pytest.raises(ValueError, match="not strict JSON"):
        await cp.save(Snapshot(CheckpointKey(WF, "r", 0), {"a": 1, "b": float("nan")}))
    assert await backend.raw_keys() == []


@on_redis
async def test_a_missing_fork_source_writes_nothing(backend: Backend) -> None:
    cp = backend.make()
    with pytest.raises(LookupError):
        await cp.fork(CheckpointKey(WF, "r", 0), {"a": 1})
    assert await backend.raw_keys() == []


@on_redis
async def test_scripts_are_reloaded_after_script_flush(backend: Backend) -> None:
    cp = backend.make()
    await cp.save(snap("r", 0))
    await backend.client.script_flush()
    await cp.save(snap("r", 1))
    assert [m.super_step for m in await cp.list(WF, "r")] == [0, 1]


@pytest.mark.parametrize("prefix", ["", "a{b", "x}", 3], ids=repr)
def test_bad_prefixes_are_refused(prefix: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="prefix"):
        RedisCheckpointer(fakeredis.FakeAsyncRedis(), prefix=prefix)


async def test_a_client_that_decodes_responses_is_refused() -> None:
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisCheckpointer(client)
    await client.aclose()


def test_something_that_is_no_client_is_refused() -> None:
    with pytest.raises(TypeError, match="client"):
        RedisCheckpointer(object())


# Round trips, measured on the wire of a real server.


class CountingConnection(Connection):
    """Counts what is written to the server: one packed write is one round trip."""

    writes = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        await super().send_packed_command(command, check_health)


@pytest.fixture
async def counted(redis_server: RedisServer) -> AsyncIterator[RedisCheckpointer]:
    client = Redis.from_url(redis_server.url, connection_class=CountingConnection)
    cp = RedisCheckpointer(client, prefix="counted", ttl=3600, keep_last=100)
    await cp.save(snap("r", 0))
    await cp.fork(CheckpointKey(WF, "r", 0))  # loads every script used below
    await cp.latest(WF, "r")
    await cp.list(WF, "r")
    await cp.delete_run(WF, "nothing")
    await cp.release_lease(await cp.acquire_lease(WF, "r", "warm-up", 30))
    await cp.run_record(WF, "r")
    lease = await cp.acquire_lease(WF, "r", "warm-up", 30)
    await cp.renew_lease(lease)
    await cp.release_lease(lease)
    yield cp
    await cp.delete_run(WF, "r")
    for run in await cp.list_runs(WF):
        await cp.delete_run(WF, run)
    await client.aclose()


async def test_every_operation_is_one_round_trip(counted: RedisCheckpointer) -> None:
    key = CheckpointKey(WF, "r", 1)
    operations: dict[str, Callable[[], Awaitable[object]]] = {
        "save": lambda: counted.save(snap("r", 1)),
        "exclusive save": lambda: counted.save(snap("r", 2), exclusive=True),
        "load": lambda: counted.load(key),
        "latest": lambda: counted.latest(WF, "r"),
        "list": lambda: counted.list(WF, "r"),
        "fork": lambda: counted.fork(key, {"a": 1}),
        "delete_run": lambda: counted.delete_run(WF, "gone"),
        "acquire_lease": lambda: counted.acquire_lease(WF, "r", "w", 30),
        "renew_lease": lambda: counted.renew_lease(held[0]),
        "leased save": lambda: counted.save(snap("r", 3), exclusive=True, lease=held[0]),
        "run_record": lambda: counted.run_record(WF, "r"),
        "release_lease": lambda: counted.release_lease(held[0], note={"done": True}),
    }
    held = [Lease(WF, "r", "w", 1, 0, 30_000)]
    trips = {}
    for name, operation in operations.items():
        before = CountingConnection.writes
        result = await operation()
        trips[name] = CountingConnection.writes - before
        if isinstance(result, Lease):
            held[0] = result
    assert trips == dict.fromkeys(operations, 1)


def test_scripts_are_files_with_a_header_and_no_shebang() -> None:
    names = [f.name for f in Scripts.__dataclass_fields__.values()]
    for name in names:
        text = (LUA_DIR / f"{name}.lua").read_text()
        assert text.startswith(f"-- {name}:"), name
        assert "KEYS[1]" in text.split("\n\n")[0] or "KEYS[1]" in text[:600], name
        assert "#!" not in script_source(name)


def test_key_layout_is_built_in_one_place() -> None:
    layout = KeyLayout("p")
    run = layout.run("w:1", "r{x}")
    assert run.steps == "p:{" + hash_tag(run.steps.encode()).decode() + "}:w%3A1:r%7Bx%7D:steps"
    assert run.snapshot(3) == run.snapshot_prefix + "3"
    assert run.run_index in layout.run_index_buckets("w:1")


class DeliveredTwice:
    """A client whose every script call reaches the server twice, as when a reply is lost and
    the client retries the command."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def register_script(self, source: str) -> Any:
        script = self.client.register_script(source)

        async def call_twice(keys: Any, args: Any) -> Any:
            await script(keys=keys, args=args)
            return await script(keys=keys, args=args)

        return call_twice


@on_redis
async def test_a_retried_exclusive_save_does_not_conflict_with_itself(backend: Backend) -> None:
    retrying = RedisCheckpointer(DeliveredTwice(backend.client), prefix=backend.prefix)
    await retrying.save(snap("r", 0), exclusive=True)
    await retrying.save(snap("r", 1), exclusive=True)
    assert [m.super_step for m in await retrying.list(WF, "r")] == [0, 1]
    someone_else = Snapshot(CheckpointKey(WF, "r", 1), {"by": "someone else"})
    with pytest.raises(CheckpointConflictError):
        await backend.make().save(someone_else, exclusive=True)


@on_redis
async def test_a_run_without_a_meta_hash_is_still_listed(backend: Backend) -> None:
    cp = backend.make()
    for step in range(3):
        await cp.save(snap("old", step))
    assert isinstance(cp, RedisCheckpointer)
    await backend.client.delete(cp.keys.run(WF, "old").meta)  # as saved by an earlier version
    assert [m.super_step for m in await cp.list(WF, "old")] == [0, 1, 2]
    assert [m.super_step for m in await cp.list(WF, "old", limit=1)] == [2]


@on_redis
async def test_the_meta_hash_follows_trimming_and_deletion(backend: Backend) -> None:
    cp = backend.make(keep_last=2)
    for step in range(4):
        await cp.save(snap("r", step))
    assert isinstance(cp, RedisCheckpointer)
    meta = cp.keys.run(WF, "r").meta
    assert sorted(await backend.client.hkeys(meta)) == [b"2", b"3"]
    await cp.delete_run(WF, "r")
    assert not await backend.client.exists(meta)


async def test_every_queue_operation_is_one_round_trip(redis_server: RedisServer) -> None:
    client = Redis.from_url(redis_server.url, connection_class=CountingConnection)
    cp = RedisCheckpointer(client, prefix="counted-queue")
    queued: list[object] = []

    def submitted(run: str) -> Snapshot:
        return Snapshot(CheckpointKey(WF, run, 0), {"step": 0}, "init")

    async def claimed() -> object:
        claim = await cp.claim(WF, "w", 30)
        queued.append(claim)
        return claim

    async def finish(outcome: Outcome) -> object:
        claim = queued.pop()
        assert isinstance(claim, Claim)
        return await cp.finish(claim.lease, outcome, retry_in=0.01, max_attempts=5)

    def operations(run: str) -> dict[str, Callable[[], Awaitable[object]]]:
        return {
            "submit": lambda: cp.submit(submitted(run)),
            "submit again": lambda: cp.submit(submitted(run)),
            "finish retry (with its hint)": lambda: finish("retry"),
            "finish paused": lambda: finish("paused"),
            "resume_run (with its hint)": lambda: cp.resume_run(WF, run, "yes"),
            "finish blocked": lambda: finish("blocked"),
            "requeue (with its hint)": lambda: cp.requeue(WF, run),
            "cancel": lambda: cp.cancel(WF, run),
            "heartbeat": lambda: cp.heartbeat("w", {"runs": []}, 30),
            "workers": lambda: cp.workers(),
            "take_permit": lambda: cp.take_permit(WF, f"w/{run}", 2, 30),
            "queue_depth": lambda: cp.queue_depth(WF),
        }

    trips = {}
    async with cp.wake_ups([WF]):
        for run in ("warm-up", "counted"):  # the first pass loads the scripts
            for name, operation in operations(run).items():
                if name.startswith("finish"):
                    await asyncio.sleep(0.05)
                    await claimed()
                before = CountingConnection.writes
                await operation()
                trips[name] = CountingConnection.writes - before
    # queue_depth: 256 scripts, in two batches of 128 sent at once (one round trip of latency).
    assert trips == {**dict.fromkeys(operations("any"), 1), "queue_depth": 2}
    await client.aclose()


async def test_a_claim_with_a_wake_up_is_one_round_trip_plus_its_hint(
    redis_server: RedisServer,
) -> None:
    """A woken worker claims on the bucket it was told about (one script), then settles the
    bucket's hint (a second call); an idle one reads the hint at most once a second."""
    client = Redis.from_url(redis_server.url, connection_class=CountingConnection)
    cp = RedisCheckpointer(client, prefix="counted-claim")
    await cp.claim(WF, "warm-up", 30)  # loads the scripts
    async with cp.wake_ups([WF]) as wake:
        assert await cp.claim(WF, "w", 30) is None  # reads the hint (and sweeps once)
        before = CountingConnection.writes
        assert await cp.claim(WF, "w", 30) is None  # nothing new: no call at all
        assert CountingConnection.writes == before
        client = Redis.from_url(redis_server.url)
        await RedisCheckpointer(client, prefix="counted-claim").submit(  # another process
            Snapshot(CheckpointKey(WF, "woken", 0), {}, "init")
        )
        await wake.wait(at_most=5)
        before = CountingConnection.writes
        claim = await cp.claim(WF, "w", 30)
        assert claim is not None
        assert CountingConnection.writes - before == 1
        await client.aclose()
    await cp.client.aclose()
