"""What the inspector's API answers: store reads put together for one page each.

The JSON shapes of runs, checkpoints, snapshots, diffs, fork trees and events come from the
shared view layer; this module only gathers what a page needs in one request (a page of runs
with their statuses, a run with its lineage) and pages big values (see :mod:`.tree`).
"""

from __future__ import annotations

import asyncio
import io
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

import orjson

from ..errors import RunNotFoundError, RunNotPausedError, UnknownChannelError
from ..graph.outcomes import RunStatus
from ..graph.progress import RECORD_KEY
from ..observability.runs import all_runs, is_fork, lineage_forks, summarise_run
from ..store.checkpointer import Checkpointer
from ..store.ids import lineage_root
from ..store.types import JSON, CheckpointEvent, CheckpointKey, CheckpointMeta, Snapshot
from . import tree

FORMAT_VERSION = 1
"""The version of this API's JSON (bumped when a shape changes incompatibly)."""

CONCURRENCY = 16
"""Store reads one request makes at once (statuses of a page of runs, say)."""

SCAN_LIMIT = 2_000
"""Runs a filtered listing looks at per request before it hands back a cursor."""

COUNT_LIMIT = 10_000
"""Runs the live counts look at; a bigger workflow's counts say they are partial."""

LINEAGE_LIMIT = 500
"""Runs of one lineage drawn in a fork tree."""

FORK_LABEL = "fork-of:"

T = TypeVar("T")

Resume = Callable[[Checkpointer, str, str, JSON], Awaitable[object]]


async def _gather_limited(work: Sequence[Awaitable[T]]) -> list[T]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(item: Awaitable[T]) -> T:
        async with gate:
            return await item

    return list(await asyncio.gather(*(one(item) for item in work)))


def status_json(status: RunStatus) -> dict[str, JSON]:
    pause, lease, error = status.pause, status.lease, status.last_error
    return {
        "run_id": status.run_id,
        "state": status.state,
        "fork": is_fork(status.run_id),
        "super_step": status.super_step,
        "label": status.label,
        "updated_at_ms": status.updated_at_ms,
        "pause": None
        if pause is None
        else {
            "step": pause.step,
            "kind": pause.kind,
            "payload": pause.payload,
            "layer": pause.layer,
        },
        "lease": None
        if lease is None
        else {"owner": lease.owner, "expires_at_ms": lease.expires_at_ms, "token": lease.token},
        "last_error": None
        if error is None
        else {
            "step": error.step,
            "error_type": error.error_type,
            "message": error.message,
            "attempts": error.attempts,
            "super_step": error.super_step,
            "at_ms": error.at_ms,
        },
    }


def event_json(event: CheckpointEvent) -> JSON:
    return {
        "kind": event.kind,
        "workflow_id": event.workflow_id,
        "run_id": event.run_id,
        "super_step": event.super_step,
        "label": event.label,
        "timestamp_ms": event.timestamp_ms,
        "source_run_id": event.source_run_id,
    }


async def workflows(
    store: Checkpointer, known: Sequence[str], *, after: str | None, limit: int
) -> JSON:
    """The workflows under the store's prefix (with ``known`` ones added)."""
    listed: list[str] = []
    lister = getattr(store, "list_workflows", None)
    if lister is not None:
        listed = await lister(limit=limit, after=after)
    names = sorted({*listed, *(w for w in known if after is None or w > after)})[:limit]
    more = len(listed) >= limit
    return {
        "format": FORMAT_VERSION,
        "workflows": [{"workflow_id": name} for name in names],
        "next_after": names[-1] if more and names else None,
        "listable": lister is not None,
    }


async def runs_page(
    store: Checkpointer,
    workflow_id: str,
    *,
    states: Sequence[str],
    query: str,
    after: str | None,
    limit: int,
) -> JSON:
    """Runs in id order from ``after``, with their statuses, keeping those in ``states`` whose
    id contains ``query``; ``next_after`` continues (also when a filter scanned its limit)."""
    filtered = bool(states or query)
    found: list[JSON] = []
    scanned = 0
    cursor = after
    more = True
    while len(found) < limit and scanned < SCAN_LIMIT:
        want = 200 if filtered else limit - len(found)
        page = await store.list_runs(workflow_id, limit=want, after=cursor)
        scanned += len(page)
        wanted = [r for r in page if query.lower() in r.lower()]
        statuses = dict(
            zip(
                wanted,
                await _gather_limited([summarise_run(store, workflow_id, r) for r in wanted]),
                strict=True,
            )
        )
        for run_id in page:
            cursor = run_id
            status = statuses.get(run_id)
            if status is not None and (not states or status.state in states):
                found.append(status_json(status))
                if len(found) >= limit:
                    break
        if len(page) < want and (not page or cursor == page[-1]):
            more = False
            break
    if more and cursor is not None:
        more = bool(await store.list_runs(workflow_id, limit=1, after=cursor))
    return {
        "format": FORMAT_VERSION,
        "workflow_id": workflow_id,
        "runs": found,
        "next_after": cursor if more else None,
        "scanned": scanned,
    }


