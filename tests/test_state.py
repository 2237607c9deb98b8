"""StateSchema and RunState: channels, defaults, copies, and all-or-nothing writes."""

from __future__ import annotations

from typing import Any

import pytest

from atomr_redis_state import (
    AppendList,
    AtomrStateError,
    Channel,
    LastWriteWins,
    MergeMap,
    RunState,
    StateSchema,
    UnknownChannelError,
)


def add(current: Any, incoming: Any) -> Any:
    return (current or 0) + incoming


def refuse_negative(current: Any, incoming: Any) -> Any:
    if incoming < 0:
        raise ValueError("negative")
    return incoming


SCHEMA = (
    StateSchema.builder()
    .add("log", AppendList(), [])
    .add("meta", MergeMap(), {"tags": []})
    .add("total", add, 0)
    .add("checked", refuse_negative)
    .add_lww("answer")
    .build()
)


def test_the_builder_declares_channels_in_order() -> None:
    assert SCHEMA.keys() == ["log", "meta", "total", "checked", "answer"]


def test_channel_returns_the_declared_reducer_and_default() -> None:
    assert SCHEMA.channel("log") == Channel("log", AppendList(), [])
    assert SCHEMA.channel("answer") == Channel("answer", LastWriteWins(), None)


def test_channel_of_an_unknown_key_is_none() -> None:
    assert SCHEMA.channel("nope") is None


def test_a_channel_declared_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="'a' is declared twice"):
        StateSchema.builder().add_lww("a").add("a", AppendList()).build()


def test_a_reducer_class_instead_of_an_instance_is_refused() -> None:
    with pytest.raises(TypeError, match=r"AppendList\(\), not the class"):
        StateSchema.builder().add("log", AppendList)  # type: ignore[arg-type]


def test_a_reducer_must_be_callable() -> None:
    with pytest.raises(TypeError, match="callable"):
        Channel("x", 42)  # type: ignore[arg-type]


def test_defaults_are_a_fresh_deep_copy_on_each_call() -> None:
    meta: Any = SCHEMA.defaults()["meta"]
    meta["tags"].append("changed")
    assert SCHEMA.defaults()["meta"] == {"tags": []}


def test_a_channel_keeps_its_own_copy_of_the_default() -> None:
    default: list[Any] = []
    schema = StateSchema.builder().add("log", AppendList(), default).build()
    default.append("changed")
    assert schema.defaults() == {"log": []}


def test_a_new_run_state_is_the_defaults_at_super_step_0() -> None:
    state = RunState(SCHEMA)
    assert state.super_step == 0
    assert state.snapshot() == SCHEMA.defaults()


def test_from_snapshot_keeps_extra_keys_and_defaults_missing_channels() -> None:
    state = RunState.from_snapshot(SCHEMA, {"answer": 42, "legacy": "kept"}, 7)
    assert state.super_step == 7
    assert state.snapshot() == {**SCHEMA.defaults(), "answer": 42, "legacy": "kept"}


def test_from_snapshot_copies_the_values() -> None:
    values: dict[str, Any] = {"log": [1]}
    state = RunState.from_snapshot(SCHEMA, values, 1)
    values["log"].append(2)
    assert state.read("log") == [1]


def test_from_snapshot_refuses_a_negative_super_step() -> None:
    with pytest.raises(ValueError, match="super_step"):
        RunState.from_snapshot(SCHEMA, {}, -1)


def test_advance_moves_to_the_next_super_step() -> None:
    state = RunState(SCHEMA)
    assert state.advance() == 1
    assert state.advance() == 2
    assert state.super_step == 2


def test_read_of_an_absent_key_is_none() -> None:
    assert RunState(SCHEMA).read("nope") is None


def test_read_returns_a_copy() -> None:
    state = RunState(SCHEMA)
    log = state.read("log")
    assert isinstance(log, list)
    log.append("changed")
    assert state.read("log") == []


def test_a_snapshot_is_not_changed_by_later_writes() -> None:
    state = RunState(SCHEMA)
    snapshot = state.snapshot()
    state.write("log", "x")
    state.write("answer", 1)
    assert snapshot == SCHEMA.defaults()


def test_changing_a_snapshot_does_not_change_the_state() -> None:
    state = RunState(SCHEMA)
    log: Any = state.snapshot()["log"]
    log.append("changed")
    assert state.read("log") == []


def test_write_goes_through_the_channels_reducer() -> None:
    state = RunState(SCHEMA)
    state.write("log", "a")
    state.write("log", ["b", "c"])
    state.write("total", 5)
    state.write("total", 2)
    assert state.read("log") == ["a", "b", "c"]
    assert state.read("total") == 7


def test_a_written_value_is_copied_in() -> None:
    state = RunState(SCHEMA)
    value: dict[str, Any] = {"tags": ["a"]}
    state.write("meta", value)
    value["tags"].append("changed")
    assert state.read("meta") == {"tags": ["a"]}


def test_write_to_an_unknown_channel_raises_and_changes_nothing() -> None:
    state = RunState(SCHEMA)
    with pytest.raises(UnknownChannelError) as raised:
        state.write("nope", 1)
    assert raised.value.key == "nope"
    assert state.snapshot() == SCHEMA.defaults()


def test_unknown_channel_error_is_an_atomr_error_and_a_key_error() -> None:
    error = UnknownChannelError("nope", ["a", "b"])
    assert isinstance(error, AtomrStateError)
    assert isinstance(error, KeyError)
    assert str(error) == "unknown channel 'nope' (the schema declares: 'a', 'b')"


def test_a_key_kept_from_a_snapshot_is_not_a_writable_channel() -> None:
    state = RunState.from_snapshot(SCHEMA, {"legacy": 1}, 0)
    with pytest.raises(UnknownChannelError):
        state.write("legacy", 2)


def test_merge_writes_applies_the_writes_in_order() -> None:
    state = RunState(SCHEMA)
    state.merge_writes([("log", "a"), ("answer", 1), ("log", "b"), ("answer", 2)])
    assert state.read("log") == ["a", "b"]
    assert state.read("answer") == 2


def test_merge_writes_is_all_or_nothing_on_an_unknown_channel() -> None:
    state = RunState(SCHEMA)
    with pytest.raises(UnknownChannelError):
        state.merge_writes([("log", "a"), ("total", 1), ("nope", 1), ("log", "b")])
    assert state.snapshot() == SCHEMA.defaults()


def test_merge_writes_is_all_or_nothing_when_a_reducer_raises() -> None:
    state = RunState(SCHEMA)
    with pytest.raises(ValueError, match="negative"):
        state.merge_writes([("log", "a"), ("checked", 1), ("checked", -1)])
    assert state.snapshot() == SCHEMA.defaults()


def test_a_reducer_that_mutates_its_inputs_cannot_change_the_state_behind_its_back() -> None:
    def mutating(current: Any, incoming: Any) -> Any:
        current.append(incoming)
        raise RuntimeError("failed after mutating")

    schema = StateSchema.builder().add("log", mutating, []).build()
    state = RunState(schema)
    with pytest.raises(RuntimeError):
        state.write("log", 1)
    assert state.read("log") == []
