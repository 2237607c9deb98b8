"""The fleet commands: ``workers`` (live workers, from their heartbeats) and ``queue`` (the depth
of each workflow's ready queue), on fakeredis in-process."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from atomr_redis_state import JSON, Checkpointer, CheckpointKey, Snapshot
from atomr_redis_state.fleet.health import liveness
from atomr_redis_state.testing import RedisServer
from tests.test_cli_support import CLI, FakeStores, command, flat, store_args, unique_prefix

WF, OTHER = "wf-fleet-cli", "wf-other"


@pytest.fixture
def stores() -> FakeStores:
    return FakeStores()


def beat(
    worker_id: str, runs: list[str], **info: JSON
) -> Callable[[Checkpointer], Awaitable[None]]:
    async def work(store: Checkpointer) -> None:
        said: dict[str, JSON] = {
            "host": "pod-a",
            "pid": 41,
            "workflows": [WF, OTHER],
            "concurrency": 4,
            "stopping": False,
            "runs": [{"workflow_id": WF, "run_id": run} for run in runs],
            "beat_at_ms": int(time.time() * 1000) - 1500,
            **info,
        }
        await store.heartbeat(worker_id, said, 30)

    return work


async def fill(store: Checkpointer) -> None:
    """WF: 2 ready, 1 delayed, 1 running; OTHER: nothing."""
    for run in ("r1", "r2", "r3"):
        await store.submit(Snapshot(CheckpointKey(WF, run, 0), {}))
    later = Snapshot(CheckpointKey(WF, "later", 0), {})
    await store.submit(later, not_before=timedelta(hours=1))
    assert await store.claim(WF, "worker-1", 30) is not None


def test_workers_lists_each_live_worker_and_the_runs_it_holds(stores: FakeStores) -> None:
    stores.run(beat("worker-1", ["r1", "r2"]))
    stores.run(beat("worker-2", [], host="pod-b", stopping=True))
    result = stores.invoke("workers")
    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert "2 live worker(s)" in out
    assert "worker-1 pod-a 41" in out
    assert "2 of 4 runs" in out
    assert f"{WF}/r1" in out
    assert f"{WF}/r2" in out
    assert re.search(r"worker-1 .* \d+\.\d s ago", out)  # beat 1.5 s before the command
    assert "worker-2 (stopping) pod-b" in out


def test_workers_json_has_every_field_of_the_heartbeat(stores: FakeStores) -> None:
    stores.run(beat("worker-1", ["r1"]))
    document = json.loads(stores.invoke("workers", "--json").output)
    assert (document["format_version"], document["kind"]) == (1, "workers")
    [worker] = document["workers"]
    assert worker["worker_id"] == "worker-1"
    assert worker["runs"] == [{"workflow_id": WF, "run_id": "r1"}]
    assert worker["workflows"] == [WF, OTHER]
    assert 1.5 <= worker["heartbeat_age_s"] < 60
    assert worker["expires_at_ms"] > worker["heartbeat_at_ms"]


def test_a_worker_that_said_goodbye_is_not_listed(stores: FakeStores) -> None:
    stores.run(beat("worker-1", []))

    async def leave(store: Checkpointer) -> None:
        await store.forget_worker("worker-1")

    stores.run(leave)
    result = stores.invoke("workers")
    assert result.exit_code == 0
    assert "no live workers under prefix 'atomr'" in result.output


def test_queue_counts_the_runs_of_the_named_workflow_by_part(stores: FakeStores) -> None:
    stores.run(fill)
    result = stores.invoke("queue", WF)
    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert "workflow ready delayed running paused failed blocked" in out
    assert f"{WF} 2 1 1 0 0 0" in out


def test_queue_without_a_workflow_shows_those_with_runs_or_workers(stores: FakeStores) -> None:
    stores.run(fill)  # WF has runs
    stores.run(beat("worker-1", [], workflows=[OTHER]))  # OTHER has a worker, no runs
    document = json.loads(stores.invoke("queue", "--json").output)
    parts = ("ready", "delayed", "running", "paused", "failed", "blocked")
    assert document == {
        "format_version": 1,
        "kind": "queues",
        "queues": [
            {"workflow_id": WF, **dict(zip(parts, (2, 1, 1, 0, 0, 0), strict=True))},
            {"workflow_id": OTHER, **dict.fromkeys(parts, 0)},
        ],
    }


def test_queue_without_a_workflow_says_when_there_is_none(stores: FakeStores) -> None:
    result = stores.invoke("queue")
    assert result.exit_code == 0
    assert "no workflows with runs or workers under prefix 'atomr'" in result.output


def test_queue_refuses_a_malformed_workflow_id_in_one_line(stores: FakeStores) -> None:
    result = stores.invoke("queue", "")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1, result.output
    assert "workflow_id" in result.output


def test_the_liveness_probe_finds_a_live_heartbeat_of_this_host(stores: FakeStores) -> None:
    stores.run(beat("worker-1", [], host=socket.gethostname()))
    found = stores.run(lambda store: liveness(store))
    assert found.alive
    assert [w.worker_id for w in found.workers] == ["worker-1"]
    assert stores.run(lambda store: liveness(store, worker_id="worker-1")).alive


def test_the_liveness_probe_fails_without_a_heartbeat_of_this_host(stores: FakeStores) -> None:
    stores.run(beat("worker-1", [], host="another-pod"))
    found = stores.run(lambda store: liveness(store))
    assert not found.alive
    assert found.reason == f"no live heartbeat of a worker on host {socket.gethostname()!r}"
    assert not stores.run(lambda store: liveness(store, worker_id="worker-2")).alive


def test_worker_check_is_a_liveness_probe_of_this_hosts_worker(redis_server: RedisServer) -> None:
    where = store_args(redis_server.url, unique_prefix())
    assert command("worker", "--check", *where).returncode == 1  # no worker yet
    process = subprocess.Popen(
        [*CLI, "worker", "tests.soak_workflow:WORKFLOWS", "--worker-id", "probe-me", *where],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while (probe := command("worker", "--check", *where)).returncode != 0:
            assert process.poll() is None, "the worker exited"
            assert time.monotonic() < deadline, probe.stderr
            time.sleep(0.2)
        assert b"probe-me" in probe.stdout
        assert command("worker", "--check", "--worker-id", "probe-me", *where).returncode == 0
        other = command("worker", "--check", "--worker-id", "someone-else", *where)
        assert other.returncode == 1
        assert other.stderr.decode().strip() == "no live heartbeat of worker 'someone-else'"
        [listed] = json.loads(command("workers", "--json", *where).stdout)["workers"]
        assert (listed["worker_id"], listed["pid"]) == ("probe-me", process.pid)
        assert listed["host"] == socket.gethostname()
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err.decode()
    after = command("worker", "--check", *where)  # a graceful stop says goodbye at once
    assert after.returncode == 1
    assert b"no live heartbeat of a worker on host" in after.stderr


def test_the_worker_command_needs_a_target_unless_it_checks(stores: FakeStores) -> None:
    result = stores.invoke("worker")
    assert result.exit_code == 2
    assert "Missing argument 'MODULE:ATTRIBUTE' (or pass --check)" in result.output
