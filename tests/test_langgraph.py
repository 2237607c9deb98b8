"""What the LangGraph savers guarantee beyond the conformance suite: keys and slots, round trips,
blobs per channel version and their collection, ttl, clients, scripts, serializers."""

from __future__ import annotations

import asyncio
import importlib
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import fakeredis
import pytest
import redis
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    empty_checkpoint,
)
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.serde.types import ERROR
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import Connection
from redis.connection import Connection as SyncConnection
from redis.crc import key_slot
from redis.exceptions import TimeoutError as RedisTimeoutError

from atomr_redis_state.langgraph import AsyncRedisStateSaver, RedisStateSaver, scripts
from atomr_redis_state.langgraph.keys import BUCKETS, bucket_of, escape, unescape
from atomr_redis_state.testing import RedisClusterServers, RedisServer
from tests.langgraph_backends import SaverBackend, saver_backend  # noqa: F401

LUA_DIR = Path(__file__).resolve().parents[1] / "lua"


def cfg(thread: str, ns: str = "", checkpoint_id: str | None = None) -> RunnableConfig:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ns}
    if checkpoint_id is not None:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def checkpoint(values: dict[str, Any], versions: ChannelVersions) -> Checkpoint:
    cp = empty_checkpoint()
    cp["channel_values"] = values
    cp["channel_versions"] = versions
    return cp


def meta(step: int = 0, run_id: str | None = None) -> CheckpointMetadata:
    md: CheckpointMetadata = {"source": "loop", "step": step, "parents": {}}
    if run_id is not None:
        md["run_id"] = run_id
    return md


async def put(
    saver: AsyncRedisStateSaver,
    thread: str,
    values: dict[str, Any],
    versions: ChannelVersions,
    new: ChannelVersions | None = None,
    *,
    parent: RunnableConfig | None = None,
    ns: str = "",
    run_id: str | None = None,
) -> RunnableConfig:
    config = cfg(thread, ns)
    if parent is not None:
        config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    return await saver.aput(
        config, checkpoint(values, versions), meta(run_id=run_id), versions if new is None else new
    )


def thread_keys(saver: AsyncRedisStateSaver | RedisStateSaver, thread: str) -> list[str]:
    base = saver.keys.thread(thread).keys[1]
    return [f"{base}{name}" for name in ("cps", "cp", "b", "w", "rm")]


# Keys and slots


async def test_every_key_of_a_thread_and_its_indexes_share_one_slot(
    saver_backend: SaverBackend,  # noqa: F811
) -> None:
    saver = saver_backend.make()
    first = await put(saver, "t:1{x}", {"a": 1}, {"a": 1}, run_id="run-1")
    await put(saver, "t:1{x}", {"a": 2}, {"a": 2}, parent=first, ns="child:1", run_id="run-1")
    await saver.aput_writes(first, [("a", 3)], "task-1")
    keys = await saver_backend.raw_keys()
    assert len(keys) == 7  # cps cp b w rm, the thread index, one run key
    assert len({key_slot(key) for key in keys}) == 1
    assert all(b"{" + f"{bucket_of('t:1{x}'):02x}".encode() + b"}" in key for key in keys)


async def test_threads_spread_over_the_buckets() -> None:
    buckets = {bucket_of(f"thread-{i}") for i in range(2000)}
    assert len(buckets) == BUCKETS


@pytest.mark.parametrize("part", ["", "a:b", "{x}", "100%", "%3A", "a\x00b\x01c\x02", "é"])
def test_escaping_round_trips_and_leaves_no_separator(part: str) -> None:
    escaped = escape(part)
    assert unescape(escaped) == part
    assert not any(c in escaped for c in ":{}\x00\x01\x02")


