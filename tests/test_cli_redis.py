"""The inspection commands on a real Redis (and Redis Cluster), run as a subprocess."""

from __future__ import annotations

import functools
import http.server
import json
import pathlib
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from atomr_redis_state import Checkpointer, CheckpointKey, Snapshot, new_run_id
from atomr_redis_state.testing import RedisClusterServers, RedisServer, free_port
from tests.test_cli_support import (
    CLI,
    WF,
    Seeded,
    command,
    flat,
    run_on,
    seed,
    store_args,
    unique_prefix,
)


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


@pytest.fixture
def seeded(redis_server: RedisServer, prefix: str) -> Seeded:
    return run_on(redis_server.url, prefix, seed)


def test_runs_history_show_and_diff(redis_server: RedisServer, prefix: str, seeded: Seeded) -> None:
    where = store_args(redis_server.url, prefix)
    runs = command("runs", WF, *where)
    assert runs.returncode == 0, runs.stderr
    out = flat(runs.stdout)
    assert "run-done completed 2 layer:1" in out
    assert "run-paused paused 2 interrupt:second" in out
    assert "run-failed failed 1 layer:0" in out
    assert runs.stderr == b""
    history = flat(command("history", WF, seeded.done, *where).stdout)
    assert "0 init" in history
    assert f"forked into {seeded.fork}" in history
    show = json.loads(command("show", WF, seeded.paused, "--json", *where).stdout)
    assert show["metadata"]["runner"]["status"] == "paused"
    diff = json.loads(
        command("diff", WF, seeded.done, "1", seeded.fork, "1", "--json", *where).stdout
    )
    assert [c["path"] for c in diff["changes"]] == [["plan", "days"], ["plan", "stops"]]


def test_at_80_columns_through_a_pipe_every_uuid_run_id_stays_whole_on_one_line(
    redis_server: RedisServer, prefix: str
) -> None:
    async def uuid_runs(store: Checkpointer) -> list[str]:
        run = new_run_id()
        await store.save(Snapshot(CheckpointKey(WF, run, 0), {"plan": None}, label="init"))
        fork = await store.fork(CheckpointKey(WF, run, 0))
        return [run, fork, await store.fork(CheckpointKey(WF, fork, 0))]

    run, fork, fork_of_fork = run_on(redis_server.url, prefix, uuid_runs)
    where = store_args(redis_server.url, prefix)
    narrow = {"COLUMNS": "80"}
    runs = command("runs", WF, *where, env=narrow)
    assert runs.returncode == 0, runs.stderr
    lines = runs.stdout.decode().splitlines()
    assert all(len(line.rstrip()) <= 80 for line in lines), lines
    for run_id in (run, fork, fork_of_fork):
        assert run_id in lines
    assert f"{run} idle 0" in flat(runs.stdout)
    assert f"{fork_of_fork} (fork) forked 0" in flat(runs.stdout)
    history = command("history", WF, fork_of_fork, *where, env=narrow).stdout.decode()
    assert f"forked from {fork}" in flat(history)
    assert fork in history.split()
    forked_into = command("history", WF, fork, *where, env=narrow).stdout.decode()
    assert f"forked from {run}" in flat(forked_into)
    assert f"forked into {fork_of_fork}" in flat(forked_into)
    assert fork_of_fork in forked_into.split()


def test_the_environment_names_the_server_and_prefix(
    redis_server: RedisServer, prefix: str, seeded: Seeded
) -> None:
    env = {"ATOMR_REDIS_URL": redis_server.url, "ATOMR_PREFIX": prefix}
    done = command("runs", WF, "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["runs"]) == 4
    # the default prefix is the store's: nothing of this test's runs is there
    env.pop("ATOMR_PREFIX")
    assert seeded.done not in command("runs", WF, env=env).stdout.decode()


def test_fork_and_delete(redis_server: RedisServer, prefix: str, seeded: Seeded) -> None:
    where = store_args(redis_server.url, prefix)
    forked = command("fork", WF, seeded.paused, "1", "--set", "plan=null", "--json", *where)
    assert forked.returncode == 0, forked.stderr
    new_run = json.loads(forked.stdout)["run_id"]
    shown = json.loads(command("show", WF, new_run, "--json", *where).stdout)
    assert shown["values"]["plan"] is None
    refused = command("delete", WF, new_run, *where, input=b"n\n")
    assert refused.returncode == 1
    assert command("show", WF, new_run, *where).returncode == 0
    deleted = command("delete", WF, new_run, "--yes", *where)
    assert deleted.returncode == 0, deleted.stderr
    gone = command("show", WF, new_run, *where)
    assert gone.returncode == 1
    assert gone.stderr.decode().count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", WF, "run-nope"), "has no checkpoint"),
        (("show", WF, "run-done", "42"), "has no super-step 42 (it has 0, 1, 2)"),
        (("history", WF, "run-nope"), "has no checkpoint"),
        (("diff", WF, "run-done", "0", "run-nope", "0"), "run 'run-nope'"),
    ],
)
def test_missing_runs_and_steps_are_one_line_errors(
    redis_server: RedisServer, prefix: str, seeded: Seeded, args: tuple[str, ...], message: str
) -> None:
    done = command(*args, *store_args(redis_server.url, prefix))
    assert done.returncode == 1
    err = done.stderr.decode()
    assert err.count("\n") == 1
    assert err.startswith("Error: ")
    assert message in err
    assert done.stdout == b""


