"""A structural diff of two snapshots' channels, down into their JSON values.

Objects are compared key by key, lists item by item (aligned on equal items, so an item
inserted in the middle is one ``added``, not a cascade of changes), anything else by its exact
JSON (``1``, ``1.0`` and ``true`` differ). Items added at the end of a list are ``appended``.
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
        return document


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