async def test_ids_with_separators_and_braces_stay_apart(
    saver_backend: SaverBackend,  # noqa: F811
) -> None:
    saver = saver_backend.make()
    threads = ["a:b", "a", "a%3Ab", "{a}", "a\x00b", "ünï"]
    for thread in threads:
        for ns in ["", "child:1", "child%3A1"]:
            await put(saver, thread, {"who": f"{thread}|{ns}"}, {"who": 1}, ns=ns)
    for thread in threads:
        for ns in ["", "child:1", "child%3A1"]:
            got = await saver.aget_tuple(cfg(thread, ns))
            assert got is not None
            assert got.checkpoint["channel_values"] == {"who": f"{thread}|{ns}"}
            assert got.config["configurable"]["checkpoint_ns"] == ns


# One round trip per saver call


class CountingConnection(Connection):
    """Counts packed writes to the server: one per round trip."""

    writes = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.writes += 1
        await super().send_packed_command(command, check_health)


class SyncCountingConnection(SyncConnection):
    writes = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        SyncCountingConnection.writes += 1
        super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]


@pytest.fixture
async def counted(redis_server: RedisServer) -> AsyncIterator[AsyncRedisStateSaver]:
    client = Redis.from_url(redis_server.url, connection_class=CountingConnection)
    saver = AsyncRedisStateSaver(client, prefix=f"rt{uuid.uuid4().hex[:8]}", ttl=3600)
    yield saver
    await saver.adelete_thread("t")
    await saver.adelete_thread("copy")
    await client.aclose()


async def test_every_async_saver_call_is_one_round_trip(counted: AsyncRedisStateSaver) -> None:
    saver = counted
    first = await put(saver, "t", {"a": 1}, {"a": 1}, run_id="r1")
    second = await put(saver, "t", {"a": 2}, {"a": 2}, parent=first, run_id="r2")

    async def listing() -> None:
        assert len([t async for t in saver.alist(cfg("t"), limit=5)]) >= 1

    operations: dict[str, Any] = {
        "aput": lambda: put(saver, "t", {"a": 3}, {"a": 3}, parent=second, run_id="r2"),
        "aput_writes": lambda: saver.aput_writes(second, [("a", 1), ("b", 2)], "task"),
        "aget_tuple latest": lambda: saver.aget_tuple(cfg("t")),
        "aget_tuple by id": lambda: saver.aget_tuple(second),
        "alist": listing,
        "acopy_thread": lambda: saver.acopy_thread("t", "copy"),
        "adelete_for_runs": lambda: saver.adelete_for_runs(["r1"]),
        "aprune keep_latest": lambda: saver.aprune(["t", "copy"]),
        "aprune delete": lambda: saver.aprune(["copy"], strategy="delete"),
        "adelete_thread": lambda: saver.adelete_thread("t"),
    }
    for operation in operations.values():  # loads every script
        await operation()
    await put(saver, "t", {"a": 1}, {"a": 1}, run_id="r1")
    trips = {}
    for name, operation in operations.items():
        before = CountingConnection.writes
        await operation()
        trips[name] = CountingConnection.writes - before
    assert trips == dict.fromkeys(operations, 1)


def test_every_sync_saver_call_is_one_round_trip(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, connection_class=SyncCountingConnection)
    saver = RedisStateSaver(client, prefix=f"rt{uuid.uuid4().hex[:8]}")
    first = saver.put(cfg("t"), checkpoint({"a": 1}, {"a": 1}), meta(run_id="r1"), {"a": 1})
    operations: dict[str, Any] = {
        "put": lambda: saver.put(
            first, checkpoint({"a": 2}, {"a": 2}), meta(run_id="r2"), {"a": 2}
        ),
        "put_writes": lambda: saver.put_writes(first, [("a", 1)], "task"),
        "get_tuple": lambda: saver.get_tuple(cfg("t")),
        "list": lambda: list(saver.list(cfg("t"))),
        "copy_thread": lambda: saver.copy_thread("t", "copy"),
        "delete_for_runs": lambda: saver.delete_for_runs(["r1"]),
        "prune": lambda: saver.prune(["t", "copy"]),
        "delete_thread": lambda: saver.delete_thread("t"),
    }
    for operation in operations.values():  # loads every script
        operation()
    saver.put(cfg("t"), checkpoint({"a": 1}, {"a": 1}), meta(run_id="r1"), {"a": 1})
    trips = {}
    for name, operation in operations.items():
        before = SyncCountingConnection.writes
        operation()
        trips[name] = SyncCountingConnection.writes - before
    saver.delete_thread("copy")
    client.close()
    assert trips == dict.fromkeys(operations, 1)


