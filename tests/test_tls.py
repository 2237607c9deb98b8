"""The store over TLS: a redis-server that speaks only TLS (``--port 0``), with a CA and a server
certificate made by ``openssl`` for the test session, reached with ``rediss://`` and
``ssl_ca_certs=``. Skipped (with the reason) when the server cannot serve TLS, failed instead
under ATOMR_REQUIRE_REDIS=1."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from atomr_redis_state import (
    AppendList,
    CheckpointKey,
    LeaseHeldError,
    RedisCheckpointer,
    Snapshot,
    StatefulRunner,
    StateSchema,
    Step,
    StepContext,
    StoreConfigurationError,
    Writes,
)
from atomr_redis_state.testing import RedisTlsServer, start_tls_server

WF = "wf-tls"


@pytest.fixture
async def store(redis_tls_server: RedisTlsServer) -> AsyncIterator[RedisCheckpointer]:
    prefix = f"tls-{uuid.uuid4().hex[:8]}"
    async with RedisCheckpointer.from_url(
        redis_tls_server.url, prefix=prefix, ssl_ca_certs=redis_tls_server.ca_certs
    ) as cp:
        yield cp


async def test_the_server_speaks_only_tls(redis_tls_server: RedisTlsServer) -> None:
    plain = Redis.from_url(f"redis://127.0.0.1:{redis_tls_server.port}/0", socket_timeout=2)
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever a plain client sees, it fails
        await plain.ping()
    await plain.aclose()


async def test_save_latest_list_fork_delete_round_trip_over_tls(store: RedisCheckpointer) -> None:
    for step in range(3):
        snapshot = Snapshot(CheckpointKey(WF, "r", step), {"step": step, "text": "é" * step})
        await store.save(snapshot, exclusive=True)
    latest = await store.latest(WF, "r")
    assert latest is not None
    assert latest.key.super_step == 2
    assert latest.values == {"step": 2, "text": "éé"}
    assert [m.super_step for m in await store.list(WF, "r")] == [0, 1, 2]
    loaded = await store.load(CheckpointKey(WF, "r", 1))
    assert loaded is not None
    assert loaded.values == {"step": 1, "text": "é"}

    fork = await store.fork(CheckpointKey(WF, "r", 1), {"text": "edited"})
    forked = await store.latest(WF, fork)
    assert forked is not None
    assert forked.values == {"step": 1, "text": "edited"}
    assert forked.label == "fork-of:r"
    assert sorted(await store.list_runs(WF)) == sorted(["r", fork])

    assert await store.delete_run(WF, "r")
    assert await store.latest(WF, "r") is None
    assert await store.latest(WF, fork) is not None
    assert await store.list_runs(WF) == [fork]


async def test_leases_over_tls(store: RedisCheckpointer) -> None:
    await store.save(Snapshot(CheckpointKey(WF, "leased", 0), {"n": 0}))
    lease = await store.acquire_lease(WF, "leased", "w1", 30)
    with pytest.raises(LeaseHeldError):
        await store.acquire_lease(WF, "leased", "w2", 30)
    await store.save(Snapshot(CheckpointKey(WF, "leased", 1), {"n": 1}), lease=lease)
    renewed = await store.renew_lease(lease)
    assert renewed.token == lease.token
    record = await store.run_record(WF, "leased")
    assert record.lease is not None
    assert record.lease.owner == "w1"
    assert await store.release_lease(renewed, note={"done": True})
    record = await store.run_record(WF, "leased")
    assert record.lease is None
    assert record.note == {"done": True}


async def test_a_runner_completes_a_run_over_tls(store: RedisCheckpointer) -> None:
    schema = StateSchema.builder().add("log", AppendList(), []).build()

    async def plan(ctx: StepContext) -> Writes:
        return {"log": "planned"}

    async def act(ctx: StepContext) -> Writes:
        log = ctx.read("log")
        assert isinstance(log, list)
        return {"log": f"acted on {log[-1]}"}

    steps = [Step("plan", plan), Step("act", act, ["plan"])]
    runner = StatefulRunner(WF, "runner", steps, schema, store)
    outcome = await runner.start({})
    assert outcome.completed
    assert outcome.state["log"] == ["planned", "acted on planned"]
    assert [m.label for m in await store.list(WF, "runner")] == ["init", "layer:0", "layer:1"]
    assert (await runner.status()).state == "completed"


async def test_an_unknown_certificate_authority_is_refused_with_a_typed_error(
    redis_tls_server: RedisTlsServer,
) -> None:
    """Without the CA the handshake fails: a typed StoreConfigurationError, not an ssl error."""
    async with RedisCheckpointer.from_url(
        redis_tls_server.url, prefix="tls-no-ca", socket_timeout=2
    ) as cp:
        with pytest.raises(StoreConfigurationError, match="CERTIFICATE_VERIFY_FAILED"):
            await cp.latest(WF, "r")


def test_a_server_built_without_tls_is_reported_as_such(tmp_path: Path) -> None:
    """What the redis_tls_server fixture turns into a skip (or, under ATOMR_REQUIRE_REDIS=1,
    a failure): a binary that does not know the tls-* options."""
    fake = tmp_path / "redis-server-without-tls"
    fake.write_text(
        "#!/bin/sh\n"
        "echo '*** FATAL CONFIG FILE ERROR (Redis 7.0.15) ***'\n"
        'echo ">>> \'tls-port \\"6380\\"\'"\n'
        "echo 'Bad directive or wrong number of arguments'\n"
        "exit 1\n"
    )
    fake.chmod(0o755)
    with pytest.raises(NotImplementedError, match=r"without TLS|openssl"):
        start_tls_server(tmp_path / "server", binary=str(fake))
