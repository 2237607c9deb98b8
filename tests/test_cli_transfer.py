"""export and import on fakeredis, in-process: exact round trips, refusals, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atomr_redis_state import Checkpointer, CheckpointKey, Snapshot
from atomr_redis_state.graph.progress import FailureNote
from tests.test_cli_support import WF, FakeStores, Seeded, seed


@pytest.fixture
def fake() -> FakeStores:
    return FakeStores()


@pytest.fixture
def seeded(fake: FakeStores) -> Seeded:
    return fake.run(seed)


def lines(output: str | bytes) -> list[dict[str, object]]:
    text = output.decode() if isinstance(output, bytes) else output
    return [json.loads(line) for line in text.splitlines()]


def test_export_of_a_workflow_is_json_lines_with_every_run_and_fork(
    fake: FakeStores, seeded: Seeded
) -> None:
    done = fake.invoke("export", WF)
    assert done.exit_code == 0, done.output
    rows = lines(done.stdout)
    assert rows[0] == {"format": "atomr-redis-state/checkpoints", "version": 1}
    checkpoints = [r for r in rows if r.get("type") == "checkpoint"]
    runs = list(dict.fromkeys(str(r["run_id"]) for r in checkpoints))
    assert runs == sorted([seeded.done, seeded.fork, seeded.failed, seeded.paused])
    assert [r["super_step"] for r in checkpoints if r["run_id"] == seeded.done] == [0, 1, 2]
    notes = [r for r in rows if r.get("type") == "note"]
    assert [n["run_id"] for n in notes] == [seeded.failed]
    assert FailureNote.decode(notes[0]["note"]) is not None  # type: ignore[arg-type]
    assert "exported 9 checkpoint(s) of 4 run(s)" in done.stderr


def test_export_of_one_run_with_or_without_its_forks(fake: FakeStores, seeded: Seeded) -> None:
    alone = lines(fake.invoke("export", WF, seeded.done).stdout)
    assert {r["run_id"] for r in alone[1:]} == {seeded.done}
    lineage = lines(fake.invoke("export", WF, seeded.done, "--forks").stdout)
    assert {r["run_id"] for r in lineage[1:]} == {seeded.done, seeded.fork}
    assert fake.invoke("export", WF, "--forks").exit_code == 2


def test_round_trip_into_another_prefix_is_byte_for_byte_identical(
    fake: FakeStores, seeded: Seeded, tmp_path: Path
) -> None:
    dump = tmp_path / "wf.jsonl"
    assert fake.invoke("export", WF, "-o", str(dump)).exit_code == 0
    done = fake.invoke("import", str(dump), "--prefix", "copy")
    assert done.exit_code == 0, done.output
    assert "imported 9 checkpoint(s) of 4 run(s)" in done.stderr
    again = fake.invoke("export", WF, "--prefix", "copy")
    assert again.stdout.encode() == dump.read_bytes()
    # The statuses come back too, the failed run's included (its note is restored).
    assert (
        json.loads(fake.invoke("runs", WF, "--json", "--prefix", "copy").stdout)["runs"]
        == json.loads(fake.invoke("runs", WF, "--json").stdout)["runs"]
    )


def test_import_reads_standard_input(fake: FakeStores, seeded: Seeded) -> None:
    exported = fake.invoke("export", WF, seeded.paused).stdout
    done = fake.invoke("import", "-", "--prefix", "copy", input=exported)
    assert done.exit_code == 0, done.output
    assert fake.invoke("export", WF, seeded.paused, "--prefix", "copy").stdout == exported


def test_import_refuses_to_overwrite_unless_told(
    fake: FakeStores, seeded: Seeded, tmp_path: Path
) -> None:
    dump = tmp_path / "run.jsonl"
    fake.invoke("export", WF, seeded.done, "-o", str(dump))

    async def change(store: Checkpointer) -> None:
        await store.save(Snapshot(CheckpointKey(WF, seeded.done, 7), {"extra": True}))

    fake.run(change)
    before = fake.invoke("export", WF, seeded.done).stdout
    refused = fake.invoke("import", str(dump))
    assert refused.exit_code == 1
    assert refused.stderr == (
        f"Error: run {seeded.done!r} of workflow {WF!r} already exists in the target; "
        "pass --overwrite to replace\n"
    )
    assert fake.invoke("export", WF, seeded.done).stdout == before
    done = fake.invoke("import", str(dump), "--overwrite")
    assert done.exit_code == 0, done.output
    # Replaced, not merged: step 7 is gone.
    assert fake.invoke("export", WF, seeded.done).stdout.encode() == dump.read_bytes()


def test_import_with_a_ttl_makes_the_runs_expire(
    fake: FakeStores, seeded: Seeded, tmp_path: Path
) -> None:
    dump = tmp_path / "run.jsonl"
    fake.invoke("export", WF, seeded.done, "-o", str(dump))
    assert fake.invoke("import", str(dump), "--prefix", "eph", "--ttl", "60").exit_code == 0
    assert fake.opened[-1].ttl == 60

    async def ttls(store: Checkpointer) -> list[int]:
        client = store.client  # type: ignore[attr-defined]
        keys = [key async for key in client.scan_iter(match="eph:*")]
        return [await client.pttl(key) for key in keys]

    found = fake.run(ttls)
    assert found
    assert all(0 < ttl <= 120_000 for ttl in found)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty, not an atomr-redis-state export"),
        (b'{"hello": 1}\n', ":1: not an atomr-redis-state export"),
        (b'{"format": "atomr-redis-state/checkpoints", "version": 9}\n', "version 9"),
        (b'{"format": "atomr-redis-state/checkpoints", "version": 1}\nnope\n', ":2: not JSON"),
        (
            b'{"format": "atomr-redis-state/checkpoints", "version": 1}\n{"type": "x"}\n',
            "unknown line type 'x'",
        ),
        (
            b'{"format": "atomr-redis-state/checkpoints", "version": 1}\n'
            b'{"type": "checkpoint", "workflow_id": "w", "run_id": "r", "super_step": -1,'
            b' "label": "", "timestamp_ms": 1, "values": {}, "metadata": {}}\n',
            ":2: bad checkpoint line",
        ),
        (
            b'{"format": "atomr-redis-state/checkpoints", "version": 1}\n'
            b'{"type": "note", "workflow_id": "w", "run_id": "r", "note": 1}\n',
            "a note for a run with no checkpoint before it",
        ),
    ],
)
def test_a_bad_file_is_a_one_line_error_and_nothing_is_written(
    fake: FakeStores, tmp_path: Path, content: bytes, message: str
) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_bytes(content)
    done = fake.invoke("import", str(source))
    assert done.exit_code == 1
    assert done.stderr.count("\n") == 1
    assert message in done.stderr
    assert fake.opened == []  # refused before connecting


def test_a_missing_file_is_a_one_line_error(fake: FakeStores, tmp_path: Path) -> None:
    done = fake.invoke("import", str(tmp_path / "nope.jsonl"))
    assert done.exit_code == 1
    assert done.stderr.startswith("Error: cannot read ")


def test_many_runs_show_a_progress_bar_on_a_terminal(
    fake: FakeStores, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def many(store: Checkpointer) -> None:
        for i in range(30):
            await store.save(Snapshot(CheckpointKey(WF, f"run-{i:03d}", 0), {"i": i}))

    fake.run(many)
    quiet = fake.invoke("export", WF, "-o", str(tmp_path / "quiet.jsonl"))
    assert "exporting runs" not in quiet.stderr  # not a terminal: no bar
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich: treat standard error as a terminal
    dump = tmp_path / "many.jsonl"
    exported = fake.invoke("export", WF, "-o", str(dump))
    assert exported.exit_code == 0
    assert "exporting runs" in exported.stderr
    assert "30/30" in exported.stderr
    assert dump.read_bytes() == (tmp_path / "quiet.jsonl").read_bytes()
    imported = fake.invoke("import", str(dump), "--prefix", "copy")
    assert imported.exit_code == 0
    assert "importing checkpoints" in imported.stderr
