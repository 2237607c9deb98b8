"""Least privilege: the store works as a Redis user that has exactly ``store_acl`` (its keys
``~<prefix>:*``, its shard channels ``&<prefix>:*`` and the commands it sends or its scripts
call), never asks for more (the server's ACL LOG stays empty), needs every command it is given,
cannot reach outside its prefix, and fails a call that needs the server clock with a typed
StorePermissionError naming ``+time`` (and nothing written) when the user lacks it.

The whole contract suite also runs as such a user: the ``redis-acl`` backend in conftest.py."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import NoPermissionError

from atomr_redis_state import (
    AtomrStateError,
    CheckpointKey,
    RedisCheckpointer,
    Snapshot,
    StorePermissionError,
)
from atomr_redis_state.store.ids import fork_run_id
from atomr_redis_state.store.redis.keys import bucket_of
from atomr_redis_state.testing import (
    STORE_COMMANDS,
    RedisServer,
    run_as_admin,
    store_acl,
    store_acl_line,
)

WF = "wf-acl"
LUA = Path(__file__).resolve().parent.parent / "lua"
SENT_OUTSIDE_SCRIPTS = {
    "evalsha",  # every script call
    "script|load",  # redis-py's Script after NOSCRIPT
    "hgetall",  # load
    "zrangebylex",  # list_runs: one page of each run-index bucket
    "exists",  # list_runs: which listed runs still exist
    "ssubscribe",  # watch (leaving it closes the connection: no SUNSUBSCRIBE)
}


def lua_commands() -> set[str]:
    """Every command the store's scripts call (the LangGraph saver's lg_* scripts aside)."""
    found: set[str] = set()
    for path in LUA.glob("*.lua"):
        if path.name.startswith("lg_"):
            continue
        text = path.read_text()
        found |= {m.lower() for m in re.findall(r"redis\.p?call\('([A-Za-z]+)'", text)}
    return found


@pytest.fixture
async def admin(redis_acl_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_acl_server.url)
    yield client
    await client.aclose()


class User:
    """A Redis user made with the given ACL, and the stores it connects."""

    def __init__(self, server: RedisServer, acl: list[str], name: str, password: str) -> None:
        self.server, self.name, self.password = server, name, password
        run_as_admin(server.port, acl)
        self.client = Redis(host="127.0.0.1", port=server.port, username=name, password=password)

    def store(self, prefix: str, **options: Any) -> RedisCheckpointer:
        return RedisCheckpointer(self.client, prefix=prefix, **options)

    async def denials(self, admin: Redis) -> list[dict[str, Any]]:
        """The server's ACL LOG entries about this user."""
        entries: list[dict[str, Any]] = await admin.acl_log(count=128)
        return [
            {k: entry[k] for k in ("reason", "context", "object", "count")}
            for entry in entries
            if entry["username"] == self.name
            # redis-py names its connections best-effort (Redis 7.2+); not the store's doing
            and entry["object"] != "client|setinfo"
        ]

    async def aclose(self, admin: Redis) -> None:
        await self.client.aclose()
        await admin.acl_deluser(self.name)


def make_user(server: RedisServer, prefix: str, **acl_options: Any) -> User:
    name, password = f"acl-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    return User(server, store_acl(name, password, prefix, **acl_options), name, password)


async def keys_under(admin: Redis, prefix: str) -> list[bytes]:
    return sorted([key async for key in admin.scan_iter(match=f"{prefix}:*", count=1000)])


def same_bucket_run(run_id: str, avoid: set[str]) -> str:
    """Another run id whose run-index bucket (slot tag) is run_id's."""
    target = bucket_of(WF, run_id)
    for i in range(100_000):
        candidate = f"{run_id}-twin-{i}"
        if bucket_of(WF, candidate) == target and candidate not in avoid:
            return candidate
    raise AssertionError("no twin run found")


