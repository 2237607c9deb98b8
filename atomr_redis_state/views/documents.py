"""The JSON documents the operator tools show: built from the store, shared by CLI and web UI.

Every document is a plain ``dict`` of JSON values with ``format_version`` (bumped whenever a
field changes meaning or goes away; new fields may appear without a bump) and ``kind``. The
builders take a :class:`Checkpointer` and read only what they need; none of them writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from ..errors import (
    AtomrStateError,
    CheckpointNotFoundError,
    RunNotFoundError,
    UnknownChannelError,
)
from ..graph.outcomes import RunStatus
from ..graph.progress import Progress
from ..observability.runs import is_fork, lineage_forks, summarise_run
from ..store.checkpointer import Checkpointer
from ..store.ids import FORK_LABEL, lineage_root
from ..store.types import JSON, CheckpointEvent, CheckpointKey, CheckpointMeta, Snapshot
from .diff import diff_channels

FORMAT_VERSION = 1
"""The version of every document's shape (``format_version``)."""

STEPS_READ_LIMIT = 100
"""Checkpoints of a history page whose steps are read (each is loaded whole to read them)."""

READ_CONCURRENCY = 16
"""Store reads a document makes at once (statuses of a page of runs, snapshots of a page)."""

BADGE_TONES: dict[str, str] = {
    "running": "active",
    "queued": "waiting",
    "blocked": "waiting",
    "paused": "attention",
    "stalled": "warning",
    "failed": "danger",
    "completed": "success",
    "forked": "neutral",
    "idle": "neutral",
    "cancelled": "muted",
    "not_found": "muted",
}
"""How each run state looks, by meaning (``active``, ``waiting``, ``attention``, ``warning``,
``danger``, ``success``, ``neutral``, ``muted``): the CLI colours and the UI badges follow it."""

T = TypeVar("T")

Document = dict[str, Any]
"""A JSON object (values typed ``Any`` so that front ends can index into it; every value is
plain JSON: str, int, float, bool, None, list or dict)."""


def check_fork_edits(source: Snapshot, channels: Iterable[str]) -> None:
    """Refuse edits of channels the snapshot to fork does not have (a typo would otherwise
    make a fork with a stray channel): :class:`UnknownChannelError` names the ones it has.
    A snapshot with no channels at all says nothing about them, and is not checked."""
    if not source.values:
        return
    for channel in channels:
        if channel not in source.values:
            raise UnknownChannelError(
                channel, sorted(source.values), declared_by="the checkpoint to fork has"
            )


def fork_source(label: str) -> str | None:
    """The run a checkpoint was forked from, from its label; None for any other checkpoint."""
    return label[len(FORK_LABEL) :] if label.startswith(FORK_LABEL) else None


def badge(state: str) -> Document:
    """The badge of a run state: its text and its tone (see :data:`BADGE_TONES`)."""
    return {"state": state, "tone": BADGE_TONES.get(state, "neutral")}


def status_detail(status: RunStatus) -> str:
    """What a human wants to know beside the state: the pause, the failure, the lease."""
    parts = []
    if status.pause is not None:
        parts.append(f"paused at {status.pause.step} ({status.pause.kind})")
    if status.last_error is not None:
        e = status.last_error
        parts.append(f"{e.step} failed: {e.error_type} after {e.attempts} attempt(s)")
    if status.lease is not None:
        parts.append(f"leased by {status.lease.owner}")
    return "; ".join(parts)


