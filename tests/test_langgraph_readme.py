"""The README's LangGraph example runs as written (on the tests' own redis-server)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from atomr_redis_state.testing import RedisServer

README = Path(__file__).resolve().parent.parent / "README.md"


def test_the_langgraph_example_runs_as_written(tmp_path: Path, redis_server: RedisServer) -> None:
    text = README.read_text()
    section = text[text.index("## LangGraph") :]
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
    assert done.stdout.splitlines() == [
        "{'steps': ['planned']}",
        "[(), ('plan',), ('__start__',)]",
    ]
