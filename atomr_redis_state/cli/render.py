"""Output helpers: times, folded JSON values, JSON for scripts, the rich console."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
import orjson
from rich.console import Console
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ..store.types import JSON
from ..views import escape_json, escape_text

FOLD_AT = 400
"""Characters of a value shown before it is folded (``--full`` shows everything)."""

FOLD_LINES = 16
"""Lines of a pretty-printed value shown before it is folded."""


def console() -> Console:
    """A console on stdout that prints data as it is (no markup, no highlighting)."""
    return Console(highlight=False, soft_wrap=False)


def err_console() -> Console:
    return Console(stderr=True, highlight=False)


def when(timestamp_ms: int | None) -> str:
    """``2026-11-28 02:41:14.123`` (UTC), or ``-``."""
    if timestamp_ms is None:
        return "-"
    moment = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{timestamp_ms % 1000:03d}"


def compact(value: JSON) -> str:
    """``value`` as one line of JSON."""
    return orjson.dumps(value).decode()


def pretty(value: JSON) -> str:
    """``value`` as indented JSON."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def fold(text: str, *, full: bool, limit: int = FOLD_AT, lines: int = FOLD_LINES) -> str:
    """``text`` cut to ``limit`` characters and ``lines`` lines, saying how much was left out."""
    if full:
        return text
    kept = text
    split = kept.split("\n")
    if len(split) > lines:
        kept = "\n".join(split[:lines])
    kept = kept[:limit]
    if kept == text:
        return text
    return f"{kept}… ({len(text) - len(kept)} more characters of {len(text)}; --full shows all)"


def echo_json(document: Any) -> None:
    """Print ``document`` as one JSON document, for scripts (bidi and format characters
    escaped: the same JSON, safe on a terminal)."""
    click.echo(escape_json(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()))


def safe(text: str, *, lines: bool = False) -> str:
    """``text`` from the store, with control, bidi and format characters escaped so it cannot
    restyle or reorder the terminal; ``lines`` keeps line breaks (multi-line values)."""
    return escape_text(text, keep_newlines=lines)


UNBOUNDED = 1_000_000
"""A width no table reaches: to measure a table's natural width."""

FOLDED_WIDTH = 24
"""The narrowest a table's folding column (free text, folded over lines) may get."""

Record = tuple[Text, list[Text], list[Text]]
"""One row of a table laid out as lines: its key (a run id, a step), its short cells, and
longer lines (details, fork marks)."""


def print_table_or_records(
    out: Console, table: Table, title: Text, records: list[Record], *, same_line: bool = False
) -> None:
    """Print ``table`` when it fits the console's width, else each row as a few lines.

    A table squeezed into 80 columns (a default terminal, any pipe) folds its widest column and
    drops others; a run id folded over several lines cannot be copied. As lines, the key is
    printed whole on its own line (``same_line``: followed by the cells), the cells on the next,
    then each longer line, indented.
    """
    if _narrowest(out, table) <= out.width:
        out.print(table)
        return
    out.print(title)
    for key, cells, longer in records:
        short = Text("  ").join(cell for cell in cells if cell.plain)
        if same_line:
            out.print(Text.assemble(key, "  ", short))
        else:
            out.print(key)
            out.print(Padding(short, (0, 0, 0, 2), expand=False))
        for line in longer:
            out.print(Padding(line, (0, 0, 0, 2), expand=False))


def _narrowest(out: Console, table: Table) -> int:
    """The width ``table`` needs with every cell whole, but for its folding columns (free text
    such as a detail) at :data:`FOLDED_WIDTH` at most."""
    folding = [c for c in table.columns if c.overflow == "fold" and c.max_width is None]
    for column in folding:
        column.max_width = FOLDED_WIDTH
    try:
        return Measurement.get(out, out.options.update_width(UNBOUNDED), table).maximum
    finally:
        for column in folding:
            column.max_width = None
