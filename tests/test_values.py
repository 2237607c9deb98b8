"""Channel values: strict JSON round-trips exactly; anything else is refused before writing."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import uuid
from decimal import Decimal
from typing import Any

import pytest

from atomr_redis_state import (
    Checkpointer,
    CheckpointKey,
    Snapshot,
    ValueEncodingError,
)
from atomr_redis_state.store.codec import MAX_DEPTH

WF = "wf-values"
KEY = CheckpointKey(WF, "r", 0)


async def round_trip(cp: Checkpointer, values: dict[str, Any]) -> dict[str, Any]:
    await cp.save(Snapshot(KEY, values))
    loaded = await cp.load(KEY)
    assert loaded is not None
    return loaded.values


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -1,
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        0.1,
        -0.0,
        1e300,
        "",
        "plain",
        "unicode: \u00e9\u4e2d\U0001f600 \x00 nul",
        [],
        {},
        [1, "a", None, [2, [3, [4]]]],
        {"nested": {"deeper": {"deepest": [True, {"x": 1.5}]}}},
    ],
    ids=repr,
)
async def test_json_values_round_trip_exactly(checkpointer: Checkpointer, value: object) -> None:
    loaded = await round_trip(checkpointer, {"v": value})
    assert loaded == {"v": value}
    assert type(loaded["v"]) is type(value)


def nested(levels: int) -> object:
    value: object = "leaf"
    for depth in range(levels // 2):
        value = {"d": [value, depth]}
    return value


async def test_deep_nesting_round_trips(checkpointer: Checkpointer) -> None:
    value = nested(MAX_DEPTH)
    assert await round_trip(checkpointer, {"v": value}) == {"v": value}


@pytest.mark.parametrize("levels", [MAX_DEPTH + 2, 5_000])
async def test_nesting_too_deep_is_refused(checkpointer: Checkpointer, levels: int) -> None:
    with pytest.raises(ValueEncodingError, match="levels deep"):
        await checkpointer.save(Snapshot(KEY, {"v": nested(levels)}))  # type: ignore[dict-item]
    assert await checkpointer.list(WF, "r") == []


async def test_a_megabyte_string_round_trips(checkpointer: Checkpointer) -> None:
    big = "x\u00e9" * 600_000
    assert await round_trip(checkpointer, {"big": big}) == {"big": big}


async def test_twelve_thousand_channels_round_trip(checkpointer: Checkpointer) -> None:
    values = {f"ch{i}": i for i in range(12_000)}
    assert await round_trip(checkpointer, values) == values


async def test_fork_with_twelve_thousand_edits(checkpointer: Checkpointer) -> None:
    await checkpointer.save(Snapshot(KEY, {"keep": 1}))
    edits = {f"e{i}": [i] for i in range(12_000)}
    forked = await checkpointer.fork(KEY, edits)
    copy = await checkpointer.latest(WF, forked)
    assert copy is not None
    assert copy.values == {"keep": 1, **edits}


@pytest.mark.parametrize(
    "channel", ["", "label", ":label", ":ts", "::x", ":", "a:b", "{tag}", "%3A", "sp ace", "\u4e2d"]
)
async def test_any_channel_name_is_its_own_channel(
    checkpointer: Checkpointer, channel: str
) -> None:
    values = {channel: "mine", "other": 1}
    await checkpointer.save(Snapshot(KEY, values, label="the-label", timestamp_ms=42))  # type: ignore[arg-type]
    loaded = await checkpointer.load(KEY)
    assert loaded is not None
    assert (loaded.values, loaded.label, loaded.timestamp_ms) == (values, "the-label", 42)


@dataclasses.dataclass
class Point:
    x: int


class Colour(enum.Enum):
    RED = 1


class MyStr(str):
    pass


class MyDict(dict[str, int]):
    pass


NOT_JSON = [
    pytest.param(float("nan"), id="nan"),
    pytest.param(float("inf"), id="inf"),
    pytest.param(-float("inf"), id="-inf"),
    pytest.param([1, [float("nan")]], id="nested-nan"),
    pytest.param({"a": {"b": float("inf")}}, id="nested-inf"),
    pytest.param({1: "a"}, id="int-key"),
    pytest.param({"a": {None: 1}}, id="nested-none-key"),
    pytest.param(b"bytes", id="bytes"),
    pytest.param({1, 2}, id="set"),
    pytest.param(2**64, id="int-over-64-bits"),
    pytest.param(-(2**63) - 1, id="int-under-64-bits"),
    pytest.param((1, 2), id="tuple"),
    pytest.param(object(), id="object"),
    pytest.param(Point(1), id="dataclass"),
    pytest.param(datetime.datetime(2026, 1, 1), id="datetime"),
    pytest.param(uuid.UUID(int=1), id="uuid"),
    pytest.param(Colour.RED, id="enum"),
    pytest.param(Decimal("1.5"), id="decimal"),
    pytest.param(MyStr("s"), id="str-subclass"),
    pytest.param(MyDict(a=1), id="dict-subclass"),
    pytest.param("\ud800", id="lone-surrogate"),
]


@pytest.mark.parametrize("value", NOT_JSON)
async def test_non_json_value_is_refused_and_nothing_is_written(
    checkpointer: Checkpointer, value: object
) -> None:
    with pytest.raises(ValueEncodingError, match="channel 'bad'"):
        await checkpointer.save(Snapshot(KEY, {"good": 1, "bad": value}))  # type: ignore[dict-item]
    assert await checkpointer.list(WF, "r") == []
    assert await checkpointer.list_runs(WF) == []


@pytest.mark.parametrize("value", NOT_JSON[:6])
async def test_non_json_fork_edit_is_refused_and_nothing_is_written(
    checkpointer: Checkpointer, value: object
) -> None:
    await checkpointer.save(Snapshot(KEY, {"a": 1}))
    with pytest.raises(ValueEncodingError):
        await checkpointer.fork(KEY, {"ok": 1, "bad": value})
    assert await checkpointer.list_runs(WF) == ["r"]


def test_value_encoding_error_is_a_value_error_and_an_atomr_error() -> None:
    from atomr_redis_state import AtomrStateError

    assert issubclass(ValueEncodingError, ValueError)
    assert issubclass(ValueEncodingError, AtomrStateError)


@pytest.mark.parametrize("channel", [1, None, b"x", "\udc00"], ids=repr)
async def test_bad_channel_name_is_refused(checkpointer: Checkpointer, channel: object) -> None:
    with pytest.raises(ValueEncodingError):
        await checkpointer.save(Snapshot(KEY, {channel: 1}))  # type: ignore[dict-item]
    assert await checkpointer.list(WF, "r") == []


async def test_saved_values_are_copies(checkpointer: Checkpointer) -> None:
    values: dict[str, object] = {"items": [1]}
    await checkpointer.save(Snapshot(KEY, values))  # type: ignore[arg-type]
    values["items"].append(2)  # type: ignore[attr-defined]
    loaded = await checkpointer.load(KEY)
    assert loaded is not None
    assert loaded.values == {"items": [1]}
    loaded.values["items"].append(3)  # type: ignore[union-attr]
    again = await checkpointer.load(KEY)
    assert again is not None
    assert again.values == {"items": [1]}
