"""A JSON value as a lazily expanded tree: what the browser needs to draw one level at a time.

A state can hold megabytes. The page never receives a whole large value: :func:`node` describes
a value down to a byte budget, and anything past the budget is a *folded* node (its kind, how
many items, how many bytes) that the page fetches by its path when the user opens it. Long
strings are cut; containers with many items come in pages.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from ..store.types import JSON

PathPart = str | int

STRING_PREVIEW = 2_000
"""Characters of a string sent before the rest is fetched on demand."""

PAGE = 200
"""Items of an object or a list sent at once; the page asks for more by offset."""

BUDGET = 24_000
"""About how many bytes of value one answer describes before folding what is left."""


def resolve(value: JSON, path: Sequence[PathPart]) -> JSON:
    """The part of ``value`` at ``path`` (object keys and list indexes); LookupError when the
    path leads nowhere (the page asked for a subtree that is gone)."""
    here = value
    for part in path:
        if isinstance(here, dict) and isinstance(part, str) and part in here:
            here = here[part]
            continue
        if isinstance(here, list) and type(part) is int and 0 <= part < len(here):
            here = here[part]
            continue
        raise LookupError(f"no {part!r} at this point of the value")
    return here


def node(value: JSON, *, offset: int = 0, budget: int = BUDGET, full: bool = False) -> JSON:
    """``value`` as a tree node: scalars inline, containers expanded while ``budget`` lasts.

    A node is ``{"t": kind, ...}``: ``string`` (``v``, ``len``, ``cut``), ``number``/``bool``/
    ``null`` (``v``), ``object``/``list`` (``n`` items; ``items`` of ``[key, node]`` from
    ``offset``, ``next`` offset when there are more, or ``items: null`` when folded, with
    ``bytes``). ``full`` sends a string whole.
    """
    return _Describer(budget).describe(value, offset, full=full, top=True)


class _Describer:
    def __init__(self, budget: int) -> None:
        self.left = budget

    def describe(
        self, value: JSON, offset: int = 0, *, full: bool = False, top: bool = False
    ) -> JSON:
        if isinstance(value, str):
            limit = len(value) if full else STRING_PREVIEW
            shown = value[:limit]
            self.left -= len(shown) + 16
            return {"t": "string", "v": shown, "len": len(value), "cut": len(value) - len(shown)}
        if isinstance(value, bool):
            self.left -= 8
            return {"t": "bool", "v": value}
        if isinstance(value, int | float):
            self.left -= 16
            return {"t": "number", "v": value}
        if value is None:
            self.left -= 8
            return {"t": "null"}
        kind = "object" if isinstance(value, dict) else "list"
        count = len(value)
        if not top and self.left <= 0:
            return {"t": kind, "n": count, "items": None, "bytes": len(orjson.dumps(value))}
        pairs: list[tuple[PathPart, JSON]] = []
        if isinstance(value, dict):
            pairs.extend(list(value.items())[offset : offset + PAGE])
        else:
            pairs.extend(enumerate(value[offset : offset + PAGE], start=offset))
        self.left -= 32
        items: list[JSON] = []
        # Breadth first: every child of this level gets its scalar (or folded) self before any
        # grandchild spends the budget, so a huge first item never hides its siblings.
        folded_children = {i: self._shallow(child) for i, (_key, child) in enumerate(pairs)}
        for i, (key, child) in enumerate(pairs):
            shallow = folded_children[i]
            items.append([key, shallow if shallow is not None else self.describe(child)])
        end = offset + len(pairs)
        return {"t": kind, "n": count, "items": items, "next": end if end < count else None}

    def _shallow(self, child: JSON) -> JSON | None:
        """A scalar's node now, or None for a container (described after its siblings)."""
        if isinstance(child, dict | list):
            return None
        return self.describe(child)
