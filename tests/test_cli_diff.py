"""The structural diff behind ``diff``: channels, objects, lists, exact JSON leaves."""

from __future__ import annotations

import pytest

from atomr_redis_state.store.types import JSON
from atomr_redis_state.views.diff import Change, diff_channels, diff_values, format_path


def test_channels_added_removed_and_changed() -> None:
    assert diff_channels({"a": 1, "b": 2}, {"b": 3, "c": 4}) == [
        Change("removed", ("a",), 1),
        Change("changed", ("b",), 2, 3),
        Change("added", ("c",), None, 4),
    ]


def test_equal_values_have_no_changes() -> None:
    value: JSON = {"a": [1, {"b": None}], "c": "d"}
    assert diff_channels({"x": value}, {"x": value}) == []
    assert diff_values({"a": 1, "b": 2}, {"b": 2, "a": 1}) == []


def test_nested_objects_are_compared_key_by_key() -> None:
    old: JSON = {"plan": {"days": 3, "stops": ["Lisbon"], "who": {"n": 2}}}
    new: JSON = {"plan": {"days": 5, "stops": ["Lisbon"], "who": {"n": 2, "kids": 1}}}
    assert diff_values(old, new) == [
        Change("changed", ("plan", "days"), 3, 5),
        Change("added", ("plan", "who", "kids"), None, 1),
    ]


def test_items_added_at_the_end_of_a_list_are_appended() -> None:
    assert diff_values(["a", "b"], ["a", "b", "c", "d"], ("messages",)) == [
        Change("appended", ("messages", 2), None, "c"),
        Change("appended", ("messages", 3), None, "d"),
    ]


def test_an_item_inserted_in_the_middle_is_one_addition() -> None:
    assert diff_values([1, 2, 3, 4], [1, 2, 99, 3, 4]) == [Change("added", (2,), None, 99)]


def test_removed_list_items_use_their_old_index() -> None:
    assert diff_values(["a", "b", "c"], ["a", "c"]) == [Change("removed", (1,), "b")]


def test_a_changed_list_item_is_diffed_inside() -> None:
    old: JSON = [{"role": "user", "content": "hi"}, {"role": "ai", "content": "yo"}]
    new: JSON = [{"role": "user", "content": "hi"}, {"role": "ai", "content": "hello"}]
    assert diff_values(old, new, ("m",)) == [Change("changed", ("m", 1, "content"), "yo", "hello")]


@pytest.mark.parametrize(("old", "new"), [(1, 1.0), (1, True), (0, False), (None, 0), ("1", 1)])
def test_leaves_compare_as_exact_json(old: JSON, new: JSON) -> None:
    assert diff_values(old, new) == [Change("changed", (), old, new)]


def test_a_type_change_is_one_change() -> None:
    assert diff_values({"a": [1]}, {"a": {"0": 1}}) == [Change("changed", ("a",), [1], {"0": 1})]


def test_changes_as_json() -> None:
    assert Change("changed", ("a", 0), 1, 2).to_json() == {
        "kind": "changed",
        "path": ["a", 0],
        "old": 1,
        "new": 2,
    }
    assert Change("removed", ("a",), 1).to_json() == {"kind": "removed", "path": ["a"], "old": 1}
    assert Change("appended", ("a", 3), None, None).to_json() == {
        "kind": "appended",
        "path": ["a", 3],
        "new": None,
    }


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        (("messages", 3, "content"), "messages[3].content"),
        (("a b", "c:d", 0), '"a b"["c:d"][0]'),
        (("", "x-y"), '"".x-y'),
    ],
)
def test_paths_are_readable(path: tuple[str | int, ...], shown: str) -> None:
    assert format_path(path) == shown