async def test_concurrent_calls_share_writes_but_each_gets_its_own_reply(
    counted: AsyncRedisStateSaver,
) -> None:
    saver = counted
    stored = [await put(saver, "t", {"a": i}, {"a": i}, ns=f"ns{i}") for i in range(20)]
    before = CountingConnection.writes
    got = await asyncio.gather(*(saver.aget_tuple(config) for config in stored))
    assert CountingConnection.writes - before < 20
    assert [t.checkpoint["channel_values"]["a"] for t in got if t] == list(range(20))


# Blobs per channel version, and their collection


async def test_unchanged_channels_are_not_rewritten(
    saver_backend: SaverBackend,  # noqa: F811
) -> None:
    saver = saver_backend.make()
    first = await put(saver, "t", {"a": "a1", "b": "b1"}, {"a": 1, "b": 1})
    second = await put(saver, "t", {"a": "a2", "b": "b1"}, {"a": 2, "b": 1}, {"a": 2}, parent=first)
    blobs = thread_keys(saver, "t")[2]
    assert await saver_backend.client.hlen(blobs) == 3
    got = [await saver.aget_tuple(c) for c in (first, second)]
    assert [t.checkpoint["channel_values"] for t in got if t] == [
        {"a": "a1", "b": "b1"},
        {"a": "a2", "b": "b1"},
    ]


async def test_prune_keeps_the_latest_of_each_namespace_and_collects_blobs(
    saver_backend: SaverBackend,  # noqa: F811
) -> None:
    saver = saver_backend.make()
    parent = None
    for i in range(1, 4):
        parent = await put(saver, "t", {"a": i, "b": "same"}, {"a": i, "b": 1}, parent=parent)
        await saver.aput_writes(parent, [("a", i * 10)], f"task-{i}")
    child = await put(saver, "t", {"c": "child"}, {"c": 1}, ns="child:1")
    await saver.aprune(["t"])
    assert [t.config async for t in saver.alist(cfg("t"))] == [parent]
    assert [t.config async for t in saver.alist(cfg("t", "child:1"))] == [child]
    latest = await saver.aget_tuple(cfg("t"))
    assert latest is not None
    assert latest.pending_writes == [("task-3", "a", 30)]
    fields = await saver_backend.client.hkeys(thread_keys(saver, "t")[2])
    assert sorted(fields) == [b"\x00a\x003", b"\x00b\x001", b"child%3A1\x00c\x001"]
    assert await saver_backend.client.zcard(thread_keys(saver, "t")[3]) == 1


async def test_delete_for_runs_collects_blobs_and_run_index(
    saver_backend: SaverBackend,  # noqa: F811
) -> None:
    saver = saver_backend.make()
    first = await put(saver, "t", {"a": 1, "b": 1}, {"a": 1, "b": 1}, run_id="r1")
    await put(saver, "t", {"a": 2, "b": 1}, {"a": 2, "b": 1}, {"a": 2}, parent=first, run_id="r2")
    await put(saver, "u", {"a": 9}, {"a": 9}, run_id="r1")
    await saver.adelete_for_runs(["r1"])
    assert [t.metadata["run_id"] async for t in saver.alist(cfg("t"))] == ["r2"]
    assert await saver.aget_tuple(cfg("u")) is None
    fields = await saver_backend.client.hkeys(thread_keys(saver, "t")[2])
    assert sorted(fields) == [b"\x00a\x002", b"\x00b\x001"]
    await saver.adelete_for_runs(["r2"])
    assert await saver_backend.raw_keys() == []