async def counts(store: Checkpointer, workflow_id: str) -> JSON:
    """How many runs of the workflow are in each state (the first :data:`COUNT_LIMIT`)."""
    run_ids: list[str] = []
    async for run_id in all_runs(store, workflow_id):
        run_ids.append(run_id)
        if len(run_ids) > COUNT_LIMIT:
            break
    partial = len(run_ids) > COUNT_LIMIT
    statuses = await _gather_limited(
        [summarise_run(store, workflow_id, r) for r in run_ids[:COUNT_LIMIT]]
    )
    by_state: dict[str, int] = {}
    forks = 0
    for status in statuses:
        by_state[status.state] = by_state.get(status.state, 0) + 1
        forks += is_fork(status.run_id)
    return {
        "format": FORMAT_VERSION,
        "workflow_id": workflow_id,
        "total": len(statuses),
        "states": dict(by_state),
        "forks": forks,
        "partial": partial,
    }


async def run(store: Checkpointer, workflow_id: str, run_id: str) -> JSON:
    """The run's status and its fork origin."""
    status = await summarise_run(store, workflow_id, run_id)
    if status.state == "not_found":
        raise RunNotFoundError(workflow_id, run_id)
    first = await store.list(workflow_id, run_id, limit=None)
    origin = _origin(first)
    return {
        "format": FORMAT_VERSION,
        "workflow_id": workflow_id,
        "status": status_json(status),
        "checkpoints": len(first),
        "fork_of": origin,
    }


def _origin(metas: Sequence[CheckpointMeta]) -> JSON:
    """Where a fork came from: its first checkpoint's label names the source run."""
    if not metas or not metas[0].label.startswith(FORK_LABEL):
        return None
    return {"run_id": metas[0].label[len(FORK_LABEL) :], "super_step": metas[0].super_step}


class _DoneCache:
    """The steps merged by each checkpoint (``runner.done``), by key and save time: reading
    them means loading the snapshot, so each is read once."""

    def __init__(self, size: int = 8_192) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[str, str, int, int], tuple[str, ...] | None] = OrderedDict()

    async def get(self, store: Checkpointer, meta: CheckpointMeta) -> tuple[str, ...] | None:
        key = (meta.workflow_id, meta.run_id, meta.super_step, meta.timestamp_ms)
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        snapshot = await store.load(meta.key)
        done = None if snapshot is None else _done(snapshot)
        self.entries[key] = done
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)
        return done


def _done(snapshot: Snapshot) -> tuple[str, ...] | None:
    record = snapshot.metadata.get(RECORD_KEY)
    if not isinstance(record, dict) or not isinstance(record.get("done"), list):
        return None
    done = record["done"]
    assert isinstance(done, list)
    return tuple(name for name in done if isinstance(name, str))


_done_cache = _DoneCache()


async def history(
    store: Checkpointer, workflow_id: str, run_id: str, *, before: int | None, limit: int | None
) -> JSON:
    """The run's checkpoints (newest ``limit`` below ``before``), each with the steps its
    layer ran (what the runner merged since the checkpoint before)."""
    metas = await store.list(
        workflow_id, run_id, limit=None if limit is None else limit + 1, before=before
    )
    if not metas and not await store.list(workflow_id, run_id, limit=1):
        raise RunNotFoundError(workflow_id, run_id)
    dones = await _gather_limited([_done_cache.get(store, m) for m in metas])
    has_previous = limit is not None and len(metas) > limit
    rows: list[JSON] = []
    for index, meta in enumerate(metas):
        if has_previous and index == 0:
            continue
        previous = dones[index - 1] if index > 0 else ()
        rows.append(
            {
                "super_step": meta.super_step,
                "label": meta.label,
                "timestamp_ms": meta.timestamp_ms,
                "ran": _ran(previous, dones[index]),
                "fork_of": _origin([meta]) if index == 0 else None,
            }
        )
    return {
        "format": FORMAT_VERSION,
        "workflow_id": workflow_id,
        "run_id": run_id,
        "checkpoints": rows,
        "before": metas[1].super_step if has_previous else None,
    }


def _ran(previous: tuple[str, ...] | None, done: tuple[str, ...] | None) -> JSON:
    if done is None:
        return None
    earlier = set(previous or ())
    return [name for name in done if name not in earlier]


async def _snapshot(
    store: Checkpointer, workflow_id: str, run_id: str, step: int | None
) -> Snapshot:
    if step is None:
        found = await store.latest(workflow_id, run_id)
        if found is None:
            raise RunNotFoundError(workflow_id, run_id)
        return found
    loaded = await store.load(CheckpointKey(workflow_id, run_id, step))
    if loaded is None:
        if not await store.list(workflow_id, run_id, limit=1):
            raise RunNotFoundError(workflow_id, run_id)
        raise LookupError(f"run {run_id!r} of workflow {workflow_id!r} has no super-step {step}")
    return loaded