def run_json(status: RunStatus) -> Document:
    """One run as a JSON object: its state and badge, latest checkpoint, pause, lease, error.

    ``fork`` is True for a run made by ``fork``; ``fork_of`` names its source only while its
    latest checkpoint is still the copy (``history_view`` and ``fork_tree_view`` have it for
    any fork); ``lineage_root`` is the run its lineage started from.
    """
    pause = status.pause
    lease = status.lease
    error = status.last_error
    return {
        "run_id": status.run_id,
        "state": status.state,
        "badge": badge(status.state),
        "detail": status_detail(status),
        "fork": is_fork(status.run_id),
        "fork_of": None if status.label is None else fork_source(status.label),
        "lineage_root": lineage_root(status.run_id),
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


def snapshot_json(snapshot: Snapshot) -> Document:
    """A snapshot as a JSON object (channels in name order), with ``format_version``."""
    key = snapshot.key
    return {
        "format_version": FORMAT_VERSION,
        "kind": "snapshot",
        "workflow_id": key.workflow_id,
        "run_id": key.run_id,
        "super_step": key.super_step,
        "label": snapshot.label,
        "timestamp_ms": snapshot.timestamp_ms,
        "fork_of": fork_source(snapshot.label),
        "values": dict(sorted(snapshot.values.items())),
        "metadata": snapshot.metadata,
    }


def event_json(event: CheckpointEvent) -> Document:
    """A watch event as a JSON object, with ``format_version``."""
    return {
        "format_version": FORMAT_VERSION,
        "kind": event.kind,
        "workflow_id": event.workflow_id,
        "run_id": event.run_id,
        "super_step": event.super_step,
        "label": event.label,
        "timestamp_ms": event.timestamp_ms,
        "source_run_id": event.source_run_id,
    }


async def gather_limited(
    work: Callable[[T], Awaitable[Any]], items: Iterable[T], limit: int = READ_CONCURRENCY
) -> list[Any]:
    """``work`` on every item, at most ``limit`` at once, results in item order."""
    gate = asyncio.Semaphore(limit)

    async def one(item: T) -> Any:
        async with gate:
            return await work(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


async def workflows_view(
    store: Checkpointer, *, limit: int = 100, after: str | None = None
) -> Document:
    """A page of the workflows with live runs under the store's prefix (``kind: workflows``),
    in id order; ``next_after`` is the ``after`` of the next page (None on the last)."""
    page = await store.list_workflows(limit=limit + 1, after=after)
    more = len(page) > limit
    page = page[:limit]
    return {
        "format_version": FORMAT_VERSION,
        "kind": "workflows",
        "workflows": [{"workflow_id": workflow_id} for workflow_id in page],
        "next_after": page[-1] if more else None,
    }


async def run_view(store: Checkpointer, workflow_id: str, run_id: str) -> Document:
    """One run's status (``kind: run``): state, badge, pause payload, lease holder, last error."""
    status = await summarise_run(store, workflow_id, run_id)
    return {
        "format_version": FORMAT_VERSION,
        "kind": "run",
        "workflow_id": workflow_id,
        **run_json(status),
    }


async def runs_view(
    store: Checkpointer, workflow_id: str, *, limit: int = 50, after: str | None = None
) -> Document:
    """A page of a workflow's runs (``kind: runs``), in id order, each with its status.

    ``next_after`` is the ``after`` of the next page (None on the last); ``counts`` counts the
    page's runs by state.
    """
    page = await store.list_runs(workflow_id, limit=limit + 1, after=after)
    more = len(page) > limit
    page = page[:limit]
    statuses: list[RunStatus] = await gather_limited(
        lambda run_id: summarise_run(store, workflow_id, run_id), page
    )
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status.state] = counts.get(status.state, 0) + 1
    return {
        "format_version": FORMAT_VERSION,
        "kind": "runs",
        "workflow_id": workflow_id,
        "runs": [run_json(status) for status in statuses],
        "counts": dict(counts),
        "next_after": page[-1] if more else None,
    }


async def load_snapshot(
    store: Checkpointer, workflow_id: str, run_id: str, super_step: int | None = None
) -> Snapshot:
    """The snapshot at ``super_step`` (the latest when None).

    Raises :class:`RunNotFoundError` when the run has no checkpoint, and
    :class:`CheckpointNotFoundError` (naming the steps the run has) when it lacks that step.
    """
    if super_step is None:
        latest = await store.latest(workflow_id, run_id)
        if latest is None:
            raise RunNotFoundError(workflow_id, run_id)
        return latest
    snapshot = await store.load(CheckpointKey(workflow_id, run_id, super_step))
    if snapshot is not None:
        return snapshot
    metas = await store.list(workflow_id, run_id)
    if not metas:
        raise RunNotFoundError(workflow_id, run_id)
    raise CheckpointNotFoundError(
        workflow_id, run_id, super_step, available=[m.super_step for m in metas]
    )


async def snapshot_view(
    store: Checkpointer, workflow_id: str, run_id: str, super_step: int | None = None
) -> Document:
    """The state of a run at a step (``kind: snapshot``; the latest step when None)."""
    return snapshot_json(await load_snapshot(store, workflow_id, run_id, super_step))


def _done_steps(snapshot: Snapshot | None) -> tuple[str, ...] | None:
    """The steps the runner had merged at ``snapshot``; None without a (valid) runner record."""
    if snapshot is None:
        return None
    try:
        progress = Progress.decode(snapshot.metadata, snapshot.key.super_step)
    except AtomrStateError:
        return None
    return None if progress is None else progress.done


def _ran_between(before: tuple[str, ...] | None, after: tuple[str, ...] | None) -> list[JSON]:
    """The steps merged between two checkpoints (the layer that produced ``after``)."""
    if after is None:
        return []
    if before is None or after[: len(before)] != before:
        return list(after) if before is None else [s for s in after if s not in set(before)]
    return list(after[len(before) :])


async def history_view(
    store: Checkpointer,
    workflow_id: str,
    run_id: str,
    *,
    limit: int | None = None,
    before: int | None = None,
    steps: bool = True,
) -> Document:
    """A run's timeline (``kind: history``): its checkpoints in step order.

    Each checkpoint has its label, save time, ``elapsed_ms`` since the checkpoint before it,
    ``fork_of`` (a fork's first checkpoint: the run it came from), ``forked_into`` (the forks
    made from it), and with ``steps`` the names of the steps its layer ran, from the runner's
    record (that reads the newest :data:`STEPS_READ_LIMIT` checkpoints of the page whole, the
    older ones get None; pass ``steps=False`` to read none).
    ``next_before`` pages back (None on the first page).
    """
    metas = await store.list(workflow_id, run_id, limit=limit, before=before)
    if not metas and not await store.list(workflow_id, run_id, limit=1):
        raise RunNotFoundError(workflow_id, run_id)
    forks = await forks_by_step(store, workflow_id, run_id)
    earlier = (
        await store.list(workflow_id, run_id, limit=1, before=metas[0].super_step) if metas else []
    )
    ran: list[list[JSON] | None] = [None] * len(metas)
    if steps and metas:
        first = max(0, len(metas) - STEPS_READ_LIMIT)
        chain = ([metas[first - 1]] if first > 0 else earlier) + metas[first:]
        snapshots: list[Snapshot | None] = await gather_limited(store.load, [m.key for m in chain])
        done = [_done_steps(s) for s in snapshots]
        offset = len(chain) - (len(metas) - first)
        for index in range(first, len(metas)):
            if fork_source(metas[index].label) is not None:
                ran[index] = []  # a fork's copy: no step ran to make it
                continue
            position = index - first + offset
            previous = done[position - 1] if position > 0 else ()
            ran[index] = _ran_between(previous, done[position])
    previous_ms = earlier[0].timestamp_ms if earlier else None
    rows: list[JSON] = []
    for meta, names in zip(metas, ran, strict=True):
        rows.append(_checkpoint_json(meta, previous_ms, forks.get(meta.super_step, []), names))
        previous_ms = meta.timestamp_ms
    return {
        "format_version": FORMAT_VERSION,
        "kind": "history",
        "workflow_id": workflow_id,
        "run_id": run_id,
        "fork": is_fork(run_id),
        "checkpoints": rows,
        "next_before": metas[0].super_step if earlier else None,
    }


def _checkpoint_json(
    meta: CheckpointMeta, previous_ms: int | None, forks: Sequence[str], ran: list[JSON] | None
) -> Document:
    return {
        "super_step": meta.super_step,
        "label": meta.label,
        "timestamp_ms": meta.timestamp_ms,
        "elapsed_ms": None if previous_ms is None else meta.timestamp_ms - previous_ms,
        "fork_of": fork_source(meta.label),
        "forked_into": list(forks),
        "steps": ran,
    }


async def forks_by_step(store: Checkpointer, workflow_id: str, run_id: str) -> dict[int, list[str]]:
    """The forks made from ``run_id``, by the super-step they were made from."""
    forks: dict[int, list[str]] = {}
    for other, origin in (await _origins(store, workflow_id, run_id)).items():
        if origin is not None and origin[0] == run_id:
            forks.setdefault(origin[1], []).append(other)
    return forks


async def _origins(
    store: Checkpointer, workflow_id: str, run_id: str
) -> dict[str, tuple[str, int] | None]:
    """Every other live fork of ``run_id``'s lineage, with the (run, step) it was forked from
    (None for a fork whose first checkpoint no longer says)."""
    others = [other for other in await lineage_forks(store, workflow_id, run_id) if is_fork(other)]

    async def origin(other: str) -> tuple[str, int] | None:
        first = await store.list(workflow_id, other)
        if not first:
            return None
        source = fork_source(first[0].label)
        return None if source is None else (source, first[0].super_step)

    found = await gather_limited(origin, others)
    return dict(zip(others, found, strict=True))


async def fork_tree_view(store: Checkpointer, workflow_id: str, run_id: str) -> Document:
    """The lineage of a run (``kind: fork_tree``): its root, and every live fork of it.

    ``nodes`` lists each run once, root first: ``run_id``, ``parent`` (the run it was forked
    from; None for the root or when that is unknown), ``from_step`` (the super-step it was
    forked from), ``children`` (run ids), ``exists`` (False for a root that was deleted while
    forks of it live on), and ``current`` (the run asked about).
    """
    root = lineage_root(run_id)
    origins = await _origins(store, workflow_id, run_id)
    if is_fork(run_id):
        first = await store.list(workflow_id, run_id)
        if not first:
            raise RunNotFoundError(workflow_id, run_id)
        source = fork_source(first[0].label)
        origins[run_id] = None if source is None else (source, first[0].super_step)
    root_exists = bool(await store.list(workflow_id, root, limit=1))
    if not root_exists and not is_fork(run_id):
        raise RunNotFoundError(workflow_id, run_id)
    children: dict[str, list[str]] = {root: []}
    for fork in sorted(origins):
        children.setdefault(fork, [])
    for fork in sorted(origins):
        origin = origins[fork]
        if origin is not None and origin[0] in children:
            children[origin[0]].append(fork)
    nodes: list[JSON] = [
        {
            "run_id": root,
            "parent": None,
            "from_step": None,
            "children": list(children[root]),
            "exists": root_exists,
            "current": root == run_id,
        }
    ]
    for fork in sorted(origins):
        origin = origins[fork]
        nodes.append(
            {
                "run_id": fork,
                "parent": None if origin is None or origin[0] not in children else origin[0],
                "from_step": None if origin is None else origin[1],
                "children": list(children[fork]),
                "exists": True,
                "current": fork == run_id,
            }
        )
    return {
        "format_version": FORMAT_VERSION,
        "kind": "fork_tree",
        "workflow_id": workflow_id,
        "run_id": run_id,
        "root": root,
        "nodes": nodes,
    }


def _side(snapshot: Snapshot) -> Document:
    return {
        "run_id": snapshot.key.run_id,
        "super_step": snapshot.key.super_step,
        "label": snapshot.label,
        "timestamp_ms": snapshot.timestamp_ms,
    }


def diff_json(old: Snapshot, new: Snapshot) -> Document:
    """The changes between two snapshots (``kind: diff``), channel by channel and inside their
    values; a changed string carries ``string``, the region where it differs."""
    changes = diff_channels(old.values, new.values)
    return {
        "format_version": FORMAT_VERSION,
        "kind": "diff",
        "workflow_id": old.key.workflow_id,
        "from": _side(old),
        "to": _side(new),
        "changes": [change.to_json() for change in changes],
    }


async def diff_view(
    store: Checkpointer,
    workflow_id: str,
    run_id: str,
    step: int | None,
    other_run_id: str | None = None,
    other_step: int | None = None,
) -> Document:
    """The changes from ``step`` of ``run_id`` to ``other_step`` of ``other_run_id`` (the same
    run by default; a fork of it, say). A step of None is that run's latest."""
    old, new = await asyncio.gather(
        load_snapshot(store, workflow_id, run_id, step),
        load_snapshot(store, workflow_id, other_run_id or run_id, other_step),
    )
    return diff_json(old, new)