async def test_deleting_threads_leaves_no_key_behind(
    saver_backend: SaverBackend,  # noqa: F811
) -> None:
    saver = saver_backend.make()
    for thread in ("t", "u"):
        stored = await put(saver, thread, {"a": 1}, {"a": 1}, run_id=f"run-{thread}")
        await saver.aput_writes(stored, [("a", 2)], "task")
    await saver.acopy_thread("t", "v")
    await saver.adelete_thread("t")
    await saver.aprune(["u", "v"], strategy="delete")
    assert await saver_backend.raw_keys() == []


# Writes


async def test_writes_are_idempotent_per_task_and_index_and_special_ones_replace(
    saver_backend: SaverBackend,  # noqa: F811
) -> None:
    saver = saver_backend.make()
    stored = await put(saver, "t", {}, {})
    await saver.aput_writes(stored, [("a", 1), (ERROR, "first")], "task", "path")
    await saver.aput_writes(stored, [("a", 2), (ERROR, "second")], "task", "path")
    got = await saver.aget_tuple(stored)
    assert got is not None
    assert sorted(got.pending_writes or []) == [("task", ERROR, "second"), ("task", "a", 1)]


async def test_pending_writes_come_in_task_path_order(
    saver_backend: SaverBackend,  # noqa: F811
) -> None:
    saver = saver_backend.make()
    stored = await put(saver, "t", {}, {})
    await saver.aput_writes(stored, [("c", 1)], "z-task", "b-path")
    await saver.aput_writes(stored, [("c", 2), ("d", 3)], "y-task", "a-path")
    got = await saver.aget_tuple(stored)
    assert got is not None
    assert got.pending_writes == [("y-task", "c", 2), ("y-task", "d", 3), ("z-task", "c", 1)]


# Listing across threads, copying across slots


async def test_list_without_a_config_covers_every_thread(
    saver_backend: SaverBackend,  # noqa: F811
) -> None:
    saver = saver_backend.make()
    for thread in ("t1", "t2", "t3"):
        await put(saver, thread, {"a": thread}, {"a": 1})
    found = [t.config["configurable"]["thread_id"] async for t in saver.alist(None)]
    assert found == ["t3", "t2", "t1"]  # newest first
    assert len([t async for t in saver.alist(None, limit=2)]) == 2


def threads_in_buckets(same: bool) -> tuple[str, str]:
    source = "source"
    for i in range(10_000):
        target = f"target-{i}"
        if (bucket_of(target) == bucket_of(source)) == same:
            return source, target
    raise AssertionError("no such thread id")


@pytest.mark.parametrize("same_bucket", [True, False], ids=["same-slot", "other-slot"])
async def test_copy_thread_copies_everything_within_or_across_slots(
    saver_backend: SaverBackend,  # noqa: F811
    same_bucket: bool,
) -> None:
    saver = saver_backend.make()
    source, target = threads_in_buckets(same_bucket)
    first = await put(saver, source, {"a": 1}, {"a": 1}, run_id="r1")
    second = await put(saver, source, {"a": 2}, {"a": 2}, parent=first, run_id="r1")
    await saver.aput_writes(second, [("a", 3)], "task")
    await saver.acopy_thread(source, target)
    copied = [t async for t in saver.alist(cfg(target))]
    original = [t async for t in saver.alist(cfg(source))]
    assert [t.checkpoint for t in copied] == [t.checkpoint for t in original]
    assert [t.pending_writes for t in copied] == [t.pending_writes for t in original]
    assert [
        t.parent_config and t.parent_config["configurable"]["checkpoint_id"] for t in copied
    ] == [
        first["configurable"]["checkpoint_id"],
        None,
    ]
    await saver.adelete_for_runs(["r1"])
    assert await saver_backend.raw_keys() == []


# ttl