async def queue_workload(
    plain: RedisCheckpointer, ephemeral: RedisCheckpointer, attempt: Any
) -> None:
    """Every queue call, down every path of its script (a worker's wake-ups and hint repair)."""
    submitted = Snapshot(CheckpointKey(WF, "q", 0), {"step": 0}, "init")
    await attempt(plain.submit(submitted))
    await attempt(plain.submit(submitted))  # exists: a no-op
    await attempt(ephemeral.submit(Snapshot(CheckpointKey(WF, "qe", 0), {}, "init")))
    try:
        async with plain.wake_ups([WF]) as wake:
            await attempt(wake.wait(at_most=0.05))
            claim = await attempt(plain.claim(WF, "w1", 0.2))
    except AtomrStateError as exc:  # the wake-up subscription itself was refused
        await attempt(_raise(exc))
        claim = await attempt(plain.claim(WF, "w1", 0.2))
    if claim is not None:
        await attempt(plain.finish(claim.lease, "retry", retry_in=0.01, max_attempts=3))
        await asyncio.sleep(0.05)
        claim = await attempt(plain.claim(WF, "w1", 0.2))
    await asyncio.sleep(0.3)  # its lease expires: a takeover
    claim = await attempt(plain.claim(WF, "w2", 30))
    if claim is not None:
        taken = claim.lease.run_id  # "q" taken over, or "qe": whichever bucket came first
        await attempt(plain.finish(claim.lease, "paused"))
        await attempt(plain.resume_run(WF, taken, {"ok": True}))
        claim = await attempt(plain.claim(WF, "w2", 30))
        if claim is not None:
            await attempt(plain.finish(claim.lease, "blocked", reason="changed"))
        await attempt(plain.requeue(WF, taken))
        await attempt(plain.cancel(WF, taken))
    await attempt(plain.queue_depth(WF))
    await attempt(plain.heartbeat("w1", {"runs": []}, 30))
    await attempt(plain.workers())
    await attempt(plain.forget_worker("w1"))
    await attempt(plain.take_permit(WF, "w1/p", 1, 30))
    await attempt(plain.take_permit(WF, "w2/p", 1, 30))  # the cap: refused
    await attempt(plain.renew_permits(WF, ["w1/p"], 30))
    await attempt(plain.drop_permit(WF, "w1/p"))


async def _raise(exc: BaseException) -> None:
    raise exc


async def workload(user: User, admin: Redis, prefix: str) -> list[BaseException]:
    """Every store operation, down every path of every script; returns the errors raised."""
    errors: list[BaseException] = []
    plain = user.store(prefix)
    ephemeral = user.store(prefix, ttl=60)
    short = user.store(prefix, ttl=0.05)
    trimmed = user.store(prefix, keep_last=2)

    async def attempt(call: Any) -> Any:
        try:
            return await call
        except (AtomrStateError, NoPermissionError, TimeoutError) as exc:
            errors.append(exc)
            return None

    def snap(run: str, step: int, **values: Any) -> Snapshot:
        return Snapshot(CheckpointKey(WF, run, step), {"step": step, **values}, label=f"s{step}")

    async def saves_of_a() -> None:
        await attempt(plain.save(snap("a", 0)))  # a new run: index, persist
        first = snap("a", 1)
        await attempt(plain.save(first, exclusive=True))
        await attempt(plain.save(first, exclusive=True))  # its own retry: no conflict
        await attempt(plain.save(snap("a", 1, again=True)))  # an upsert: DEL, HSET

    try:
        try:
            async with plain.watch(WF) as events:
                await saves_of_a()
                try:
                    event = await asyncio.wait_for(anext(aiter(events)), timeout=0.5)
                    assert event.run_id == "a"
                except TimeoutError as exc:
                    errors.append(exc)
        except AtomrStateError as exc:  # the watch itself was refused, before any save
            errors.append(exc)
            await saves_of_a()
        await attempt(plain.load(CheckpointKey(WF, "a", 1)))
        await attempt(plain.latest(WF, "a"))
        await attempt(plain.list(WF, "a", limit=1))
        await attempt(plain.list(WF, "a"))
        # A run saved before the meta hash existed is listed by the script (ZREVRANGEBYSCORE).
        legacy = user.store(prefix)
        await attempt(legacy.save(snap("legacy", 0)))
        await admin.delete(legacy.keys.run(WF, "legacy").meta)
        await attempt(legacy.list(WF, "legacy"))
        for step in range(4):
            await attempt(trimmed.save(snap("trim", step)))  # keep_last: ZCARD, ZRANGE, ...
        for step in range(2):
            await attempt(ephemeral.save(snap("e", step)))  # a ttl: TIME, PEXPIREAT
        await attempt(ephemeral.save(snap("e", 2), hold="forever"))  # hold: PERSIST
        await attempt(ephemeral.save(snap("e", 3)))  # back on the ttl: the index deadline
        fork_id = fork_run_id("a")
        await attempt(ephemeral.fork(CheckpointKey(WF, "a", 1), {"x": 1}, run_id=fork_id))
        await attempt(ephemeral.fork(CheckpointKey(WF, "a", 1), {"x": 1}, run_id=fork_id))
        await attempt(plain.fork(CheckpointKey(WF, "e", 1)))  # no ttl: PERSIST the copy
        # A run that expires, listed in a bucket that does not: list_runs prunes its entry.
        gone = same_bucket_run("a", {"a", "e", "trim"})
        await attempt(short.save(snap(gone, 0)))
        await asyncio.sleep(0.25)
        await attempt(plain.list_runs(WF, limit=2))
        await attempt(plain.list_runs(WF))
        await attempt(plain.list_workflows())  # the registry buckets, then EXISTS
        # Leases.
        lease = await attempt(plain.acquire_lease(WF, "a", "w1", 30))
        await attempt(plain.acquire_lease(WF, "a", "w1", 30))  # the same owner again
        await attempt(plain.acquire_lease(WF, "new", "w1", 30, must_exist=False))
        if lease is not None:
            await attempt(plain.save(snap("a", 2), lease=lease))
            lease = await attempt(plain.renew_lease(lease))
            await attempt(plain.run_record(WF, "a"))
            await attempt(plain.release_lease(lease, note={"why": "done"}))
            lease = await attempt(plain.acquire_lease(WF, "a", "w2", 30))
            if lease is not None:
                await attempt(plain.release_lease(lease))
        await attempt(plain.run_record(WF, "a"))
        # Answers and cancel requests (HSETNX keeps the first request's time).
        latest = await attempt(plain.latest(WF, "a"))
        at = 0 if latest is None else latest.key.super_step
        await attempt(plain.record_answer(WF, "a", "yes", super_step=at))
        await attempt(plain.cancel(WF, "a"))
        await attempt(plain.cancel(WF, "a"))
        await queue_workload(plain, ephemeral, attempt)
        # Scripts flushed (a restart, a failover): redis-py loads them again.
        await admin.script_flush()
        await attempt(plain.latest(WF, "a"))
        await attempt(plain.save(snap("a", 3)))
        await attempt(plain.delete_run(WF, "a"))
        await attempt(plain.delete_run(WF, "a"))
        await attempt(plain.delete_run(WF, "never"))
    except NoPermissionError as exc:  # a refusal the store let through untyped
        errors.append(exc)
    return errors


