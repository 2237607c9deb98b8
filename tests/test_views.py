"""The view layer: the JSON documents the CLI prints and the web inspector shows."""

from __future__ import annotations

import orjson
import pytest

from atomr_redis_state import Checkpointer, CheckpointKey, RunNotFoundError, Snapshot
from atomr_redis_state.errors import CheckpointNotFoundError, UnknownChannelError
from atomr_redis_state.views import (
    FORMAT_VERSION,
    check_fork_edits,
    diff_view,
    documents,
    escape_json,
    escape_text,
    event_json,
    fork_tree_view,
    history_view,
    run_view,
    runs_view,
    snapshot_view,
    string_diff,
)
from tests.test_cli_support import WF, Seeded, seed


@pytest.fixture
async def seeded(checkpointer: Checkpointer) -> Seeded:
    return await seed(checkpointer)


async def test_every_document_carries_the_format_version_and_its_kind(
    checkpointer: Checkpointer, seeded: Seeded
) -> None:
    documents = [
        await runs_view(checkpointer, WF),
        await run_view(checkpointer, WF, seeded.done),
        await history_view(checkpointer, WF, seeded.done),
        await snapshot_view(checkpointer, WF, seeded.done),
        await diff_view(checkpointer, WF, seeded.done, 0, None, 2),
        await fork_tree_view(checkpointer, WF, seeded.fork),
    ]
    kinds = [d["kind"] for d in documents]
    assert kinds == ["runs", "run", "history", "snapshot", "diff", "fork_tree"]
    for document in documents:
        assert document["format_version"] == FORMAT_VERSION
        assert orjson.loads(orjson.dumps(document)) == document  # plain JSON


async def test_runs_have_state_badges_and_counts(
    checkpointer: Checkpointer, seeded: Seeded
) -> None:
    document = await runs_view(checkpointer, WF)
    by_id = {row["run_id"]: row for row in document["runs"]}
    assert by_id[seeded.done]["badge"] == {"state": "completed", "tone": "success"}
    assert by_id[seeded.failed]["badge"] == {"state": "failed", "tone": "danger"}
    assert by_id[seeded.paused]["detail"] == "paused at second (inside)"
    assert by_id[seeded.fork]["fork_of"] == seeded.done
    assert by_id[seeded.fork]["lineage_root"] == seeded.done
    assert sum(document["counts"].values()) == 4
    assert document["counts"]["completed"] == 1


async def test_a_run_shows_its_pause_payload(checkpointer: Checkpointer, seeded: Seeded) -> None:
    document = await run_view(checkpointer, WF, seeded.paused)
    assert document["state"] == "paused"
    assert document["pause"]["payload"] == {"question": "book it?"}


async def test_history_is_a_timeline_of_the_steps_each_layer_ran(
    checkpointer: Checkpointer, seeded: Seeded
) -> None:
    document = await history_view(checkpointer, WF, seeded.done)
    rows = document["checkpoints"]
    assert [(r["super_step"], r["label"], r["steps"]) for r in rows] == [
        (0, "init", []),
        (1, "layer:0", ["plan"]),
        (2, "layer:1", ["second"]),
    ]
    assert rows[0]["elapsed_ms"] is None
    assert rows[2]["elapsed_ms"] == rows[2]["timestamp_ms"] - rows[1]["timestamp_ms"]
    assert rows[1]["forked_into"] == [seeded.fork]
    assert document["next_before"] is None


async def test_history_pages_back(checkpointer: Checkpointer, seeded: Seeded) -> None:
    page = await history_view(checkpointer, WF, seeded.done, limit=1)
    assert [r["super_step"] for r in page["checkpoints"]] == [2]
    assert page["checkpoints"][0]["steps"] == ["second"]
    assert page["checkpoints"][0]["elapsed_ms"] is not None
    assert page["next_before"] == 2
    earlier = await history_view(checkpointer, WF, seeded.done, before=2, limit=5)
    assert [r["super_step"] for r in earlier["checkpoints"]] == [0, 1]
    assert earlier["next_before"] is None


async def test_history_of_a_fork_marks_where_it_came_from(
    checkpointer: Checkpointer, seeded: Seeded
) -> None:
    document = await history_view(checkpointer, WF, seeded.fork)
    first = document["checkpoints"][0]
    assert (first["super_step"], first["fork_of"], first["steps"]) == (1, seeded.done, [])
    assert document["fork"] is True


async def test_history_of_an_unknown_run_is_a_typed_error(checkpointer: Checkpointer) -> None:
    with pytest.raises(RunNotFoundError):
        await history_view(checkpointer, WF, "run-nope")


async def test_a_missing_step_names_the_steps_the_run_has(
    checkpointer: Checkpointer, seeded: Seeded
) -> None:
    with pytest.raises(CheckpointNotFoundError, match=r"has no super-step 9 \(it has 0, 1, 2\)"):
        await snapshot_view(checkpointer, WF, seeded.done, 9)


async def test_a_snapshot_is_the_state_at_a_step(
    checkpointer: Checkpointer, seeded: Seeded
) -> None:
    document = await snapshot_view(checkpointer, WF, seeded.done, 1)
    assert document["super_step"] == 1
    assert document["values"]["plan"] == {"goal": "trip", "days": 3, "stops": ["Lisbon"]}
    assert "runner" in document["metadata"]