async def test_with_a_ttl_every_key_expires_within_two_ttls(
    saver_backend: SaverBackend,  # noqa: F811
) -> None:
    saver = saver_backend.make(ttl=60)
    first = await put(saver, "t", {"a": 1}, {"a": 1}, run_id="r1")
    await saver.aput_writes(first, [("a", 2)], "task")
    await put(saver, "u", {"a": 1}, {"a": 1}, run_id="r2")
    await saver.acopy_thread("t", "v")
    keys = await saver_backend.raw_keys()
    assert len(keys) >= 10
    for key in keys:
        assert 0 < await saver_backend.client.pttl(key) <= 120_000, key
    for thread in ("t", "v"):
        deadlines = {await saver_backend.client.pexpiretime(k) for k in thread_keys(saver, thread)}
        assert len(deadlines) == 1


async def test_a_thread_refreshes_its_deadline_only_when_less_than_ttl_is_left(
    saver_backend: SaverBackend,  # noqa: F811
) -> None:
    saver = saver_backend.make(ttl=60)
    first = await put(saver, "t", {"a": 1}, {"a": 1})
    cps = thread_keys(saver, "t")[0]
    deadline = await saver_backend.client.pexpiretime(cps)
    await saver.aput_writes(first, [("a", 2)], "task")
    assert await saver_backend.client.pexpiretime(cps) == deadline
    await saver_backend.client.pexpire(cps, 10_000)
    await saver.aput_writes(first, [("a", 3)], "task-2")
    assert await saver_backend.client.pexpiretime(cps) >= deadline


async def test_a_saver_without_ttl_keeps_an_expiring_thread_expiring(
    saver_backend: SaverBackend,  # noqa: F811
) -> None:
    await put(saver_backend.make(ttl=60), "t", {"a": 1}, {"a": 1})
    stored = await put(saver_backend.make(), "t", {"a": 2}, {"a": 2})
    await saver_backend.make().aput_writes(stored, [("a", 3)], "task")
    ttls = [await saver_backend.client.pttl(key) for key in await saver_backend.raw_keys()]
    assert len(ttls) == 5  # cps cp b w, the thread index
    assert all(ttl > 0 for ttl in ttls)


@pytest.mark.parametrize("backend_name", ["redis", "cluster"])
async def test_expired_threads_leave_no_key(
    request: pytest.FixtureRequest, backend_name: str
) -> None:
    client: Any
    if backend_name == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        client = Redis.from_url(server.url)
    else:
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        client = RedisCluster.from_url(cluster.url)
    backend = SaverBackend(backend_name, client, None)
    saver = backend.make(ttl=0.2)
    for thread in ("t", "u"):
        stored = await put(saver, thread, {"a": 1}, {"a": 1}, run_id="r")
        await saver.aput_writes(stored, [("a", 2)], "task")
    assert await backend.raw_keys() != []
    await asyncio.sleep(0.6)
    assert await backend.raw_keys() == []
    await client.aclose()


# Versions


def test_next_versions_are_unique_per_branch_and_increase() -> None:
    saver = AsyncRedisStateSaver(fakeredis.FakeAsyncRedis())
    base = saver.get_next_version(None, None)
    branches = {saver.get_next_version(base, None) for _ in range(1000)}
    assert len(branches) == 1000
    assert all(
        v > base and v.split(".")[0] == branches.copy().pop().split(".")[0] for v in branches
    )
    assert saver.get_next_version(7, None).startswith(f"{8:016}.")  # type: ignore[arg-type]


# Serializers


class XorCipher:
    """A stand-in cipher for the test (EncryptedSerializer accepts any CipherProtocol)."""

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        return "xor", bytes(b ^ 0x5A for b in plaintext)

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        assert ciphername == "xor"
        return bytes(b ^ 0x5A for b in ciphertext)


async def test_an_encrypted_serializer_leaves_no_plaintext_in_redis(
    saver_backend: SaverBackend,  # noqa: F811
) -> None:
    saver = saver_backend.make(serde=EncryptedSerializer(XorCipher()))
    stored = await put(saver, "t", {"secret": "hunter2-channel"}, {"secret": 1})
    await saver.aput_writes(stored, [("secret", "hunter2-write")], "task")
    got = await saver.aget_tuple(stored)
    assert got is not None
    assert got.checkpoint["channel_values"] == {"secret": "hunter2-channel"}
    assert got.pending_writes == [("task", "secret", "hunter2-write")]
    keys = thread_keys(saver, "t")
    dumped = b"".join(
        [
            *(await saver_backend.client.hvals(keys[1])),
            *(await saver_backend.client.hvals(keys[2])),
            *(await saver_backend.client.zrange(keys[3], 0, -1)),
        ]
    )
    assert b"hunter2" not in dumped
    assert b"msgpack+xor" in dumped