@pytest.mark.parametrize("name", ["runs", "history", "show", "export", "watch"])
def test_an_unreachable_server_is_a_one_line_error(name: str) -> None:
    args = {"runs": [WF], "history": [WF, "r"], "show": [WF, "r"], "export": [WF], "watch": [WF]}
    url = f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
    done = command(name, *args[name], "--redis-url", url)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert err.count("\n") == 1
    assert err.startswith("Error: cannot reach Redis at redis://user:***@127.0.0.1:")
    assert "s3cret" not in err
    assert "Traceback" not in err
    assert "call again" not in err  # write-path advice: a read never says it
    assert "outcome" not in err
    assert "may or may not" not in err


def test_a_malformed_url_is_a_one_line_error() -> None:
    done = command("runs", WF, "--redis-url", "http://example.invalid")
    assert done.returncode == 1
    err = done.stderr.decode()
    assert err.count("\n") == 1
    assert err.startswith("Error: http://example.invalid: ")


def test_cluster_against_a_standalone_server_is_a_one_line_error(
    redis_server: RedisServer,
) -> None:
    done = command("runs", WF, "--redis-url", redis_server.url, "--cluster")
    assert done.returncode == 1
    err = done.stderr.decode()
    assert err.count("\n") == 1
    assert err == (
        f"Error: the server at {redis_server.url} is not a Redis Cluster node: "
        "leave out --cluster\n"
    )


@pytest.mark.parametrize("name", ["runs", "workflows", "history", "show"])
def test_a_cluster_node_without_cluster_says_to_pass_it(
    redis_cluster: RedisClusterServers, name: str
) -> None:
    args = {"runs": [WF], "workflows": [], "history": [WF, "r"], "show": [WF, "r"]}
    done = command(name, *args[name], "--redis-url", redis_cluster.url)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "is a Redis Cluster node: pass --cluster" in err, err
    assert err.count("\n") == 1


def test_rediss_against_a_plain_port_fails_within_seconds_and_says_why(
    redis_server: RedisServer,
) -> None:
    url = f"rediss://127.0.0.1:{redis_server.port}/0"
    started = time.monotonic()
    done = command("runs", WF, "--redis-url", url)
    assert time.monotonic() - started < 12  # was about 20 s: four attempts of 5 s
    assert done.returncode == 1
    err = done.stderr.decode()
    assert err.startswith(f"Error: cannot reach Redis at {url}: ")
    assert "if the server does not use TLS, use redis://" in err


def test_a_port_that_is_not_redis_is_named(tmp_path: pathlib.Path) -> None:
    port = free_port()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        done = command("runs", WF, "--redis-url", f"redis://127.0.0.1:{port}/0")
    finally:
        server.shutdown()
        server.server_close()
    err = done.stderr.decode()
    assert done.returncode == 1
    assert err.startswith(f"Error: the server at redis://127.0.0.1:{port}/0 does not answer")
    assert "is that the Redis port?" in err


def test_verbose_logs_go_to_standard_error(redis_server: RedisServer) -> None:
    done = command("-vv", "runs", WF, "--cluster", "--redis-url", redis_server.url)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "DEBUG atomr_redis_state.cli.connection: command failed" in err
    assert "Traceback" in err  # -vv shows where it failed
    quiet = command("runs", WF, "--redis-url", redis_server.url, "--prefix", unique_prefix())
    assert quiet.stderr == b""


