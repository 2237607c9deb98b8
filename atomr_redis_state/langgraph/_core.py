"""What the async and the sync saver share: arguments, replies, and each operation's steps.

Each operation is a generator that yields requests (a script call, independent script calls,
or a pipeline of plain commands) and receives their replies; :mod:`.aio` and :mod:`.sync` run
the same generators with an asyncio or a blocking client. So both savers behave identically and
the logic is written once.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from ..store.validation import ttl_to_ms
from .keys import BUCKETS, LangGraphKeys, escape, unescape

T = TypeVar("T")

_EMPTY = b"empty\x00"
_PAGE = 64
"""Checkpoints fetched per script call when a metadata filter is applied in Python."""

_RUNS_PER_CALL = 32
"""delete_for_runs sends the run-index keys of this many runs (x BUCKETS keys) per call."""

STRATEGIES = ("keep_latest", "delete")


_REFS: dict[tuple[str, Any], str] = {}


def _newest_first(item: CheckpointTuple) -> tuple[str, str, str]:
    """Sort key of a listed checkpoint: its id, then namespace and thread (sort reversed)."""
    conf = item.config["configurable"]
    return (conf["checkpoint_id"], conf["checkpoint_ns"], str(conf["thread_id"]))


def _id_and_ns(member: Any) -> tuple[bytes, bytes]:
    """The escaped checkpoint id and namespace of a cps member (``ns \\0 checkpoint_id``)."""
    ns, _, checkpoint_id = bytes(member).partition(b"\x00")
    return checkpoint_id, ns


def _ref(item: tuple[str, Any]) -> str:
    """``channel \\0 version`` of a ``(channel, version)`` item, escaped; memoised in
    :data:`_REFS` (a version stays in many checkpoints), which callers read first."""
    if len(_REFS) >= 65_536:
        _REFS.clear()
    channel, version = item
    ref = _REFS[item] = f"{escape(channel)}\x00{escape(str(version))}"
    return ref


_KINDS: dict[str, bytes] = {}


def _kind(kind: str) -> bytes:
    """``kind \\0``, the head of a stored value (memoised: serializers have few kinds)."""
    head = _KINDS.get(kind)
    if head is None:
        head = _KINDS[kind] = kind.encode() + b"\x00"
    return head


@dataclass(frozen=True, slots=True)
class Call:
    """Call script ``lg_<script>.lua``."""

    script: str
    keys: list[str]
    args: list[Any]


@dataclass(frozen=True, slots=True)
class Calls:
    """Independent script calls (each on one slot); the reply is their replies, in order."""

    calls: list[Call]


@dataclass(frozen=True, slots=True)
class Pipe:
    """Plain commands sent as one pipeline (across nodes on a cluster)."""

    commands: list[tuple[Any, ...]]


Request = Call | Calls | Pipe
Op = Generator[Request, Any, T]


Ttl = float | timedelta | Mapping[str, Any] | None
"""A saver's ``ttl=``: seconds, a timedelta, or langgraph-checkpoint-redis's dict form
``{"default_ttl": minutes}`` (see :func:`ttl_seconds`)."""

_TTL_KEYS = ("default_ttl", "refresh_on_read")


def ttl_seconds(ttl: Ttl) -> float | timedelta | None:
    """``ttl`` in seconds (or as a timedelta), from any :data:`Ttl` form.

    The dict form is langgraph-checkpoint-redis's: ``default_ttl`` in **minutes** (None or
    absent: no ttl). Its ``refresh_on_read=True`` is refused: here reads never move a thread's
    deadline, every write does."""
    if not isinstance(ttl, Mapping):
        return ttl
    unknown = sorted(str(key) for key in ttl if key not in _TTL_KEYS)
    if unknown:
        raise ValueError(f"unknown ttl setting(s) {unknown}: this saver takes {list(_TTL_KEYS)}")
    if ttl.get("refresh_on_read"):
        raise ValueError(
            "ttl refresh_on_read=True is not supported: reads never move a thread's deadline "
            "here, every write does (see the README's ttl notes)"
        )
    minutes = ttl.get("default_ttl")
    if minutes is None:
        return None
    if isinstance(minutes, bool) or not isinstance(minutes, int | float):
        raise TypeError(
            f"ttl default_ttl must be a number of minutes, not {type(minutes).__name__}"
        )
    return float(minutes) * 60.0


class RedisSaverCore(BaseCheckpointSaver[str]):
    """The shared part of :class:`.AsyncRedisStateSaver` and :class:`.RedisStateSaver`."""

    def __init__(
        self,
        *,
        prefix: str = "atomr",
        ttl: Ttl = None,
        serde: SerializerProtocol | None = None,
        cluster: bool = False,
    ) -> None:
        super().__init__(serde=serde)
        self.keys = LangGraphKeys(prefix)
        self.ttl_ms = ttl_to_ms(ttl_seconds(ttl))
        self.cluster = cluster
        self._ttl_arg = str(self.ttl_ms or 0)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prefix={self.keys.prefix!r}, ttl_ms={self.ttl_ms})"

    # Versions

    def get_next_version(self, current: str | None, channel: None) -> str:
        """The next version of a channel: the integer part counts up (16 digits, so versions
        compare as text), the random part (64 bits) makes versions unique per branch, so a fork
        or a replay never rewrites an older blob."""
        if current is None:
            number = 0
        elif isinstance(current, int | float):
            number = int(current)
        else:
            number = int(current.split(".", 1)[0])
        return f"{number + 1:016}.{random.getrandbits(64):016x}"

    # Values

    def _load(self, raw: bytes) -> Any:
        kind, _, data = raw.partition(b"\x00")
        return self.serde.loads_typed((kind.decode(), data))

    def _tuple(self, thread_id: Any, entry: list[Any]) -> CheckpointTuple:
        member, record, blobs, writes = entry
        ns_raw, _, id_raw = bytes(member).partition(b"\x00")
        ns = unescape(ns_raw.decode())
        checkpoint_id = unescape(id_raw.decode())
        _run, refs, payload = bytes(record).split(b"\x02", 2)
        skeleton, metadata, parent = self._load(payload)
        values: dict[str, Any] = {}
        if refs:
            for ref, raw in zip(refs.split(b"\x01"), blobs, strict=True):
                if raw is None or raw.startswith(_EMPTY):
                    continue
                values[unescape(ref.partition(b"\x00")[0].decode())] = self._load(raw)
        pending: list[tuple[tuple[str, str, int], PendingWrite]] = []
        for write in writes:
            _ns, _id, task, idx, channel, path, kind, data = bytes(write).split(b"\x00", 7)
            task_id = unescape(task.decode())
            pending.append(
                (
                    writes_sort_key(unescape(path.decode()), task_id, int(idx)),
                    (
                        task_id,
                        unescape(channel.decode()),
                        self.serde.loads_typed((kind.decode(), data)),
                    ),
                )
            )
        pending.sort(key=lambda item: item[0])
        return CheckpointTuple(
            config={
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": ns,
                    "checkpoint_id": checkpoint_id,
                }
            },
            checkpoint=cast(Checkpoint, {**skeleton, "channel_values": values}),
            metadata=cast(CheckpointMetadata, metadata),
            parent_config=(
                {
                    "configurable": {
                        "thread_id": thread_id,
                        "checkpoint_ns": ns,
                        "checkpoint_id": parent,
                    }
                }
                if parent
                else None
            ),
            pending_writes=[write for _, write in pending],
        )

    # Operations

    def _get_call(self, config: RunnableConfig) -> Call:
        """The script call that reads the checkpoint ``config`` names (its newest without an id)."""
        conf = config["configurable"]
        thread = self.keys.thread(str(conf["thread_id"]))
        ns = escape(conf.get("checkpoint_ns", ""))
        checkpoint_id = get_checkpoint_id(config)
        member = f"{ns}\x00{escape(checkpoint_id)}" if checkpoint_id else ""
        return Call("get", thread.keys, [ns, member])

    def _got(self, config: RunnableConfig, reply: Any) -> CheckpointTuple | None:
        """The checkpoint tuple of a ``get`` call's reply."""
        if not reply:
            return None
        return self._tuple(config["configurable"]["thread_id"], reply)

    def _op_get_tuple(self, config: RunnableConfig) -> Op[CheckpointTuple | None]:
        reply = yield self._get_call(config)
        return self._got(config, reply)

    def _op_list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> Op[list[CheckpointTuple]]:
        if limit is not None and limit <= 0:
            return []
        before_id = get_checkpoint_id(before) if before else None
        if config is not None:
            conf = config["configurable"]
            return (
                yield from self._op_list_thread(
                    conf["thread_id"],
                    conf.get("checkpoint_ns"),
                    get_checkpoint_id(config),
                    before_id,
                    filter,
                    limit,
                )
            )
        pages = yield Pipe([("ZRANGE", index, 0, -1) for index in self.keys.thread_indexes()])
        threads = sorted({unescape(bytes(t).decode()) for page in pages for t in page})
        found: list[CheckpointTuple] = []
        for thread in threads:
            found += yield from self._op_list_thread(thread, None, None, before_id, filter, limit)
        found.sort(key=_newest_first, reverse=True)
        return found if limit is None else found[:limit]

    def _op_list_thread(
        self,
        thread_id: Any,
        ns: str | None,
        checkpoint_id: str | None,
        before_id: str | None,
        filter: dict[str, Any] | None,
        limit: int | None,
    ) -> Op[list[CheckpointTuple]]:
        """A thread's checkpoints in namespace ``ns`` (every namespace when None), newest
        (highest checkpoint id) first.

        The script returns each namespace's newest ``page`` checkpoints below a bound. Without a
        ``filter`` one page of ``limit`` per namespace holds the newest ``limit`` overall. With
        one, pages of at least :data:`_PAGE` follow each other: what a page shows above the
        lowest checkpoint id that a full namespace page reached is complete, and the next page
        starts at that id."""
        thread = self.keys.thread(str(thread_id))
        head = ["", "1"] if ns is None else [escape(ns), "0"]
        only = escape(checkpoint_id) if checkpoint_id else ""
        bound = f"({escape(before_id)}" if before_id else ""
        found: list[CheckpointTuple] = []
        while True:
            wanted = None if limit is None else limit - len(found)
            page = (wanted or 0) if not filter or wanted is None else max(wanted, _PAGE)
            reply = yield Call("list", thread.keys, [*head, bound, str(page), only])
            entries = [(*_id_and_ns(entry[0]), entry) for entry in reply]
            reached = None
            if filter and page:
                counts = Counter(ns_e for _, ns_e, _ in entries)
                # Per namespace the reply is newest first: the last entry is its lowest id.
                lowest = {ns_e: id_e for id_e, ns_e, _ in entries}
                full = [lowest[ns_e] for ns_e, count in counts.items() if count >= page]
                reached = max(full, default=None)
            entries.sort(key=lambda item: item[:2], reverse=True)
            for id_e, _, entry in entries:
                if reached is not None and id_e <= reached:
                    break
                item = self._tuple(thread_id, entry)
                if filter and not all(
                    item.metadata.get(key) == value for key, value in filter.items()
                ):
                    continue
                found.append(item)
                if limit is not None and len(found) >= limit:
                    return found
            if reached is None:
                return found
            bound = "[" + reached.decode()

    def _op_put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Op[RunnableConfig]:
        call, stored = self._put_call(config, checkpoint, metadata, new_versions)
        yield call
        return stored

    def _put_call(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> tuple[Call, RunnableConfig]:
        """The script call that stores a checkpoint, and the config naming it."""
        conf = config["configurable"]
        thread_id = conf["thread_id"]
        thread = self.keys.thread(str(thread_id))
        ns = conf.get("checkpoint_ns", "")
        ns_e = escape(ns)
        skeleton: dict[str, Any] = dict(checkpoint)
        values = skeleton.pop("channel_values")
        meta = get_serializable_checkpoint_metadata(config, metadata)
        run = meta.get("run_id")
        run_e = "" if run is None else escape(str(run))
        known = _REFS
        refs = "\x01".join(
            [known.get(item) or _ref(item) for item in checkpoint["channel_versions"].items()]
        )
        dumps = self.serde.dumps_typed
        kind, data = dumps([skeleton, meta, conf.get("checkpoint_id")])
        record = b"".join((f"{run_e}\x02{refs}\x02".encode(), _kind(kind), data))
        args: list[Any] = [
            self._ttl_arg,
            thread.escaped,
            f"{ns_e}\x00{escape(checkpoint['id'])}",
            run_e,
            record,
        ]
        head = ns_e + "\x00"
        for item in new_versions.items():
            args.append((head + (known.get(item) or _ref(item))).encode())
            if item[0] in values:
                kind, data = dumps(values[item[0]])
                args.append(_kind(kind) + data)
            else:
                args.append(_EMPTY)
        stored: RunnableConfig = {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint["id"],
            }
        }
        return Call("put", thread.keys, args), stored

    def _op_put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> Op[None]:
        call = self._put_writes_call(config, writes, task_id, task_path)
        if call is not None:
            yield call
        return None

    def _put_writes_call(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> Call | None:
        """The script call that stores a task's writes (None when there are none)."""
        if not writes:
            return None
        conf = config["configurable"]
        thread = self.keys.thread(str(conf["thread_id"]))
        ns_e = escape(conf.get("checkpoint_ns", ""))
        task_head = escape(task_id) + "\x00"
        tail = f"\x00{escape(task_path)}\x00"
        dumps = self.serde.dumps_typed
        args: list[Any] = [
            self._ttl_arg,
            thread.escaped,
            f"{ns_e}\x00{escape(conf['checkpoint_id'])}\x00",
        ]
        for idx, (channel, value) in enumerate(writes):
            kind, data = dumps(value)
            key = f"{task_head}{WRITES_IDX_MAP.get(channel, idx)}\x00{escape(channel)}{tail}"
            args.append(key.encode() + _kind(kind) + data)
        return Call("put_writes", thread.keys, args)

    def _op_prune(self, thread_ids: Sequence[str], strategy: str) -> Op[None]:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
        groups: dict[int, tuple[list[str], list[str]]] = {}
        for thread_id in dict.fromkeys(str(t) for t in thread_ids):
            thread = self.keys.thread(thread_id)
            bucket = thread.bucket if self.cluster else 0
            keys, args = groups.setdefault(bucket, ([], [strategy]))
            keys += thread.keys
            args.append(thread.escaped)
        calls = [Call("prune", keys, args) for keys, args in groups.values()]
        if calls:
            yield Calls(calls) if len(calls) > 1 else calls[0]
        return None

    def _op_delete_for_runs(self, run_ids: Sequence[str]) -> Op[None]:
        runs = [str(run_id) for run_id in dict.fromkeys(run_ids)]
        for first in range(0, len(runs), _RUNS_PER_CALL):
            keys = [
                self.keys.run_key(bucket, run_id)
                for run_id in runs[first : first + _RUNS_PER_CALL]
                for bucket in range(BUCKETS)
            ]
            if not self.cluster:
                yield Call("delete_runs", keys, [])
                continue
            exists = yield Pipe([("EXISTS", key) for key in keys])
            by_bucket: dict[str, list[str]] = {}
            for key, found in zip(keys, exists, strict=True):
                if found:
                    by_bucket.setdefault(key[: key.index("}") + 1], []).append(key)
            if by_bucket:
                yield Calls([Call("delete_runs", group, []) for group in by_bucket.values()])
        return None

    def _op_copy_thread(self, source_thread_id: str, target_thread_id: str) -> Op[None]:
        source = self.keys.thread(str(source_thread_id))
        target = self.keys.thread(str(target_thread_id))
        if source == target:
            return None
        if not self.cluster or source.bucket == target.bucket:
            yield Call("copy", source.keys + target.keys, [self._ttl_arg, target.escaped])
            return None
        data = yield Call("export", source.keys, [])
        if not data[0]:
            return None
        yield Call(
            "import",
            target.keys,
            [self._ttl_arg, target.escaped, *(len(part) for part in data)]
            + [item for part in data for item in part],
        )
        return None
