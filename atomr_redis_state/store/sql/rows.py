"""How the SQL stores lay a snapshot out in a row, and read it back.

A snapshot's channels are one JSON object, kept as the exact text the codec wrote (each value's
own encoding, byte for byte), beside the label, the timestamp and the metadata in columns of
their own. Reading parses that object once into the snapshot's values
(:class:`~..checkpointer.Decoded`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from ..checkpointer import Decoded, Fields
from ..codec import LABEL_FIELD, METADATA_FIELD, TIMESTAMP_FIELD, channel_name

NUL_ESCAPE = b"\\u0000"
"""How JSON writes the character U+0000, which Postgres's ``jsonb`` cannot hold."""


@dataclass(frozen=True, slots=True)
class Row:
    """A snapshot's columns: channels (a JSON object's text), label, timestamp, metadata."""

    channels: bytes
    label: str
    timestamp_ms: int
    metadata: bytes | None

    @property
    def jsonb_safe(self) -> bool:
        """False when the channels hold U+0000 somewhere, which ``jsonb`` refuses."""
        return NUL_ESCAPE not in self.channels


def row_of(fields: Fields) -> Row:
    """The columns of a flat ``[field, value, ...]`` list of encoded snapshot fields."""
    parts: list[bytes] = []
    label, timestamp_ms, metadata = "", 0, None
    for i in range(0, len(fields), 2):
        field, value = fields[i], fields[i + 1]
        name = channel_name(field)
        if name is not None:
            parts.append(orjson.dumps(name) + b":" + value)
        elif field == LABEL_FIELD:
            label = value.decode("utf-8")
        elif field == TIMESTAMP_FIELD:
            timestamp_ms = int(value)
        elif field == METADATA_FIELD:
            metadata = value
    return Row(b"{" + b",".join(parts) + b"}", label, timestamp_ms, metadata)


def merged_channels(channels: bytes | str, edits: bytes) -> bytes:
    """The channels object ``channels`` with the channels of ``edits`` set over it."""
    merged = orjson.loads(channels)
    merged.update(orjson.loads(edits))
    return orjson.dumps(merged)


def decoded_of(
    channels: bytes | str, label: str, timestamp_ms: int, metadata: bytes | str | None
) -> Decoded:
    """A row's snapshot, decoded: the channels column is one JSON object, parsed once."""
    meta = {} if metadata is None else orjson.loads(metadata)
    return Decoded(orjson.loads(channels), label, timestamp_ms, meta)


def check_no_nul(values: Sequence[str], what: str) -> None:
    """Refuse the character U+0000 in text the database keeps as text (Postgres cannot)."""
    for value in values:
        if "\x00" in value:
            raise ValueError(f"{what} must not contain the character U+0000: {value!r}")
