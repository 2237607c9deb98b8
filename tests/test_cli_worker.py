"""``atomr-redis-state worker`` as a real process on a real Redis: runs submitted runs, stops
gracefully on SIGTERM, and a SIGKILLed worker's run is taken over within a second of its lease."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from atomr_redis_state import AppendList, Checkpointer, StateSchema, Step, StepContext, Writes
from atomr_redis_state.fleet import Fleet, Workflow
from atomr_redis_state.testing import RedisServer
from tests.test_cli_support import CLI, run_on, store_args, unique_prefix

WF = "wf-cli-pool"

MODULE = textwrap.dedent(
    '''
    """Workflows for the worker command's tests: each step appends "<run> <step>" to a file."""
    import asyncio
    import os

    from atomr_redis_state import AppendList, StateSchema, Step
    from atomr_redis_state.fleet import Registry, Workflow

    SCHEMA = StateSchema.builder().add("log", AppendList(), []).build()
    SLOW = float(os.environ.get("SLOW_STEP", "0"))


    def record(ctx):
        with open(os.environ["EFFECTS_FILE"], "a") as effects:
            effects.write(f"{ctx.run_id} {ctx.step}\\n")


    async def a(ctx):
        await asyncio.sleep(SLOW)
        record(ctx)
        return {"log": "a"}


    async def b(ctx):
        record(ctx)
        return {"log": "b"}


    workflows = Registry([Workflow("wf-cli-pool", [Step("a", a), Step("b", b, ["a"])], SCHEMA)])
    '''
)


async def _unused(ctx: StepContext) -> Writes:  # the client's copy of the workflow's shape
    return None


CLIENT_WORKFLOW = Workflow(
    WF,
    [Step("a", _unused), Step("b", _unused, ["a"])],
    StateSchema.builder().add("log", AppendList(), []).build(),
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pool_workflows.py").write_text(MODULE)
    return tmp_path


def start_worker(
    project: Path, url: str, prefix: str, *args: str, slow: float = 0
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "EFFECTS_FILE": str(project / "effects.txt"),
        "SLOW_STEP": str(slow),
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(
        [*CLI, "worker", "pool_workflows:workflows", *store_args(url, prefix), *args],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def effects(project: Path) -> Counter[str]:
    path = project / "effects.txt"
    return Counter(path.read_text().splitlines()) if path.exists() else Counter()


def submit(url: str, prefix: str, *run_ids: str) -> None:
    async def work(store: Checkpointer) -> None:
        fleet = Fleet(store, CLIENT_WORKFLOW)
        for run_id in run_ids:
            await fleet.submit(CLIENT_WORKFLOW, run_id=run_id)

    run_on(url, prefix, work)


def state(url: str, prefix: str, run_id: str) -> str:
    async def work(store: Checkpointer) -> str:
        return (await Fleet(store).status(WF, run_id)).state

    return run_on(url, prefix, work)


def wait_for_output(process: subprocess.Popen[bytes], text: bytes, timeout: float) -> bytes:
    """Read the worker's log until ``text`` appears."""
    assert process.stderr is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline, f"no {text!r} in the worker's log: {seen.decode()}"
        line = process.stderr.readline()
        assert line, f"the worker exited: {seen.decode()}"
        seen += line
    return seen


def test_a_burst_worker_runs_every_submitted_run_once(
    redis_server: RedisServer, project: Path
) -> None:
    prefix = unique_prefix()
    runs = [f"r{i}" for i in range(6)]
    submit(redis_server.url, prefix, *runs)
    worker = start_worker(project, redis_server.url, prefix, "--burst", "--concurrency", "3")
    _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr.decode()
    assert effects(project) == Counter({f"{run} {step}": 1 for run in runs for step in "ab"})
    assert all(state(redis_server.url, prefix, run) == "completed" for run in runs)
    log = stderr.decode()
    assert "claimed run r0 of wf-cli-pool" in log
    assert "run r0 of wf-cli-pool completed" in log


def test_sigterm_lets_the_layer_finish_and_releases_the_run(
    redis_server: RedisServer, project: Path
) -> None:
    prefix = unique_prefix()
    submit(redis_server.url, prefix, "slow")
    worker = start_worker(project, redis_server.url, prefix, slow=1.0)
    wait_for_output(worker, b"claimed run slow", 30)
    worker.send_signal(signal.SIGTERM)
    _, rest = worker.communicate(timeout=30)
    assert worker.returncode == 0, rest.decode()
    assert b"released to the queue" in rest
    assert effects(project) == Counter({"slow a": 1})  # the layer finished, and was saved
    assert state(redis_server.url, prefix, "slow") == "queued"
    again = start_worker(project, redis_server.url, prefix, "--burst")
    again.communicate(timeout=60)
    assert effects(project) == Counter({"slow a": 1, "slow b": 1})
    assert state(redis_server.url, prefix, "slow") == "completed"


def test_a_killed_workers_run_is_taken_over_within_a_second_of_its_lease(
    redis_server: RedisServer, project: Path
) -> None:
    prefix = unique_prefix()
    lease_ttl = 2.0
    submit(redis_server.url, prefix, "victim")
    first = start_worker(project, redis_server.url, prefix, "--lease-ttl", str(lease_ttl), slow=30)
    second = None
    try:
        wait_for_output(first, b"claimed run victim", 30)
        second = start_worker(project, redis_server.url, prefix, "--lease-ttl", str(lease_ttl))
        wait_for_output(second, b"started", 30)
        first.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_for_output(second, b"claimed run victim", lease_ttl + 10)
        latency = time.monotonic() - killed
        assert latency <= lease_ttl + 1.0, latency
    finally:
        first.kill()
        first.communicate()
        if second is not None:
            second.send_signal(signal.SIGINT)
            second.communicate(timeout=60)


def test_a_bad_target_is_a_one_line_error(redis_server: RedisServer, project: Path) -> None:
    for target, message in (
        ("pool_workflows", b"expected package.module:attribute"),
        ("pool_workflows:nope", b"has no attribute 'nope'"),
        ("no_such_module_x:workflows", b"cannot import 'no_such_module_x'"),
    ):
        done = subprocess.run(
            [*CLI, "worker", target, *store_args(redis_server.url, unique_prefix())],
            cwd=project,
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 1
        assert message in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