def test_export_import_round_trip_on_redis_is_byte_for_byte(
    redis_server: RedisServer, prefix: str, seeded: Seeded
) -> None:
    exported = command("export", WF, *store_args(redis_server.url, prefix))
    assert exported.returncode == 0, exported.stderr
    target = unique_prefix()
    imported = command("import", "-", *store_args(redis_server.url, target), input=exported.stdout)
    assert imported.returncode == 0, imported.stderr
    again = command("export", WF, *store_args(redis_server.url, target))
    assert again.stdout == exported.stdout
    refused = command("import", "-", *store_args(redis_server.url, target), input=exported.stdout)
    assert refused.returncode == 1
    assert b"pass --overwrite to replace" in refused.stderr
    overwritten = command(
        "import", "-", "--overwrite", *store_args(redis_server.url, target), input=exported.stdout
    )
    assert overwritten.returncode == 0, overwritten.stderr


def test_export_from_redis_imports_into_a_cluster_exactly(
    redis_server: RedisServer, redis_cluster: RedisClusterServers, prefix: str, seeded: Seeded
) -> None:
    exported = command("export", WF, *store_args(redis_server.url, prefix))
    target = unique_prefix()
    on_cluster = (*store_args(redis_cluster.url, target), "--cluster")
    imported = command("import", "-", *on_cluster, input=exported.stdout)
    assert imported.returncode == 0, imported.stderr
    again = command("export", WF, *on_cluster)
    assert again.returncode == 0, again.stderr
    assert again.stdout == exported.stdout
    runs = json.loads(command("runs", WF, "--json", *on_cluster).stdout)
    assert {r["run_id"]: r["state"] for r in runs["runs"]} == {
        seeded.done: "completed",
        seeded.paused: "paused",
        seeded.failed: "failed",
        seeded.fork: "forked",
    }


SAVER = textwrap.dedent(
    """
    import asyncio, sys
    from atomr_redis_state import CheckpointKey, RedisCheckpointer, Snapshot

    async def main(url, prefix):
        async with RedisCheckpointer.from_url(url, prefix=prefix) as store:
            for step in range(2):
                key = CheckpointKey("wf-cli", "run-other", step)
                await store.save(Snapshot(key, {"n": step}, label=f"layer:{step}"))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_watch_sees_saves_made_by_other_processes(redis_server: RedisServer, prefix: str) -> None:
    where = store_args(redis_server.url, prefix)
    watcher = subprocess.Popen(
        [*CLI, "watch", WF, "--json", "--count", "4", "--timeout", "30", *where],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert watcher.stderr is not None
        ready = watcher.stderr.readline()
        assert ready == b"watching workflow 'wf-cli' (Ctrl-C to stop)\n"
        saver = subprocess.run(
            [sys.executable, "-c", SAVER, redis_server.url, prefix], capture_output=True, timeout=30
        )
        assert saver.returncode == 0, saver.stderr
        forked = command("fork", WF, "run-other", "1", "--json", *where)
        assert forked.returncode == 0, forked.stderr
        fork_id = json.loads(forked.stdout)["run_id"]
        assert command("delete", WF, "run-other", "--yes", *where).returncode == 0
        out, err = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
        watcher.wait()
    assert watcher.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["kind"], e["run_id"], e["super_step"]) for e in events] == [
        ("saved", "run-other", 0),
        ("saved", "run-other", 1),
        ("forked", fork_id, 1),
        ("deleted", "run-other", None),
    ]
    assert events[2]["source_run_id"] == "run-other"
    assert events[0]["label"] == "layer:0"


def test_watch_of_one_run_prints_readable_lines(redis_server: RedisServer, prefix: str) -> None:
    where = store_args(redis_server.url, prefix)
    watcher = subprocess.Popen(
        [*CLI, "watch", WF, "run-other", "--count", "2", "--timeout", "30", *where],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert watcher.stderr is not None
        assert b"watching run 'run-other'" in watcher.stderr.readline()

        async def other_run(store: Checkpointer) -> None:
            from atomr_redis_state import CheckpointKey, Snapshot

            await store.save(Snapshot(CheckpointKey(WF, "run-unrelated", 0), {}))

        run_on(redis_server.url, prefix, other_run)
        saver = subprocess.run(
            [sys.executable, "-c", SAVER, redis_server.url, prefix], capture_output=True, timeout=30
        )
        assert saver.returncode == 0, saver.stderr
        out, _ = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
        watcher.wait()
    lines = out.decode().splitlines()
    assert len(lines) == 2
    assert "saved    run-other  step 0  layer:0" in lines[0]
    assert "run-unrelated" not in out.decode()


def test_watch_stops_after_its_timeout(redis_server: RedisServer, prefix: str) -> None:
    done = command("watch", WF, "--timeout", "0.5", *store_args(redis_server.url, prefix))
    assert done.returncode == 0, done.stderr
    assert done.stdout == b""
