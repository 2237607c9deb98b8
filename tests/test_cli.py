"""The ``atomr-redis-state`` command line, run as a subprocess like a user would."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from atomr_redis_state.testing import RedisClusterServers, RedisServer, free_port

CLI = [sys.executable, "-m", "atomr_redis_state.cli"]
IDS_AND_TIMES = re.compile(r"run-[0-9a-f-]+(~fork-[0-9a-f]*)?|\d\d:\d\d:\d\d\.\d{3}")


def cli(
    *args: str, timeout: float = 30, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    given = env or {}
    environment = {**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "100", **given}
    for name in ("ATOMR_REDIS_URL", "ATOMR_PREFIX", "ATOMR_CLUSTER"):
        if name not in given:
            environment.pop(name, None)
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env=environment, check=False
    )


def normalised(output: str) -> str:
    return IDS_AND_TIMES.sub("<id-or-time>", output)


def flat(output: str) -> str:
    """The output with every run of whitespace as one space, so line wrapping does not matter."""
    return " ".join(output.split())


def test_demo_runs_end_to_end_on_the_embedded_fakeredis() -> None:
    done = cli("demo")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = flat(done.stdout)
    assert "store: in-process fakeredis" in out
    assert "worker-1 crashed: worker-1 died while calling find_hotels" in out
    assert "status: failed at super-step 1 (layer:0); failed step: find_hotels" in out
    assert "paused at 'approve' (inside)" in out
    assert "completed: Booked" in out
    assert "Total EUR 1420." in out
    assert "Total EUR 1150." in out
    # The tool calls that finished before the crash are kept: only find_hotels runs again.
    assert "who ran what: plan@worker-1, search_flights@worker-1, find_hotels@worker-2" in out


def test_demo_shows_each_super_step_as_it_is_checkpointed() -> None:
    out = cli("demo").stdout
    saved = re.findall(r"checkpoint\s+super-step (\d+)\s+(\S+)\s+by (\S+)", out)
    assert saved == [
        ("0", "init", "worker-1"),
        ("1", "layer:0", "worker-1"),
        ("2", "layer:1", "worker-2"),
        ("3", "interrupt:approve", "worker-2"),
        ("4", "layer:2", "worker-3"),
        ("5", "layer:3", "worker-3"),
        ("3", "interrupt:approve", "worker-2"),
        ("4", "layer:2", "worker-2"),
        ("5", "layer:3", "worker-2"),
    ]


def test_demo_prints_the_history_of_the_run_and_its_fork_as_tables() -> None:
    out = cli("demo").stdout
    history = out[out.index("5. run history") :]
    assert "original run: run-" in history
    assert "fork: run-" in history
    for label in ("init", "layer:0", "layer:1", "interrupt:approve", "layer:2", "layer:3"):
        assert f" {label} " in history
    assert "fork-of:run-" in history


def test_demo_output_is_the_same_every_time_apart_from_ids_and_times() -> None:
    first, second = cli("demo"), cli("demo")
    assert normalised(first.stdout) == normalised(second.stdout)


def test_demo_finishes_in_under_five_seconds() -> None:
    started = time.monotonic()
    assert cli("demo").returncode == 0
    assert time.monotonic() - started < 5


async def test_demo_runs_on_a_real_redis_server_under_a_prefix_of_its_own(
    redis_server: RedisServer,
) -> None:
    done = cli("demo", "--redis-url", redis_server.url, "--ttl", "120")
    assert done.returncode == 0, done.stderr
    assert "Total EUR 1150." in flat(done.stdout)
    found = re.search(r"key prefix '(atomr-demo-[0-9a-f]+)', ttl 120 s", done.stdout)
    assert found is not None
    client = Redis.from_url(redis_server.url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{found.group(1)}:*")]
        assert keys
        ttls = [await client.pttl(key) for key in keys]
        assert all(0 < ttl <= 240_000 for ttl in ttls)
    finally:
        await client.aclose()


def inspection_commands(output: str) -> list[list[str]]:
    """The commands the demo prints to inspect what it wrote, as argument lists."""
    lines = [line.strip() for line in output.splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("atomr-redis-state ")]


def test_demo_under_a_given_prefix_prints_commands_that_inspect_what_it_wrote(
    redis_server: RedisServer,
) -> None:
    done = cli("demo", "--redis-url", redis_server.url, "--prefix", "demo-here", timeout=60)
    assert done.returncode == 0, done.stderr
    commands = inspection_commands(done.stdout)
    assert [c[0] for c in commands] == ["runs", "history", "show", "diff", "watch"]
    run_id = commands[1][2]
    runs = cli(*commands[0], "--json")
    assert runs.returncode == 0, runs.stderr
    listed = [row["run_id"] for row in json.loads(runs.stdout)["runs"]]
    assert run_id in listed
    assert "--prefix demo-here" in done.stdout
    diff = cli(*commands[3], "--json")
    assert diff.returncode == 0, diff.stderr


def test_demo_reads_the_store_options_from_the_environment(redis_server: RedisServer) -> None:
    env = {"ATOMR_REDIS_URL": redis_server.url, "ATOMR_PREFIX": "demo-env"}
    done = cli("demo", env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"store: {redis_server.url}, key prefix 'demo-env'" in done.stdout
    commands = inspection_commands(done.stdout)
    assert commands[0] == ["runs", "demo-trip-planner"]  # the environment says where
    runs = cli(*commands[0], "--json", env=env)
    assert len(json.loads(runs.stdout)["runs"]) == 2


def test_demo_on_a_cluster(redis_cluster: RedisClusterServers) -> None:
    done = cli("demo", "--redis-url", redis_cluster.url, "--cluster", timeout=90)
    assert done.returncode == 0, done.stderr
    assert "(cluster)" in done.stdout
    assert "Total EUR 1150." in flat(done.stdout)
    assert inspection_commands(done.stdout)[0][-1] == "--cluster"


def test_demo_on_fakeredis_says_its_runs_are_gone_and_how_to_keep_them() -> None:
    out = flat(cli("demo").stdout)
    assert "are gone" in out
    assert "atomr-redis-state demo --store sqlite:///demo.db" in out


def test_demo_on_a_sqlite_file_leaves_runs_to_inspect_with_the_same_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    done = cli("demo", "--store", url)
    assert done.returncode == 0, done.stderr
    assert f"store: {url}, ttl" in flat(done.stdout)
    inspect = [line.split() for line in done.stdout.splitlines() if "atomr-redis-state" in line]
    history = next(shlex.split(" ".join(line)) for line in inspect if "history" in line)
    assert history[-2:] == ["--redis-url", url]
    shown = cli(*history[1:])
    assert shown.returncode == 0, shown.stderr
    assert "layer:3" in shown.stdout
    assert cli("workflows", "--redis-url", url).stdout.split() == ["demo-trip-planner"]


def test_two_demos_on_one_server_do_not_share_keys(redis_server: RedisServer) -> None:
    prefixes = {
        re.findall(r"key prefix '([^']+)'", cli("demo", "--redis-url", redis_server.url).stdout)[0]
        for _ in range(2)
    }
    assert len(prefixes) == 2


def test_an_unreachable_redis_is_a_one_line_error() -> None:
    done = cli("demo", "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("Error: cannot reach Redis at redis://127.0.0.1:")


def test_a_password_in_the_url_is_not_printed() -> None:
    done = cli("demo", "--redis-url", f"redis://user:s3cret@127.0.0.1:{free_port()}/0")
    assert done.returncode == 1
    assert "s3cret" not in done.stderr
    assert "redis://user:***@127.0.0.1:" in done.stderr


def test_a_malformed_url_is_a_one_line_error() -> None:
    done = cli("demo", "--redis-url", "http://example.invalid")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("ttl", ["0", "-5", "soon"])
def test_a_bad_ttl_is_a_usage_error(ttl: str) -> None:
    done = cli("demo", "--ttl", ttl)
    assert done.returncode == 2
    assert "Invalid value for '--ttl'" in done.stderr


def test_demo_help_describes_every_option() -> None:
    done = cli("demo", "--help")
    assert done.returncode == 0
    out = flat(done.stdout)
    assert "Usage: atomr-redis-state demo [OPTIONS]" in out
    assert "--redis-url, --store URL" in out
    assert "--ttl SECONDS" in out
    assert "[default: 3600; x>0]" in out
    assert "instead of an in-process fakeredis" in out
    assert "a worker crash" in out


def test_top_level_help_lists_the_demo_command() -> None:
    done = cli("--help")
    assert done.returncode == 0
    assert re.search(r"^\s+demo\s+Run a small agent workflow", done.stdout, re.MULTILINE)


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).with_name("atomr-redis-state")
    done = subprocess.run([script, "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    assert "demo" in done.stdout


def test_missing_cli_dependencies_print_an_install_hint() -> None:
    hide_rich = (
        "import sys; sys.modules['rich'] = None; "
        "from atomr_redis_state.cli import main; main(['demo'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", hide_rich], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert done.stderr == (
        "atomr-redis-state: the command line needs rich: pip install 'atomr-redis-state[cli]'\n"
    )