def test_the_acl_grants_exactly_what_the_store_sends() -> None:
    """Every command a script calls and every one the store sends itself is granted; nothing
    else is. (The next tests show the store needs each and never asks for more.)"""
    assert set(STORE_COMMANDS) == lua_commands() | SENT_OUTSIDE_SCRIPTS
    assert len(STORE_COMMANDS) == len(set(STORE_COMMANDS))


def test_the_acl_line() -> None:
    acl = store_acl("atomr", "secret", "myapp")
    assert acl[:8] == ["ACL", "SETUSER", "atomr", "reset", "on", ">secret", "~myapp:*", "&myapp:*"]
    assert "+time" in acl
    assert "+wait" not in acl
    assert "+wait" in store_acl("atomr", "secret", "myapp", replicas=True)
    assert "+time" not in store_acl("atomr", "secret", "myapp", server_clock=False)
    assert store_acl("u", "p", "a*b")[6:8] == ["~a\\*b:*", "&a\\*b:*"]


async def test_every_operation_works_as_the_least_privileged_user_and_asks_for_nothing_more(
    redis_acl_server: RedisServer, admin: Redis
) -> None:
    prefix = f"acl-{uuid.uuid4().hex[:8]}"
    user = make_user(redis_acl_server, prefix)
    try:
        errors = await workload(user, admin, prefix)
        assert errors == []
        assert await user.denials(admin) == []
        assert await keys_under(admin, prefix)  # it did write, under its prefix
    finally:
        await user.aclose(admin)


@pytest.mark.parametrize("command", STORE_COMMANDS)
async def test_the_store_needs_every_command_it_is_granted(
    redis_acl_server: RedisServer, admin: Redis, command: str
) -> None:
    prefix = f"acl-{uuid.uuid4().hex[:8]}"
    user = make_user(redis_acl_server, prefix)
    run_as_admin(redis_acl_server.port, ["ACL", "SETUSER", user.name, f"-{command}"])
    try:
        errors = await workload(user, admin, prefix)
        denied = await user.denials(admin)
        assert errors or denied, f"the workload ran without +{command}: it is not needed"
        # Whatever failed failed typed: the library's errors (or a watch that saw no event).
        assert all(isinstance(e, AtomrStateError | TimeoutError) for e in errors), errors
    finally:
        await user.aclose(admin)


