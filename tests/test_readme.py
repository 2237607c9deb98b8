"""The README's runner example runs as written and prints what its comments say."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_runner_example_runs_as_written(tmp_path: Path) -> None:
    text = README.read_text()
    section = text[text.index("## The runner") :]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None
    script = tmp_path / "example.py"
    script.write_text(found.group(1))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Pause(step='ask', kind='inside'")
    assert lines[1] == "paused"
    assert lines[2] == "True ['planned', 'searched (attempt 1)', 'human said yes', 'answered']"


def test_the_security_section_shows_the_acl_the_tests_run_with() -> None:
    from atomr_redis_state.testing import store_acl_line

    text = README.read_text()
    assert store_acl_line("atomr", "secret", "myapp") in text


def test_the_fleet_example_runs_as_written(tmp_path: Path) -> None:
    text = README.read_text()
    section = text[text.index("## Running a fleet") :]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None
    script = tmp_path / "fleet_example.py"
    script.write_text(found.group(1))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "QueueDepth(ready=2, delayed=1, running=0, paused=0, failed=0, blocked=0)",
        "cancelled",
        "ticket-1 completed",
        "ticket-2 failed",
        "ticket-3 cancelled",
        "3 {'error': 'RuntimeError', 'message': 'the model API is down'}",
        "queued",
    ]


def test_the_fleet_section_shows_the_worker_commands_options() -> None:
    from atomr_redis_state.cli.worker import worker

    section = README.read_text().split("## Running a fleet")[1].split("\n## ")[0]
    for option in worker.params:
        for name in option.opts:
            if name.startswith("--") and name not in ("--redis-url", "--prefix"):
                assert re.search(rf"(?<![\w-]){name}(?![\w-])", section), name