async def test_a_diff_across_a_run_and_its_fork(checkpointer: Checkpointer, seeded: Seeded) -> None:
    document = await diff_view(checkpointer, WF, seeded.done, 1, seeded.fork, None)
    assert document["from"]["run_id"] == seeded.done
    assert document["to"]["run_id"] == seeded.fork
    assert document["changes"] == [
        {"kind": "changed", "path": ["plan", "days"], "old": 3, "new": 5},
        {"kind": "removed", "path": ["plan", "stops"], "old": ["Lisbon"]},
    ]


async def test_a_diff_of_a_megabyte_string_shows_its_last_character_changed(
    checkpointer: Checkpointer,
) -> None:
    big = "x" * 1_000_000
    await checkpointer.save(Snapshot(CheckpointKey(WF, "run-big", 0), {"text": big + "a"}))
    await checkpointer.save(Snapshot(CheckpointKey(WF, "run-big", 1), {"text": big + "b"}))
    document = await diff_view(checkpointer, WF, "run-big", 0, None, 1)
    [change] = document["changes"]
    region = change["string"]
    assert (region["start"], region["old"], region["new"]) == (1_000_000, "a", "b")
    assert region["before"] == "x" * 40
    assert region["after"] == ""


def test_a_string_diff_keeps_the_shared_text_out_of_the_region() -> None:
    region = string_diff("the cat sat", "the dog sat")
    assert (region["before"], region["old"], region["new"], region["after"]) == (
        "the ",
        "cat",
        "dog",
        " sat",
    )
    assert (region["start"], region["old_stop"], region["new_stop"]) == (4, 7, 7)


def test_a_string_diff_cuts_long_regions_and_counts_the_rest() -> None:
    region = string_diff("a" * 1000, "b" * 1000, limit=10)
    assert region["old"] == "a" * 10
    assert region["old_cut"] == 990
    assert region["new_cut"] == 990


async def test_the_fork_tree_draws_the_lineage(checkpointer: Checkpointer, seeded: Seeded) -> None:
    grandchild = await checkpointer.fork(CheckpointKey(WF, seeded.fork, 1))
    document = await fork_tree_view(checkpointer, WF, grandchild)
    nodes = {node["run_id"]: node for node in document["nodes"]}
    assert document["root"] == seeded.done
    assert document["nodes"][0]["run_id"] == seeded.done
    assert nodes[seeded.done]["children"] == [seeded.fork]
    assert (nodes[seeded.fork]["parent"], nodes[seeded.fork]["from_step"]) == (seeded.done, 1)
    assert nodes[seeded.fork]["children"] == [grandchild]
    assert nodes[grandchild]["parent"] == seeded.fork
    assert nodes[grandchild]["current"] is True
    assert nodes[seeded.done]["current"] is False


async def test_the_fork_tree_of_an_unknown_run_is_a_typed_error(
    checkpointer: Checkpointer,
) -> None:
    with pytest.raises(RunNotFoundError):
        await fork_tree_view(checkpointer, WF, "run-nope")


async def test_an_event_is_versioned(checkpointer: Checkpointer) -> None:
    async with checkpointer.watch(WF) as events:
        await checkpointer.save(Snapshot(CheckpointKey(WF, "run-e", 0), {}, label="init"))
        async for event in events:
            document = event_json(event)
            break
    assert document["format_version"] == FORMAT_VERSION
    assert (document["kind"], document["run_id"], document["label"]) == ("saved", "run-e", "init")


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("run-\u202eevil", "run-\\u202eevil"),
        ("a\x1b[31mred", "a\\x1b[31mred"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("line\nbreak", "line\\x0abreak"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("caf\u00e9 \u65e5\u672c", "caf\u00e9 \u65e5\u672c"),
    ],
)
def test_text_from_the_store_is_escaped(raw: str, shown: str) -> None:
    assert escape_text(raw) == shown


def test_escaped_json_is_the_same_json() -> None:
    document = {"run": "run-\u202e\u2066x\U000e0041", "n": "a\nb"}
    text = escape_json(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
    assert "\u202e" not in text
    assert "\U000e0041" not in text
    assert orjson.loads(text) == document


def test_fork_edits_must_name_channels_the_checkpoint_has() -> None:
    source = Snapshot(CheckpointKey(WF, "r", 0), {"plan": None, "messages": []})
    check_fork_edits(source, ["plan"])
    with pytest.raises(UnknownChannelError, match=r"'plna'.*checkpoint to fork has: 'messages'"):
        check_fork_edits(source, ["plan", "plna"])
    check_fork_edits(Snapshot(CheckpointKey(WF, "r", 0), {}), ["anything"])


async def test_history_reads_the_steps_of_the_newest_checkpoints_only(
    checkpointer: Checkpointer, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(documents, "STEPS_READ_LIMIT", 1)
    rows = (await history_view(checkpointer, WF, seeded.done))["checkpoints"]
    assert [r["steps"] for r in rows] == [None, None, ["second"]]
    monkeypatch.setattr(documents, "STEPS_READ_LIMIT", 2)
    rows = (await history_view(checkpointer, WF, seeded.done))["checkpoints"]
    assert [r["steps"] for r in rows] == [None, ["plan"], ["second"]]