async def test_the_user_cannot_touch_keys_or_channels_outside_its_prefix(
    redis_acl_server: RedisServer, admin: Redis
) -> None:
    prefix, other = f"acl-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    await admin.set(f"{other}:secret", "x")
    user = make_user(redis_acl_server, prefix)
    try:
        with pytest.raises(NoPermissionError):
            await user.client.get(f"{other}:secret")
        with pytest.raises(NoPermissionError):
            await user.client.set(f"{other}:new", "1")
        with pytest.raises(NoPermissionError):
            await user.client.spublish(f"{other}:channel", "hello")
        with pytest.raises(NoPermissionError):
            await user.client.keys("*")
        with pytest.raises(NoPermissionError):
            await user.client.flushdb()
        # A prefix the user was not given: typed refusals, and nothing written there.
        outsider = user.store(other)
        with pytest.raises(StorePermissionError, match="ACL"):
            await outsider.save(Snapshot(CheckpointKey(WF, "r", 0), {"a": 1}))
        with pytest.raises(StorePermissionError):
            await outsider.latest(WF, "r")
        with pytest.raises(StorePermissionError):
            await outsider.load(CheckpointKey(WF, "r", 0))
        with pytest.raises(StorePermissionError):
            await outsider.acquire_lease(WF, "r", "w1", 30, must_exist=False)
        assert await keys_under(admin, other) == [f"{other}:secret".encode()]
        # Its own prefix is fine.
        mine = user.store(prefix)
        await mine.save(Snapshot(CheckpointKey(WF, "r", 0), {"a": 1}))
        assert await mine.latest(WF, "r") is not None
    finally:
        await user.aclose(admin)
        await admin.delete(f"{other}:secret")


async def test_without_time_calls_that_read_the_server_clock_fail_typed_and_write_nothing(
    redis_acl_server: RedisServer, admin: Redis
) -> None:
    prefix = f"acl-{uuid.uuid4().hex[:8]}"
    source = RedisCheckpointer(admin, prefix=prefix)
    await source.save(Snapshot(CheckpointKey(WF, "src", 0), {"a": 1}))
    before = await keys_under(admin, prefix)
    user = make_user(redis_acl_server, prefix, server_clock=False)
    try:
        timed = user.store(prefix, ttl=60)
        with pytest.raises(StorePermissionError, match=r"\+time"):
            await timed.save(Snapshot(CheckpointKey(WF, "new", 0), {"a": 1}))
        with pytest.raises(StorePermissionError, match=r"\+time"):
            await timed.save(Snapshot(CheckpointKey(WF, "src", 1), {"a": 2}))
        with pytest.raises(StorePermissionError, match=r"\+time"):
            await timed.fork(CheckpointKey(WF, "src", 0), {"a": 3})
        plain = user.store(prefix)
        with pytest.raises(StorePermissionError, match=r"\+time"):
            await plain.acquire_lease(WF, "src", "w1", 30)
        with pytest.raises(StorePermissionError, match=r"\+time"):
            await plain.acquire_lease(WF, "fresh", "w1", 30, must_exist=False)
        with pytest.raises(StorePermissionError, match=r"\+time"):
            await plain.run_record(WF, "src")
        assert await keys_under(admin, prefix) == before  # no half save, fork or lease
        assert [m.super_step for m in await source.list(WF, "src")] == [0]
        assert await source.list_runs(WF) == ["src"]
        # What needs no clock still works without +time.
        await plain.save(Snapshot(CheckpointKey(WF, "src", 1), {"a": 2}))
        assert [m.super_step for m in await plain.list(WF, "src")] == [0, 1]
    finally:
        await user.aclose(admin)


async def test_watch_without_the_channel_permission_fails_typed(
    redis_acl_server: RedisServer, admin: Redis
) -> None:
    """A user without ``&<prefix>:*`` cannot subscribe to the store's event channels: watch()
    must say so with a StorePermissionError (on entering, or at the latest at the first
    event), like every other call, not let redis-py's NoPermissionError through."""
    prefix = f"acl-{uuid.uuid4().hex[:8]}"
    user = make_user(redis_acl_server, prefix)
    run_as_admin(redis_acl_server.port, ["ACL", "SETUSER", user.name, "resetchannels"])
    store = user.store(prefix)
    try:
        with pytest.raises(StorePermissionError):
            async with store.watch(WF) as events:
                await asyncio.wait_for(anext(aiter(events)), timeout=2.0)
    finally:
        await user.aclose(admin)


def test_the_acl_line_for_the_readme() -> None:
    assert store_acl_line("atomr", "secret", "myapp") == (
        "ACL SETUSER atomr reset on >secret ~myapp:* &myapp:* +evalsha +script|load +time "
        "+exists +get +set +del +copy +pexpireat +pexpiretime +persist +hget +hmget +hgetall "
        "+hset +hsetnx +hdel +zadd +zrem +zcard +zscore +zrange +zrevrange +zrevrangebyscore "
        "+zremrangebyrank +spublish +hincrby +zcount +zremrangebyscore +zrangebylex +ssubscribe"
    )
    assert store_acl_line("atomr", "secret", "myapp", replicas=True).endswith(" +wait")
