"""A structural diff of two snapshots' channels, down into their JSON values.

Objects are compared key by key, lists item by item (aligned on equal items, so an item
inserted in the middle is one ``added``, not a cascade of changes), anything else by its exact
JSON (``1``, ``1.0`` and ``true`` differ). Items added at the end of a list are ``appended``.
A changed string also says where it changed (:func:`string_diff`): a megabyte of text that
differs in its last character shows that character, not the first few hundred.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Literal

import orjson

from ..store.types import JSON

ChangeKind = Literal["added", "removed", "changed", "appended"]
PathPart = str | int

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


@dataclass(frozen=True, slots=True)
class Change:
    """One difference: ``kind`` at ``path`` (channel name first), with the values either side."""

    kind: ChangeKind
    path: tuple[PathPart, ...]
    old: JSON = None
    new: JSON = None

    def to_json(self) -> dict[str, JSON]:
        document: dict[str, JSON] = {"kind": self.kind, "path": list(self.path)}
        if self.kind in ("removed", "changed"):
            document["old"] = self.old
        if self.kind != "removed":
            document["new"] = self.new
        if self.kind == "changed" and isinstance(self.old, str) and isinstance(self.new, str):
            document["string"] = string_diff(self.old, self.new)
        return document


CONTEXT = 40
"""Characters of unchanged text shown either side of a string's differing region."""

REGION_LIMIT = 400
"""Characters of each side's differing region kept in a string diff (the rest is counted)."""


def string_diff(
    old: str, new: str, *, context: int = CONTEXT, limit: int = REGION_LIMIT
) -> dict[str, JSON]:
    """Where two strings differ: the text they share before and after is left out.

    ``start`` is the first differing character (the same in both); ``old_stop``/``new_stop``
    end each side's differing region. ``before``/``after`` are up to ``context`` characters of
    the shared text around it; ``old``/``new`` the differing regions cut to ``limit``
    characters, ``old_cut``/``new_cut`` how many were cut.
    """
    start = _common_prefix(old, new)
    shared_end = _common_suffix(old[start:], new[start:])
    old_stop, new_stop = len(old) - shared_end, len(new) - shared_end
    old_region, new_region = old[start:old_stop], new[start:new_stop]
    return {
        "old_length": len(old),
        "new_length": len(new),
        "start": start,
        "old_stop": old_stop,
        "new_stop": new_stop,
        "before": old[max(0, start - context) : start],
        "after": old[old_stop : old_stop + context],
        "old": old_region[:limit],
        "new": new_region[:limit],
        "old_cut": max(0, len(old_region) - limit),
        "new_cut": max(0, len(new_region) - limit),
    }


def _common_prefix(a: str, b: str) -> int:
    """The length of the prefix ``a`` and ``b`` share, by bisection on slices (C-speed
    comparisons, so a megabyte costs microseconds rather than a Python loop)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _common_suffix(a: str, b: str) -> int:
    """The length of the suffix ``a`` and ``b`` share."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[len(a) - middle : len(a) - low] == b[len(b) - middle : len(b) - low]:
            low = middle
        else:
            high = middle - 1
    return low


def diff_channels(old: Mapping[str, JSON], new: Mapping[str, JSON]) -> list[Change]:
    """The changes from ``old`` to ``new`` channels, in channel-name order."""
    return _diff_objects(old, new, ())


def diff_values(old: JSON, new: JSON, path: tuple[PathPart, ...] = ()) -> list[Change]:
    """The changes from one JSON value to another."""
    if isinstance(old, dict) and isinstance(new, dict):
        return _diff_objects(old, new, path)
    if isinstance(old, list) and isinstance(new, list):
        return _diff_lists(old, new, path)
    if _canonical(old) == _canonical(new):
        return []
    return [Change("changed", path, old, new)]


def format_path(path: Sequence[PathPart]) -> str:
    """``messages[3].content``; keys that are not plain names are quoted: ``tools["a b"]``."""
    out = []
    for index, part in enumerate(path):
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER.match(part):
            out.append(part if index == 0 else f".{part}")
        else:
            out.append(
                orjson.dumps(part).decode() if index == 0 else f"[{orjson.dumps(part).decode()}]"
            )
    return "".join(out)


def _diff_objects(
    old: Mapping[str, JSON], new: Mapping[str, JSON], path: tuple[PathPart, ...]
) -> list[Change]:
    changes: list[Change] = []
    for key in sorted(old.keys() | new.keys()):
        where = (*path, key)
        if key not in new:
            changes.append(Change("removed", where, old[key]))
        elif key not in old:
            changes.append(Change("added", where, None, new[key]))
        else:
            changes += diff_values(old[key], new[key], where)
    return changes


def _diff_lists(old: list[JSON], new: list[JSON], path: tuple[PathPart, ...]) -> list[Change]:
    matcher = SequenceMatcher(None, [_canonical(v) for v in old], [_canonical(v) for v in new])
    changes: list[Change] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        paired = min(i2 - i1, j2 - j1) if tag == "replace" else 0
        for k in range(paired):
            changes += diff_values(old[i1 + k], new[j1 + k], (*path, j1 + k))
        for i in range(i1 + paired, i2):
            changes.append(Change("removed", (*path, i), old[i]))
        at_end = i2 == len(old)
        for j in range(j1 + paired, j2):
            changes.append(Change("appended" if at_end else "added", (*path, j), None, new[j]))
    return changes


def _canonical(value: JSON) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