async def state(
    store: Checkpointer,
    workflow_id: str,
    run_id: str,
    step: int | None,
    *,
    part: str,
    path: Sequence[str | int],
    offset: int,
    full: bool,
) -> JSON:
    """A snapshot's channels (``part="values"``) or metadata, as a tree node at ``path``."""
    if part not in ("values", "metadata"):
        raise ValueError("part must be 'values' or 'metadata'")
    snapshot = await _snapshot(store, workflow_id, run_id, step)
    root: JSON = dict(sorted((snapshot.values if part == "values" else snapshot.metadata).items()))
    return {
        "format": FORMAT_VERSION,
        "workflow_id": workflow_id,
        "run_id": run_id,
        "super_step": snapshot.key.super_step,
        "label": snapshot.label,
        "timestamp_ms": snapshot.timestamp_ms,
        "path": list(path),
        "node": tree.node(tree.resolve(root, path), offset=offset, full=full),
    }


async def diff(
    store: Checkpointer,
    workflow_id: str,
    a: tuple[str, int | None],
    b: tuple[str, int | None],
) -> JSON:
    """The changes from checkpoint ``a`` to ``b`` (each a run and a step, None: the latest)."""
    from ..cli.diff import diff_channels

    old, new = await asyncio.gather(
        _snapshot(store, workflow_id, *a), _snapshot(store, workflow_id, *b)
    )
    changes = diff_channels(old.values, new.values)
    return {
        "format": FORMAT_VERSION,
        "workflow_id": workflow_id,
        "from": {"run_id": a[0], "super_step": old.key.super_step, "label": old.label},
        "to": {"run_id": b[0], "super_step": new.key.super_step, "label": new.label},
        "changes": [change.to_json() for change in changes],
    }


async def lineage(store: Checkpointer, workflow_id: str, run_id: str) -> JSON:
    """The fork tree of ``run_id``'s lineage: the root run, its forks, theirs, with states."""
    root = lineage_root(run_id)
    others = await lineage_forks(store, workflow_id, run_id)
    members = list(dict.fromkeys([root, run_id, *others]))[:LINEAGE_LIMIT]
    metas = await _gather_limited([store.list(workflow_id, r) for r in members])
    statuses = await _gather_limited([summarise_run(store, workflow_id, r) for r in members])
    nodes: dict[str, dict[str, JSON]] = {}
    for member, member_metas, status in zip(members, metas, statuses, strict=True):
        origin = _origin(member_metas)
        nodes[member] = {
            "run_id": member,
            "state": status.state,
            "super_step": status.super_step,
            "fork_of": origin,
            "current": member == run_id,
            "children": [],
        }
    for member, node in nodes.items():
        if member == root:
            continue
        origin = node["fork_of"]
        parent = origin["run_id"] if isinstance(origin, dict) else root
        if not isinstance(parent, str) or parent not in nodes or parent == member:
            parent = root
        children = nodes[parent]["children"]
        assert isinstance(children, list)
        children.append(node)
    return {
        "format": FORMAT_VERSION,
        "workflow_id": workflow_id,
        "tree": nodes[root],
        "size": len(nodes),
        "partial": len(others) + 1 > LINEAGE_LIMIT,
    }


async def export_lines(
    store: Checkpointer, workflow_id: str, run_id: str, *, forks: bool
) -> list[bytes]:
    """The run (and with ``forks`` its lineage) in the ``export`` command's JSON Lines."""
    from ..cli.transfer import HEADER, _export_run

    if not await store.list(workflow_id, run_id, limit=1):
        raise RunNotFoundError(workflow_id, run_id)
    run_ids = [run_id]
    if forks:
        run_ids = sorted({run_id, *await lineage_forks(store, workflow_id, run_id)})
    sink = io.BytesIO()
    sink.write(orjson.dumps(HEADER) + b"\n")
    for member in run_ids:
        await _export_run(store, workflow_id, member, sink)
    return [sink.getvalue()]


async def answer(
    store: Checkpointer, resume: Resume, workflow_id: str, run_id: str, value: JSON
) -> JSON:
    """Answer the run's pause with ``value`` through ``resume``; the run's status after."""
    status = await summarise_run(store, workflow_id, run_id)
    if status.state == "not_found":
        raise RunNotFoundError(workflow_id, run_id)
    if status.pause is None:
        raise RunNotPausedError(f"run {run_id!r} of workflow {workflow_id!r} is not paused")
    await resume(store, workflow_id, run_id, value)
    return {
        "format": FORMAT_VERSION,
        "status": status_json(await summarise_run(store, workflow_id, run_id)),
    }


async def fork(
    store: Checkpointer, workflow_id: str, run_id: str, step: int, edits: Mapping[str, JSON]
) -> JSON:
    """Fork ``step`` of the run with ``edits`` to channels the checkpoint has."""
    source = await _snapshot(store, workflow_id, run_id, step)
    for channel in edits:
        if channel not in source.values:
            raise UnknownChannelError(channel, sorted(source.values))
    new_run = await store.fork(source.key, dict(edits))
    return {
        "format": FORMAT_VERSION,
        "workflow_id": workflow_id,
        "run_id": new_run,
        "from": {"run_id": run_id, "super_step": step},
    }
