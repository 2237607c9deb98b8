"""Ids are arbitrary strings that never collide; bad arguments fail clearly, writing nothing."""

from __future__ import annotations

from typing import Any

import pytest

from atomr_redis_state import Checkpointer, CheckpointKey, Snapshot
from atomr_redis_state.store.validation import MAX_TIMESTAMP_MS

ODD_IDS = [
    "a:b",
    "{tag}",
    "}{",
    "{}",
    "a/b",
    "100%",
    "%3A",
    "with space",
    "\u4e2d\u6587",
    "~fork-x",
]


@pytest.mark.parametrize("odd", ODD_IDS)
async def test_odd_ids_work_everywhere(checkpointer: Checkpointer, odd: str) -> None:
    await checkpointer.save(Snapshot(CheckpointKey(odd, odd, 0), {"v": odd}))
    forked = await checkpointer.fork(CheckpointKey(odd, odd, 0), {"w": 1})
    latest = await checkpointer.latest(odd, odd)
    assert latest is not None
    assert latest.values == {"v": odd}
    assert [m.super_step for m in await checkpointer.list(odd, forked)] == [0]
    assert await checkpointer.list_runs(odd) == sorted([odd, forked])


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("a:b", "c"), ("a", "b:c")),
        (("a%3Ab", "c"), ("a:b", "c")),
        (("w", "r:steps"), ("w", "r")),
        (("w", "r:snap:0"), ("w", "r")),
        (("w:runs", "r"), ("w", "runs:r")),
    ],
)
async def test_ids_never_collide(
    checkpointer: Checkpointer, first: tuple[str, str], second: tuple[str, str]
) -> None:
    await checkpointer.save(Snapshot(CheckpointKey(*first, 0), {"who": "first"}))
    await checkpointer.save(Snapshot(CheckpointKey(*second, 1), {"who": "second"}))
    one = await checkpointer.latest(*first)
    two = await checkpointer.latest(*second)
    assert one is not None
    assert one.values == {"who": "first"}
    assert one.key.super_step == 0
    assert two is not None
    assert two.values == {"who": "second"}
    assert two.key.super_step == 1


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("wf", "run", -1), ValueError),
        (("wf", "run", 2**53), ValueError),
        (("wf", "run", True), TypeError),
        (("wf", "run", 1.0), TypeError),
        (("wf", "run", "1"), TypeError),
        (("", "run", 0), ValueError),
        (("wf", "", 0), ValueError),
        ((None, "run", 0), TypeError),
        (("wf", 7, 0), TypeError),
        (("wf", "\ud800", 0), ValueError),
    ],
    ids=repr,
)
def test_bad_checkpoint_keys_are_refused(args: tuple[Any, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        CheckpointKey(*args)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"values": [("a", 1)]},
        {"values": {"a": 1}, "label": 5},
        {"values": {"a": 1}, "timestamp_ms": -1},
        {"values": {"a": 1}, "timestamp_ms": 1.5},
        {"values": {"a": 1}, "timestamp_ms": True},
        {"values": {"a": 1}, "timestamp_ms": 2**63},
        {"values": {"a": 1}, "timestamp_ms": 10**30},
    ],
    ids=repr,
)
def test_bad_snapshots_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises((TypeError, ValueError)):
        Snapshot(CheckpointKey("wf", "r", 0), **kwargs)


@pytest.mark.parametrize("timestamp_ms", [0, 2**53 + 1, MAX_TIMESTAMP_MS], ids=repr)
async def test_every_timestamp_a_snapshot_takes_is_kept_exactly(
    checkpointer: Checkpointer, timestamp_ms: int
) -> None:
    saved = Snapshot(CheckpointKey("wf", "r", 0), {"a": 1}, timestamp_ms=timestamp_ms)
    await checkpointer.save(saved)
    assert await checkpointer.latest("wf", "r") == saved
    assert [m.timestamp_ms for m in await checkpointer.list("wf", "r")] == [timestamp_ms]


async def test_save_needs_a_snapshot(checkpointer: Checkpointer) -> None:
    with pytest.raises(TypeError, match="Snapshot"):
        await checkpointer.save({"a": 1})  # type: ignore[arg-type]


async def test_load_and_fork_need_a_checkpoint_key(checkpointer: Checkpointer) -> None:
    with pytest.raises(TypeError, match="CheckpointKey"):
        await checkpointer.load(("wf", "r", 0))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="CheckpointKey"):
        await checkpointer.fork(("wf", "r", 0))  # type: ignore[arg-type]


@pytest.mark.parametrize("edits", ["ab", [("a",)], [1, 2], [("a", 1, 2)]], ids=repr)
async def test_fork_refuses_malformed_edits(checkpointer: Checkpointer, edits: Any) -> None:
    await checkpointer.save(Snapshot(CheckpointKey("wf", "r", 0), {}))
    with pytest.raises(TypeError):
        await checkpointer.fork(CheckpointKey("wf", "r", 0), edits)
    assert await checkpointer.list_runs("wf") == ["r"]


@pytest.mark.parametrize(("wf", "run"), [("", "r"), ("w", ""), (1, "r"), ("w", None)])
async def test_latest_and_list_refuse_bad_ids(
    checkpointer: Checkpointer, wf: Any, run: Any
) -> None:
    with pytest.raises((TypeError, ValueError)):
        await checkpointer.latest(wf, run)
    with pytest.raises((TypeError, ValueError)):
        await checkpointer.list(wf, run)