# Clients and options


def test_clients_of_the_wrong_kind_are_refused() -> None:
    with pytest.raises(TypeError, match="RedisStateSaver"):
        AsyncRedisStateSaver(fakeredis.FakeRedis())
    with pytest.raises(TypeError, match="AsyncRedisStateSaver"):
        RedisStateSaver(fakeredis.FakeAsyncRedis())
    with pytest.raises(TypeError, match="client"):
        AsyncRedisStateSaver(object())
    with pytest.raises(ValueError, match="decode_responses=False"):
        AsyncRedisStateSaver(fakeredis.FakeAsyncRedis(decode_responses=True))
    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisStateSaver(fakeredis.FakeRedis(decode_responses=True))


@pytest.mark.parametrize("prefix", ["", "a{b", "x}", 3], ids=repr)
def test_bad_prefixes_are_refused(prefix: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="prefix"):
        AsyncRedisStateSaver(fakeredis.FakeAsyncRedis(), prefix=prefix)


async def test_an_unknown_prune_strategy_is_refused() -> None:
    saver = AsyncRedisStateSaver(fakeredis.FakeAsyncRedis())
    with pytest.raises(ValueError, match="strategy"):
        await saver.aprune(["t"], strategy="oldest")


async def test_from_url_owns_its_client(redis_server: RedisServer) -> None:
    async with AsyncRedisStateSaver.from_url(redis_server.url, prefix="own") as saver:
        stored = await put(saver, "t", {"a": 1}, {"a": 1})
        assert await saver.aget_tuple(stored) is not None
        await saver.adelete_thread("t")
    with RedisStateSaver.from_url(redis_server.url, prefix="own") as sync_saver:
        assert sync_saver.get_tuple(cfg("t")) is None


async def test_from_url_connects_to_a_cluster(redis_cluster: RedisClusterServers) -> None:
    async with AsyncRedisStateSaver.from_url(redis_cluster.url, cluster=True) as saver:
        thread = f"t-{uuid.uuid4()}"
        # Concurrent first calls: the cluster client is initialised once, before them.
        await asyncio.gather(*(put(saver, thread, {"a": i}, {"a": i}, ns=f"{i}") for i in range(8)))
        assert (
            len(
                [
                    t
                    async for t in saver.alist(
                        cfg(thread) | {"configurable": {"thread_id": thread}}
                    )
                ]
            )
            == 8
        )
        await saver.adelete_thread(thread)
    with RedisStateSaver.from_url(redis_cluster.url, cluster=True) as sync_saver:
        assert sync_saver.get_tuple(cfg(thread)) is None


async def test_scripts_are_reloaded_after_script_flush(
    saver_backend: SaverBackend,  # noqa: F811
) -> None:
    saver = saver_backend.make()
    stored = await put(saver, "t", {"a": 1}, {"a": 1})
    await saver_backend.client.script_flush()
    assert await saver.aget_tuple(stored) is not None
    await saver_backend.client.script_flush()
    assert saver_backend.make_sync().get_tuple(stored) is not None


def test_a_missing_langgraph_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.startswith("atomr_redis_state.langgraph")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "langgraph.checkpoint.base", None)
    with pytest.raises(ImportError, match=r"pip install 'atomr-redis-state\[langgraph\]'"):
        importlib.import_module("atomr_redis_state.langgraph")


# Scripts


def lua_files() -> Iterator[Path]:
    return iter(sorted(LUA_DIR.glob("lg_*.lua")))


