"""Reducers: how a channel combines its current value with a write.

A reducer is any callable ``(current, incoming) -> new``. The five built-ins below are classes:
pass an instance (``AppendMessages()``) to a schema. None of them mutates its inputs; the value
they return may share unchanged items with them, which :class:`~.state.RunState` makes safe by
handing reducers copies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

Reducer = Callable[[Any, Any], Any]
"""Any callable ``(current, incoming) -> new``; a channel's writes go through it in order."""


class BuiltinReducer(ABC):
    """Base of the built-in reducers: stateless, so every instance equals every other."""

    __slots__ = ()

    @abstractmethod
    def __call__(self, current: Any, incoming: Any) -> Any:
        """The channel's new value after ``incoming`` is written onto ``current``."""

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LastWriteWins(BuiltinReducer):
    """The write replaces the value, even a ``None`` write (which clears the channel)."""

    __slots__ = ()

    def __call__(self, current: Any, incoming: Any) -> Any:
        return incoming


class AppendList(BuiltinReducer):
    """Append to a list: a list write adds its items (one level), ``None`` adds nothing.

    A ``None`` current value counts as ``[]`` and any other non-list as a one-item list, so the
    result is always a list.
    """

    __slots__ = ()

    def __call__(self, current: Any, incoming: Any) -> list[Any]:
        return as_list(current) + as_list(incoming)


class AppendMessages(BuiltinReducer):
    """Append chat messages, replacing those whose string ``"id"`` is already present.

    Both sides are normalised as by :class:`AppendList`. An incoming message with a string id
    replaces, whole and in place, the first message with that id (including one added earlier in
    the same write); any other item is appended.
    """

    __slots__ = ()

    def __call__(self, current: Any, incoming: Any) -> list[Any]:
        messages = as_list(current)
        first_with: dict[str, int] = {}
        for position, message in enumerate(messages):
            found = message_id(message)
            if found is not None:
                first_with.setdefault(found, position)
        for message in as_list(incoming):
            found = message_id(message)
            if found is not None and found in first_with:
                messages[first_with[found]] = message
                continue
            if found is not None:
                first_with[found] = len(messages)
            messages.append(message)
        return messages


class MergeMap(BuiltinReducer):
    """Shallow-merge objects: incoming keys overwrite, nested objects are replaced, not merged.

    A non-object current value counts as ``{}``; a non-object write is ignored; a ``None`` value
    is stored under its key, not treated as a delete.
    """

    __slots__ = ()

    def __call__(self, current: Any, incoming: Any) -> dict[str, Any]:
        merged = dict(current) if isinstance(current, dict) else {}
        if isinstance(incoming, dict):
            merged.update(incoming)
        return merged


class MaxByTimestamp(BuiltinReducer):
    """Keep the value with the highest integer ``"ts_ms"``; the write wins a tie.

    A value without an integer ``ts_ms`` (missing, a float, a bool, not an object) ranks lowest.
    """

    __slots__ = ()

    def __call__(self, current: Any, incoming: Any) -> Any:
        return incoming if _rank(incoming) >= _rank(current) else current


def as_list(value: Any) -> list[Any]:
    """``None`` -> ``[]``, a list -> a shallow copy, anything else -> ``[value]``."""
    if value is None:
        return []
    if isinstance(value, list):
        return list(value)
    return [value]


def message_id(message: Any) -> str | None:
    """The string ``"id"`` of a message object, or None when it has none."""
    if isinstance(message, dict):
        found = message.get("id")
        if isinstance(found, str):
            return found
    return None


def _rank(value: Any) -> tuple[int, int]:
    """Sort key: values with an integer ts_ms above every value without one."""
    ts = value.get("ts_ms") if isinstance(value, dict) else None
    if isinstance(ts, int) and not isinstance(ts, bool):
        return (1, ts)
    return (0, 0)
