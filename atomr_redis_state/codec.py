"""Strict JSON encoding of channel values, and the field layout of a stored snapshot.

A snapshot is stored as a flat mapping of fields to bytes: one field per channel holding the
channel's orjson encoding, plus two metadata fields, ``:label`` and ``:ts``. A channel whose name
starts with ``:`` is stored under ``:`` + name, so no channel name can clash with the metadata.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

from .errors import ValueEncodingError
from .model import JSON

MAX_DEPTH = 254
"""How deeply lists and objects may nest (orjson's limit)."""

LABEL_FIELD = b":label"
TIMESTAMP_FIELD = b":ts"
WRITE_TOKEN_FIELD = b":w"
"""Set by an exclusive save to a token of its own, so a retry of it is recognised."""

# orjson natively serialises dataclasses, datetimes and subclasses of str/int/dict/list; passing
# them through (to no ``default``) makes it refuse them, as strict JSON must.
_DUMPS_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def encode_value(channel: str, value: object) -> bytes:
    """Encode one channel value as strict JSON, or raise :class:`ValueEncodingError`.

    orjson writes NaN and infinities as ``null`` and serialises tuples, UUIDs and enums; a
    value that does not decode back to itself is therefore refused too.
    """
    try:
        data = orjson.dumps(value, option=_DUMPS_OPTIONS)
    except orjson.JSONEncodeError as exc:
        reason = str(exc)
        if "Recursion" in reason:
            reason = f"nested more than {MAX_DEPTH} levels deep"
        raise ValueEncodingError(
            f"channel {channel!r}: not strict JSON: {_describe_problem(value) or reason}"
        ) from None
    if orjson.loads(data) != value:
        reason = _describe_problem(value) or "does not decode back to itself"
        raise ValueEncodingError(f"channel {channel!r}: not strict JSON: {reason}")
    return data


def decode_value(data: bytes) -> JSON:
    """Decode one stored channel value."""
    value: JSON = orjson.loads(data)
    return value


def channel_field(channel: object) -> bytes:
    """The hash field that stores ``channel``."""
    if not isinstance(channel, str):
        raise ValueEncodingError(f"channel names must be str, not {type(channel).__name__}")
    try:
        name = channel.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueEncodingError(f"channel name is not valid unicode: {channel!r}") from None
    return b":" + name if name.startswith(b":") else name


def channel_name(field: bytes) -> str | None:
    """The channel stored under ``field``, or None for a metadata field."""
    if field.startswith(b":"):
        if not field.startswith(b"::"):
            return None
        field = field[1:]
    return field.decode("utf-8")


def encode_channels(values: Mapping[str, object]) -> list[bytes]:
    """The channels of a snapshot as a flat ``[field, value, field, value, ...]`` list."""
    flat: list[bytes] = []
    for channel, value in values.items():
        flat.append(channel_field(channel))
        flat.append(encode_value(channel, value))
    return flat


def encode_meta(label: str, timestamp_ms: int) -> list[bytes]:
    """The metadata fields of a snapshot as a flat ``[field, value, ...]`` list."""
    return [LABEL_FIELD, label.encode("utf-8"), TIMESTAMP_FIELD, str(timestamp_ms).encode()]


def normalise_edits(
    edits: Mapping[str, object] | Iterable[tuple[str, object]] | None,
) -> dict[str, object]:
    """Fork edits as one mapping; for an iterable of pairs a later edit to a channel wins."""
    if edits is None:
        return {}
    if isinstance(edits, Mapping):
        return dict(edits)
    if isinstance(edits, str | bytes):
        raise TypeError("edits must be a mapping or an iterable of (channel, value) pairs")
    result: dict[str, object] = {}
    for pair in edits:
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise TypeError(f"each edit must be a (channel, value) pair, got {pair!r}")
        result[pair[0]] = pair[1]
    return result


def decode_fields(pairs: Iterable[tuple[bytes, bytes]]) -> tuple[dict[str, JSON], str, int]:
    """Decode stored fields into ``(values, label, timestamp_ms)``."""
    values: dict[str, JSON] = {}
    label = ""
    timestamp_ms = 0
    for field, data in pairs:
        name = channel_name(field)
        if name is not None:
            values[name] = orjson.loads(data)
        elif field == LABEL_FIELD:
            label = data.decode("utf-8")
        elif field == TIMESTAMP_FIELD:
            timestamp_ms = int(data)
    return values, label, timestamp_ms


def pairs_of(flat: list[Any]) -> Iterator[tuple[Any, Any]]:
    """``[a, b, c, d]`` -> ``(a, b), (c, d)``: the shape of a flat Redis reply."""
    it = iter(flat)
    return zip(it, it, strict=True)


def _describe_problem(value: object) -> str | None:
    """Describe the first part of ``value`` that is not strict JSON, or None if none is found."""
    try:
        return _find_problem(value, "$")
    except RecursionError:
        return None


def _find_problem(value: object, path: str) -> str | None:
    """Describe the first part of ``value`` that is not strict JSON, or None."""
    if value is None or isinstance(value, bool | str):
        return None if type(value) in (type(None), bool, str) else _unsupported(value, path)
    if type(value) is int:
        if not -(2**63) <= value < 2**64:
            return f"integer beyond 64 bits at {path}"
        return None
    if type(value) is float:
        return (
            None if math.isfinite(value) else f"{value} at {path} (NaN and infinity are not JSON)"
        )
    if type(value) is list:
        for i, item in enumerate(value):
            problem = _find_problem(item, f"{path}[{i}]")
            if problem:
                return problem
        return None
    if type(value) is dict:
        for k, item in value.items():
            if type(k) is not str:
                return f"dict key {k!r} at {path} is a {type(k).__name__}, not a str"
            problem = _find_problem(item, f"{path}[{k!r}]")
            if problem:
                return problem
        return None
    return _unsupported(value, path)


def _unsupported(value: object, path: str) -> str:
    return f"{type(value).__name__} at {path} is not a JSON type"
