"""Text from the store made safe to show: control, format and bidi characters escaped.

Run ids, labels and values are whatever a program stored. A raw U+202E (right-to-left
override) in a run id reorders the rest of a terminal line, a raw escape sequence can restyle
it, and a zero-width character makes two ids look alike. Everything the operator tools print
passes through :func:`escape_text` (or :func:`escape_json` for JSON), which shows such a
character as its escape instead.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
"""Controls, format characters (bidi overrides, zero-width), surrogates, private use,
unassigned, and line/paragraph separators."""

_MAYBE_UNSAFE = re.compile(r"[^\x20-\x7e\xa0-\u02ff]")
"""Characters worth a closer look (printable ASCII and Latin letters never are)."""


@cache
def _unsafe(char: str) -> bool:
    return unicodedata.category(char) in _UNSAFE_CATEGORIES


def _text_escape(char: str) -> str:
    point = ord(char)
    if point <= 0xFF:
        return f"\\x{point:02x}"
    if point <= 0xFFFF:
        return f"\\u{point:04x}"
    return f"\\U{point:08x}"


def _json_escape(char: str) -> str:
    point = ord(char)
    if point <= 0xFFFF:
        return f"\\u{point:04x}"
    high, low = divmod(point - 0x10000, 0x400)
    return f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}"


def escape_text(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control, format (bidi, zero-width) or separator character shown as
    its escape (``\\u202e``); with ``keep_newlines``, line breaks stay (multi-line values)."""

    def replace(match: re.Match[str]) -> str:
        char = match.group()
        if keep_newlines and char == "\n":
            return char
        return _text_escape(char) if _unsafe(char) else char

    return _MAYBE_UNSAFE.sub(replace, text)


def escape_json(document: str) -> str:
    """A JSON text with every format, bidi and separator character written as a ``\\uXXXX``
    escape: the same JSON value, safe to print (JSON escapes only control characters)."""

    def replace(match: re.Match[str]) -> str:
        char = match.group()
        if char in "\n\t\r":  # whitespace between tokens; inside strings JSON escapes them
            return char
        return _json_escape(char) if _unsafe(char) else char

    return _MAYBE_UNSAFE.sub(replace, document)
