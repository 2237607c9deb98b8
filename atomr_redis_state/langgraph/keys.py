"""Every Redis key of the LangGraph saver is built here.

Layout (``P`` = prefix, ``B`` = the thread's bucket, two hex digits, ``T`` = escaped thread id,
``R`` = escaped run id; ``|`` below stands for the separator byte ``\\0``)::

    P:lg:{B}:t:T:cps   sorted set (scores 0, lex order): ns|checkpoint_id, one per checkpoint
    P:lg:{B}:t:T:cp    hash: ns|checkpoint_id -> run \\2 refs \\2 type|serialized checkpoint
    P:lg:{B}:t:T:b     hash: ns|channel|version -> type|serialized value (one per version)
    P:lg:{B}:t:T:w     sorted set (lex): ns|checkpoint_id|task|idx|channel|path|type|value
    P:lg:{B}:t:T:rm    sorted set (lex): run|ns|checkpoint_id, the checkpoints each run made
    P:lg:{B}:threads   sorted set: the bucket's thread ids, score = their deadline in ms (0 = none)
    P:lg:{B}:r:R       set: the bucket's thread ids that hold checkpoints of run R

The bucket is CRC32 of the thread id modulo :data:`BUCKETS`: every key of a thread, and the
index keys of its bucket, share one Redis Cluster slot, so each saver call on a thread is one
atomic script on a cluster too, and threads spread over every shard. Every part is escaped
(``%``, ``:``, ``{``, ``}``, ``\\0``, ``\\1``, ``\\2`` become ``%XX``), so ids never collide,
only the tag holds braces, and ``\\0``/``\\1``/``\\2`` separate fields unambiguously.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import unquote

from ..store.validation import check_prefix

BUCKETS = 256
"""How many slot tags threads are spread over. Changing it moves every thread's keys."""

_ESCAPES = str.maketrans(
    {
        "%": "%25",
        ":": "%3A",
        "{": "%7B",
        "}": "%7D",
        "\x00": "%00",
        "\x01": "%01",
        "\x02": "%02",
    }
)


_SPECIAL = re.compile("[%:{}\x00-\x02]")
_CACHE: dict[str, str] = {}
_CACHE_SIZE = 65_536


def escape(part: str) -> str:
    """Escape an id or name for use in a key or a stored field (memoised: channel names,
    namespaces and versions repeat on every call)."""
    escaped = _CACHE.get(part)
    if escaped is None:
        escaped = part.translate(_ESCAPES) if _SPECIAL.search(part) else part
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        _CACHE[part] = escaped
    return escaped


def unescape(part: str) -> str:
    """The inverse of :func:`escape`."""
    return unquote(part) if "%" in part else part


def bucket_of(thread_id: str) -> int:
    """The bucket (slot tag) of a thread."""
    return zlib.crc32(thread_id.encode("utf-8")) % BUCKETS


@dataclass(frozen=True, slots=True)
class ThreadKeys:
    """The keys of one thread, in the order the scripts take them."""

    keys: list[str]
    """The keys the scripts declare: the cps key and the thread's key prefix (the scripts derive
    the other keys from them)."""
    escaped: str
    """The escaped thread id, as stored in the indexes."""
    bucket: int


class LangGraphKeys:
    """Builds the keys of one tenant (``prefix``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = check_prefix(prefix)
        self.thread = lru_cache(maxsize=8192)(self._thread)

    def bucket_prefix(self, bucket: int) -> str:
        return f"{self.prefix}:lg:{{{bucket:02x}}}:"

    def _thread(self, thread_id: str) -> ThreadKeys:
        escaped = escape(thread_id)
        bucket = bucket_of(thread_id)
        head = self.bucket_prefix(bucket)
        base = f"{head}t:{escaped}:"
        return ThreadKeys([f"{base}cps", base], escaped, bucket)

    def run_key(self, bucket: int, run_id: str) -> str:
        """The run-index key of ``run_id`` in one bucket."""
        return f"{self.bucket_prefix(bucket)}r:{escape(run_id)}"

    def thread_indexes(self) -> list[str]:
        """The thread index of every bucket."""
        return [f"{self.bucket_prefix(b)}threads" for b in range(BUCKETS)]
