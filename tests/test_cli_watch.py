"""``watch`` on fakeredis, in-process: saves, pauses, forks and deletions as they happen."""

from __future__ import annotations

import json
import threading
import time

import click
from click.testing import Result

from atomr_redis_state import Checkpointer, CheckpointEvent, CheckpointKey, Snapshot
from atomr_redis_state.cli.watch import _json, _line
from tests.test_cli_support import WF, FakeStores, seed


def watching(fake: FakeStores, *args: str) -> tuple[threading.Thread, dict[str, Result]]:
    """Start ``watch`` in a thread; return once it has subscribed."""
    result: dict[str, Result] = {}
    thread = threading.Thread(target=lambda: result.update(done=fake.invoke("watch", *args)))
    thread.start()
    deadline = time.monotonic() + 10
    while not fake.opened and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)  # the subscription is made right after the store is opened
    return thread, result


def test_watch_prints_each_event_of_the_workflow() -> None:
    fake = FakeStores()
    thread, result = watching(fake, WF, "--json", "--count", "8", "--timeout", "20")
    seeded = fake.run(seed)
    thread.join(30)
    done = result["done"]
    assert done.exit_code == 0, done.output
    assert done.stderr == f"watching workflow {WF!r} (Ctrl-C to stop)\n"
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(e["kind"], e["run_id"], e["super_step"]) for e in events] == [
        ("saved", seeded.done, 0),
        ("saved", seeded.done, 1),
        ("saved", seeded.done, 2),
        ("saved", seeded.paused, 0),
        ("saved", seeded.paused, 1),
        ("paused", seeded.paused, 2),
        ("saved", seeded.failed, 0),
        ("saved", seeded.failed, 1),
    ]


def test_watch_of_one_run_ignores_the_others() -> None:
    fake = FakeStores()
    thread, result = watching(fake, WF, "run-b", "--count", "2", "--timeout", "20")

    async def saves(store: Checkpointer) -> None:
        for run in ("run-a", "run-b", "run-a"):
            await store.save(Snapshot(CheckpointKey(WF, run, 0), {}, label=f"at {run}"))
        await store.delete_run(WF, "run-a")
        await store.delete_run(WF, "run-b")

    fake.run(saves)
    thread.join(30)
    done = result["done"]
    assert done.exit_code == 0, done.output
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    assert "saved    run-b  step 0  at run-b" in lines[0]
    assert "deleted  run-b" in lines[1]
    assert "run-a" not in done.stdout


def test_watch_stops_quietly_after_its_timeout() -> None:
    fake = FakeStores()
    done = fake.invoke("watch", WF, "--timeout", "0.2")
    assert done.exit_code == 0
    assert done.stdout == ""


def test_a_gap_is_a_line_of_its_own_and_a_json_object() -> None:
    gap = CheckpointEvent("gap", WF, "", None, "", 1_796_000_000_000)
    line = click.unstyle(_line(gap))
    assert "gap" in line
    assert "events may be missing here: Redis dropped the subscription" in line
    assert json.loads(_json(gap)) == {
        "format_version": 1,
        "kind": "gap",
        "workflow_id": WF,
        "run_id": "",
        "super_step": None,
        "label": "",
        "timestamp_ms": 1_796_000_000_000,
        "source_run_id": None,
    }
