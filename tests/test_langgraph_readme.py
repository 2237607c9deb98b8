"""The README's LangGraph examples run as written (on the tests' own redis-server)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from atomr_redis_state.testing import RedisServer

README = Path(__file__).resolve().parent.parent / "README.md"


def run_example(heading: str, tmp_path: Path, redis_server: RedisServer) -> list[str]:
    """Run the first Python block after ``heading`` against ``redis_server``; its output lines."""
    text = README.read_text()
    section = text[text.index(heading) :]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found is not None
    example = found.group(1)
    assert "redis://127.0.0.1:6379/0" in example
    script = tmp_path / "example.py"
    script.write_text(example.replace("redis://127.0.0.1:6379/0", redis_server.url))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_langgraph_example_runs_as_written(tmp_path: Path, redis_server: RedisServer) -> None:
    assert run_example("## LangGraph", tmp_path, redis_server) == [
        "{'steps': ['planned']}",
        "[(), ('plan',), ('__start__',)]",
    ]


def test_the_sync_interrupt_and_resume_example_runs_as_written(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    heading = "### Coming from langgraph-checkpoint-redis"
    assert run_example(heading, tmp_path, redis_server) == [
        "approve the draft?",
        "('review',)",
        "['drafted', 'review: yes']",
        "['run-1']",
        "{}",
    ]
