"""Strict JSON encoding of channel values, and the field layout of a stored snapshot.

A snapshot is stored as a flat mapping of fields to bytes: one field per channel holding the
channel's orjson encoding, plus two metadata fields, ``:label`` and ``:ts``. A channel whose name
starts with ``:`` is stored under ``:`` + name, so no channel name can clash with the metadata.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import orjson

from ..errors import ValueEncodingError
from .types import JSON, CheckpointEvent, Lease

MAX_DEPTH = 254
"""How deeply lists and objects may nest (orjson's limit)."""

LABEL_FIELD = b":label"
TIMESTAMP_FIELD = b":ts"
METADATA_FIELD = b":meta"
"""The snapshot's metadata (a JSON object), present only when it is not empty."""
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

    orjson refuses bytes, sets, non-string keys, oversized integers and (with the passthrough
    options) dataclasses, datetimes and subclasses; but it writes NaN and infinities as ``null``
    and serialises tuples, UUIDs and enums. The type walk after it refuses those too.
    """
    try:
        data = orjson.dumps(value, option=_DUMPS_OPTIONS)
    except orjson.JSONEncodeError as exc:
        if "Recursion" in str(exc):
            reason = f"nested more than {MAX_DEPTH} levels deep"
        else:
            reason = _find_problem(value, "$") or str(exc)
        raise ValueEncodingError(f"channel {channel!r}: not strict JSON: {reason}") from None
    if not _is_strict(value):
        reason = _find_problem(value, "$") or "not a JSON type"
        raise ValueEncodingError(f"channel {channel!r}: not strict JSON: {reason}")
    return data


_LEAF_TYPES = frozenset({str, int, bool, type(None)})


def _is_strict(value: object) -> bool:
    """True when ``value`` holds nothing but JSON types and finite floats.

    Runs after orjson accepted the value, so nesting is bounded and integers are in range.
    Leaves, and the values of objects inside lists (a list of messages), are checked inline:
    this walk is on the hot path of every save.
    """
    kind = type(value)
    if kind in _LEAF_TYPES:
        return True
    if kind is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    if kind is list:
        items: Iterable[object] = value  # type: ignore[assignment]
    elif kind is dict:
        items = value.values()  # type: ignore[attr-defined]
    else:
        return False
    for item in items:
        kind = type(item)
        if kind in _LEAF_TYPES:
            continue
        if kind is dict:
            for inner in item.values():  # type: ignore[attr-defined]
                if type(inner) not in _LEAF_TYPES and not _is_strict(inner):
                    return False
        elif not _is_strict(item):
            return False
    return True


_FIELDS: dict[str, bytes] = {}
"""Hash fields of the channel names seen so far (most snapshots reuse a few names)."""
_FIELDS_MAX = 4096


def channel_field(channel: object) -> bytes:
    """The hash field that stores ``channel``."""
    if type(channel) is str:
        field = _FIELDS.get(channel)
        if field is not None:
            return field
    if not isinstance(channel, str):
        raise ValueEncodingError(f"channel names must be str, not {type(channel).__name__}")
    try:
        name = channel.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueEncodingError(f"channel name is not valid unicode: {channel!r}") from None
    field = b":" + name if name.startswith(b":") else name
    if type(channel) is str and len(_FIELDS) < _FIELDS_MAX:
        _FIELDS[channel] = field
    return field


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


def encode_meta(
    label: str, timestamp_ms: int, metadata: Mapping[str, object] | None = None
) -> list[bytes]:
    """The metadata fields of a snapshot as a flat ``[field, value, ...]`` list."""
    flat = [LABEL_FIELD, label.encode("utf-8"), TIMESTAMP_FIELD, str(timestamp_ms).encode()]
    if metadata:
        flat += [METADATA_FIELD, encode_value("metadata", dict(metadata))]
    return flat


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


def decode_fields(
    pairs: Iterable[tuple[bytes, bytes]],
) -> tuple[dict[str, JSON], str, int, dict[str, JSON]]:
    """Decode stored fields into ``(values, label, timestamp_ms, metadata)``.

    One pass over the fields, and one ``orjson.loads`` for every channel value at once (each
    value is a JSON document the store wrote: joined by commas in brackets, they are one).
    """
    names: list[str] = []
    data: list[bytes] = []
    label = ""
    timestamp_ms = 0
    metadata: dict[str, JSON] = {}
    for field, value in pairs:
        if field[:1] != b":":
            names.append(field.decode("utf-8"))
            data.append(value)
        elif field == TIMESTAMP_FIELD:
            timestamp_ms = int(value)
        elif field == LABEL_FIELD:
            label = value.decode("utf-8")
        elif field == METADATA_FIELD:
            metadata = orjson.loads(value)
        elif field[:2] == b"::":
            names.append(field[1:].decode("utf-8"))
            data.append(value)
    if len(data) == 1:
        return {names[0]: orjson.loads(data[0])}, label, timestamp_ms, metadata
    values = dict(zip(names, orjson.loads(b"[" + b",".join(data) + b"]"), strict=True))
    return values, label, timestamp_ms, metadata


def pairs_of(flat: list[Any]) -> Iterator[tuple[Any, Any]]:
    """``[a, b, c, d]`` -> ``(a, b), (c, d)``: the shape of a flat Redis reply."""
    it = iter(flat)
    return zip(it, it, strict=True)


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


def encode_event(event: CheckpointEvent) -> bytes:
    """A checkpoint event as the JSON the store publishes."""
    return orjson.dumps(
        {
            "kind": event.kind,
            "workflow_id": event.workflow_id,
            "run_id": event.run_id,
            "super_step": event.super_step,
            "label": event.label,
            "timestamp_ms": event.timestamp_ms,
            "source_run_id": event.source_run_id,
        }
    )


def decode_event(data: bytes) -> CheckpointEvent | None:
    """The event published as ``data``, or None when it is not one of ours."""
    try:
        raw = orjson.loads(data)
        return CheckpointEvent(
            raw["kind"],
            raw["workflow_id"],
            raw["run_id"],
            raw["super_step"],
            raw["label"],
            raw["timestamp_ms"],
            raw.get("source_run_id"),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


def write_token(fields: Iterable[bytes], lease: Lease | None) -> str:
    """A token naming one exclusive write: the same snapshot (and lease) gives the same token,
    so a save sent again after a lost reply finds its own write instead of a conflict."""
    hasher = hashlib.blake2b(digest_size=8)
    for field in fields:
        hasher.update(len(field).to_bytes(4, "big"))
        hasher.update(field)
    hasher.update(b"" if lease is None else str(lease.token).encode())
    return hasher.hexdigest()