def test_scripts_are_files_with_a_header_and_no_shebang() -> None:
    names = [path.stem for path in lua_files()]
    assert sorted(names) == sorted(["lg_common", *(f"lg_{n}" for n in scripts.NAMES)])
    for path in lua_files():
        text = path.read_text()
        header = text.split("\n\n")[0] if path.stem == "lg_common" else text.split("\nlocal")[0]
        assert text.startswith(f"-- {path.stem}:"), path.name
        assert "#!" not in text, path.name
        if path.stem != "lg_common":
            assert "KEYS" in header, path.name
            assert "ARGV" in header, path.name
            assert "no write happens before" in header.replace("\n-- ", " "), path.name
    for name in scripts.NAMES:
        assert "#!" not in scripts.source(name)


def test_scripts_use_no_command_newer_than_redis_7_0() -> None:
    newer = ["HEXPIRE", "HPEXPIRE", "HSETEX", "HGETEX", "HGETDEL", "HTTL", "HPERSIST"]
    for path in lua_files():
        text = path.read_text().upper()
        assert not [c for c in newer if f"'{c}'" in text], path.name


# The direct connection path of the async saver


async def test_a_call_on_a_killed_connection_is_sent_again(redis_server: RedisServer) -> None:
    client = Redis.from_url(redis_server.url, client_name="lg-killed")
    saver = AsyncRedisStateSaver(client, prefix=f"k{uuid.uuid4().hex[:8]}")
    stored = await put(saver, "t", {"a": 1}, {"a": 1})
    admin = Redis.from_url(redis_server.url)
    for entry in await admin.client_list():
        if entry.get("name") == "lg-killed":
            await admin.client_kill_filter(_id=entry["id"])
    got = await saver.aget_tuple(stored)
    assert got is not None
    assert got.checkpoint["channel_values"] == {"a": 1}
    await saver.adelete_thread("t")
    await admin.aclose()
    await client.aclose()


async def test_a_cancelled_call_leaves_no_reply_behind_for_the_next(
    redis_server: RedisServer,
) -> None:
    client = Redis.from_url(redis_server.url, max_connections=1)
    saver = AsyncRedisStateSaver(client, prefix=f"c{uuid.uuid4().hex[:8]}")
    first = await put(saver, "t", {"a": "first"}, {"a": 1})
    second = await put(saver, "u", {"a": "second"}, {"a": 1})
    for _ in range(3):
        call = asyncio.ensure_future(saver.aget_tuple(first))
        await asyncio.sleep(0)
        call.cancel()
        got = await saver.aget_tuple(second)
        assert got is not None
        assert got.checkpoint["channel_values"] == {"a": "second"}
    await saver.aprune(["t", "u"], strategy="delete")
    await client.aclose()


class ConnectionsSeen(Connection):
    """Records which connections carry writes, and how many calls each write holds."""

    used: ClassVar[set[int]] = set()
    calls_per_write: ClassVar[list[int]] = []

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if b"EVALSHA" in command[0][:32]:  # not redis-py's own commands (HELLO on connect)
            ConnectionsSeen.used.add(id(self))
            ConnectionsSeen.calls_per_write.append(len(command))
        await super().send_packed_command(command, check_health)


async def test_a_burst_of_calls_leaves_in_few_batches_on_at_most_two_connections(
    redis_server: RedisServer,
) -> None:
    client = Redis.from_url(redis_server.url, connection_class=ConnectionsSeen)
    saver = AsyncRedisStateSaver(client, prefix=f"b{uuid.uuid4().hex[:8]}")
    await put(saver, "warm", {"a": 0}, {"a": 0})  # loads the script
    ConnectionsSeen.used.clear()
    ConnectionsSeen.calls_per_write.clear()
    stored = await asyncio.gather(*(put(saver, f"t{i}", {"a": i}, {"a": i}) for i in range(300)))
    assert len(ConnectionsSeen.used) <= 2
    assert sum(ConnectionsSeen.calls_per_write) == 300  # each call sent once
    assert len(ConnectionsSeen.calls_per_write) <= 300 // 128 + 3
    got = await asyncio.gather(*(saver.aget_tuple(config) for config in stored))
    assert [t.checkpoint["channel_values"]["a"] for t in got if t] == list(range(300))
    await saver.aprune([f"t{i}" for i in range(300)] + ["warm"], strategy="delete")
    await client.aclose()


