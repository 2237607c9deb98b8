"""The five built-in reducers: exactly the seed's semantics, and they never mutate their inputs."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from atomr_redis_state import (
    AppendList,
    AppendMessages,
    BuiltinReducer,
    LastWriteWins,
    MaxByTimestamp,
    MergeMap,
    Reducer,
)

lww = LastWriteWins()
append = AppendList()
messages = AppendMessages()
merge = MergeMap()
newest = MaxByTimestamp()


def msg(id_: object, content: str, **extra: object) -> dict[str, object]:
    return {"id": id_, "content": content, **extra}


# LastWriteWins


@pytest.mark.parametrize("current", [None, 1, "old", [1], {"a": 1}], ids=repr)
def test_last_write_wins_returns_the_write_whatever_the_current_value(current: object) -> None:
    assert lww(current, {"new": True}) == {"new": True}


def test_last_write_wins_writing_none_clears_the_channel() -> None:
    assert lww("something", None) is None


# AppendList


def test_append_list_appends_the_items_of_a_list_write() -> None:
    assert append([1, 2], [3, 4]) == [1, 2, 3, 4]


def test_append_list_flattens_one_level_only() -> None:
    assert append([1], [[2, 3], [4]]) == [1, [2, 3], [4]]


@pytest.mark.parametrize("item", [5, "text", {"a": 1}, True, 0.5], ids=repr)
def test_append_list_appends_a_non_list_write_as_one_item(item: object) -> None:
    assert append([1], item) == [1, item]


def test_append_list_a_none_write_appends_nothing() -> None:
    assert append([1, 2], None) == [1, 2]


def test_append_list_a_none_current_value_counts_as_empty() -> None:
    assert append(None, [1]) == [1]


@pytest.mark.parametrize("current", [7, "text", {"a": 1}], ids=repr)
def test_append_list_a_non_list_current_value_becomes_its_first_item(current: object) -> None:
    assert append(current, [1]) == [current, 1]


@pytest.mark.parametrize(
    ("current", "incoming"), [(None, None), (None, []), ([], None), (3, None)], ids=repr
)
def test_append_list_always_returns_a_list(current: object, incoming: object) -> None:
    assert isinstance(append(current, incoming), list)


def test_append_list_returns_a_new_list() -> None:
    current = [1]
    assert append(current, None) is not current


# AppendMessages


def test_append_messages_appends_messages_with_new_ids() -> None:
    assert messages([msg("a", "1")], [msg("b", "2")]) == [msg("a", "1"), msg("b", "2")]


def test_append_messages_replaces_a_message_with_the_same_id_whole_and_in_place() -> None:
    current = [msg("a", "1", extra="kept?"), msg("b", "2")]
    assert messages(current, [msg("a", "edited")]) == [msg("a", "edited"), msg("b", "2")]


def test_append_messages_replaces_only_the_first_message_with_that_id() -> None:
    current = [msg("a", "first"), msg("a", "second")]
    assert messages(current, [msg("a", "new")]) == [msg("a", "new"), msg("a", "second")]


def test_append_messages_a_second_message_with_one_id_in_a_batch_replaces_the_first() -> None:
    result = messages([msg("x", "0")], [msg("a", "1"), msg("b", "2"), msg("a", "3")])
    assert result == [msg("x", "0"), msg("a", "3"), msg("b", "2")]


@pytest.mark.parametrize("id_", [1, None, 1.5, ["a"], {"a": 1}], ids=repr)
def test_append_messages_a_non_string_id_always_appends(id_: object) -> None:
    current = [msg(id_, "1")]
    assert messages(current, [msg(id_, "2")]) == [msg(id_, "1"), msg(id_, "2")]


def test_append_messages_a_message_without_an_id_always_appends() -> None:
    current: list[object] = [{"content": "1"}]
    assert messages(current, [{"content": "1"}]) == [{"content": "1"}, {"content": "1"}]


def test_append_messages_non_objects_always_append() -> None:
    assert messages(["a", 1], ["a", 1, None]) == ["a", 1, "a", 1, None]


def test_append_messages_a_string_id_does_not_match_a_non_object_item() -> None:
    assert messages(["a"], [msg("a", "1")]) == ["a", msg("a", "1")]


def test_append_messages_normalises_a_single_message_write() -> None:
    assert messages([msg("a", "1")], msg("a", "2")) == [msg("a", "2")]


def test_append_messages_normalises_a_none_write_and_a_none_current_value() -> None:
    assert messages(None, None) == []
    assert messages(None, [msg("a", "1")]) == [msg("a", "1")]


def test_append_messages_a_non_list_current_value_becomes_its_first_message() -> None:
    assert messages(msg("a", "1"), msg("a", "2")) == [msg("a", "2")]


# MergeMap


def test_merge_map_adds_and_overwrites_keys() -> None:
    assert merge({"a": 1, "b": 2}, {"b": 3, "c": 4}) == {"a": 1, "b": 3, "c": 4}


def test_merge_map_stores_a_none_value_instead_of_deleting_the_key() -> None:
    assert merge({"a": 1}, {"a": None}) == {"a": None}


def test_merge_map_replaces_nested_objects_rather_than_merging_them() -> None:
    assert merge({"n": {"x": 1, "y": 2}}, {"n": {"y": 3}}) == {"n": {"y": 3}}


@pytest.mark.parametrize("current", [None, 1, "text", [1, 2]], ids=repr)
def test_merge_map_a_non_object_current_value_counts_as_empty(current: object) -> None:
    assert merge(current, {"a": 1}) == {"a": 1}


@pytest.mark.parametrize("incoming", [None, 1, "text", [["a", 1]]], ids=repr)
def test_merge_map_ignores_a_non_object_write(incoming: object) -> None:
    assert merge({"a": 1}, incoming) == {"a": 1}


def test_merge_map_returns_a_new_object() -> None:
    current = {"a": 1}
    assert merge(current, None) is not current


# MaxByTimestamp


def at(ts: object, value: str = "") -> dict[str, object]:
    return {"ts_ms": ts, "v": value}


def test_max_by_timestamp_a_newer_write_wins() -> None:
    assert newest(at(1, "old"), at(2, "new")) == at(2, "new")


def test_max_by_timestamp_an_older_write_loses() -> None:
    assert newest(at(2, "kept"), at(1, "late")) == at(2, "kept")


def test_max_by_timestamp_the_write_wins_a_tie() -> None:
    assert newest(at(5, "current"), at(5, "incoming")) == at(5, "incoming")


def test_max_by_timestamp_a_missing_ts_counts_as_lowest() -> None:
    assert newest({"v": "no ts"}, at(-(2**62), "any ts")) == at(-(2**62), "any ts")
    assert newest(at(0, "kept"), {"v": "no ts"}) == at(0, "kept")


@pytest.mark.parametrize("ts", [1.0, 10.5, "99", True, None, [1]], ids=repr)
def test_max_by_timestamp_a_non_integer_ts_counts_as_lowest(ts: object) -> None:
    assert newest(at(0, "kept"), at(ts, "late")) == at(0, "kept")
    assert newest(at(ts, "current"), at(0, "incoming")) == at(0, "incoming")


@pytest.mark.parametrize("current", [None, 5, "text", [1]], ids=repr)
def test_max_by_timestamp_a_non_object_counts_as_lowest(current: object) -> None:
    assert newest(current, at(0, "new")) == at(0, "new")
    assert newest(at(0, "kept"), current) == at(0, "kept")


def test_max_by_timestamp_of_two_values_without_ts_the_write_wins() -> None:
    assert newest({"v": "current"}, {"v": "incoming"}) == {"v": "incoming"}


# Every reducer


ALL: list[BuiltinReducer] = [lww, append, messages, merge, newest]

INPUTS: list[tuple[Any, Any]] = [
    ([msg("a", "1"), [1, {"deep": [1]}]], [msg("a", "2"), msg("b", "3"), [9]]),
    ({"a": {"deep": [1]}, "ts_ms": 1}, {"a": {"deep": [2]}, "ts_ms": 2}),
    ({"a": [1]}, [[1], {"x": [2]}]),
    (None, {"ts_ms": 3, "v": [1]}),
]


@pytest.mark.parametrize("reducer", ALL, ids=repr)
@pytest.mark.parametrize(("current", "incoming"), INPUTS)
def test_reducers_never_mutate_their_inputs(reducer: Reducer, current: Any, incoming: Any) -> None:
    current_before, incoming_before = copy.deepcopy(current), copy.deepcopy(incoming)
    reducer(current, incoming)
    assert current == current_before
    assert incoming == incoming_before


@pytest.mark.parametrize("reducer", ALL, ids=repr)
def test_built_in_reducers_are_stateless_values(reducer: BuiltinReducer) -> None:
    same = type(reducer)()
    assert reducer == same
    assert hash(reducer) == hash(same)
    assert repr(reducer) == f"{type(reducer).__name__}()"