async def test_a_burst_of_calls_after_a_script_flush_loads_the_script_once(
    redis_server: RedisServer,
) -> None:
    client = Redis.from_url(redis_server.url, max_connections=4)
    saver = AsyncRedisStateSaver(client, prefix=f"f{uuid.uuid4().hex[:8]}")
    stored = await put(saver, "t", {"a": 1}, {"a": 1})
    admin = Redis.from_url(redis_server.url)
    await admin.script_flush()
    await admin.config_resetstat()
    got = await asyncio.gather(*(saver.aget_tuple(stored) for _ in range(200)))
    assert all(t is not None and t.checkpoint["channel_values"] == {"a": 1} for t in got)
    loads = (await admin.info("commandstats")).get("cmdstat_script|load", {"calls": 0})
    assert loads["calls"] == 1
    await saver.adelete_thread("t")
    await admin.aclose()
    await client.aclose()


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("socket_timeout", [None, 5.0])
async def test_replies_are_read_right_on_either_protocol_with_or_without_a_timeout(
    redis_server: RedisServer, protocol: int, socket_timeout: float | None
) -> None:
    client = Redis.from_url(redis_server.url, protocol=protocol, socket_timeout=socket_timeout)
    saver = AsyncRedisStateSaver(client, prefix=f"p{uuid.uuid4().hex[:8]}")
    stored = await asyncio.gather(
        *(put(saver, "t", {"a": i}, {"a": i}, ns=f"{i}") for i in range(9))
    )
    await saver.aput_writes(stored[0], [("a", "w"), (ERROR, ValueError("x"))], "task")
    got = await asyncio.gather(*(saver.aget_tuple(config) for config in stored))
    assert [t.checkpoint["channel_values"]["a"] for t in got if t] == list(range(9))
    assert got[0] is not None
    assert [(c, v) for _, c, v in got[0].pending_writes or [] if c == "a"] == [("a", "w")]
    assert await saver.aget_tuple(cfg("t", "missing")) is None
    await saver.adelete_thread("t")
    await client.aclose()


async def test_a_batch_past_the_socket_timeout_fails_typed_and_the_saver_recovers(
    redis_server: RedisServer,
) -> None:
    client = Redis.from_url(redis_server.url, socket_timeout=0.3)
    saver = AsyncRedisStateSaver(client, prefix=f"s{uuid.uuid4().hex[:8]}")
    stored = await put(saver, "t", {"a": 1}, {"a": 1})
    admin = Redis.from_url(redis_server.url)
    await admin.client_pause(1500)  # every client waits 1.5 s: longer than two attempts
    with pytest.raises(RedisTimeoutError):
        await saver.aget_tuple(stored)
    await asyncio.sleep(1.5)
    got = await saver.aget_tuple(stored)
    assert got is not None
    assert got.checkpoint["channel_values"] == {"a": 1}
    await saver.adelete_thread("t")
    await admin.aclose()
    await client.aclose()


async def test_the_default_serializer_never_pickles_and_strict_mode_works(
    saver_backend: SaverBackend,  # noqa: F811
) -> None:
    assert isinstance(saver_backend.make().serde, JsonPlusSerializer)
    assert saver_backend.make().serde.pickle_fallback is False  # type: ignore[attr-defined]
    strict = saver_backend.make(serde=JsonPlusSerializer(allowed_msgpack_modules=None))
    when = datetime(2030, 1, 2, tzinfo=UTC)
    stored = await put(strict, "t", {"when": when, "ids": {1, 2}}, {"when": 1, "ids": 1})
    got = await strict.aget_tuple(stored)
    assert got is not None
    assert got.checkpoint["channel_values"] == {"when": when, "ids": {1, 2}}
