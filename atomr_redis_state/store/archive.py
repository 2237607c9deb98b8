"""The archive tier: move finished runs from a fast, expiring store to a durable one.

A run in flight belongs in Redis, with a ``ttl``; once it has finished, teams keep it for audits,
evaluations and debugging in a database (Postgres, or a SQLite file). :func:`archive` copies a
run (with its whole history, its note, and by default the other runs of its lineage: its source
and its forks) from one store to another, reads the copy back to verify it checkpoint by
checkpoint, and only then deletes the source. It uses the :class:`~.checkpointer.Checkpointer`
protocol alone, so any two stores work, in either direction.

Safe to retry: a copy interrupted half-way is completed by the next call (checkpoints the target
already holds identically are kept), and an archive whose source is already gone reports the
run as archived if the target holds it. Nothing is deleted unless every run of the lineage was
copied and verified.
"""

from __future__ import annotations

import builtins
import logging
from dataclasses import dataclass

from ..errors import ArchiveError, LeaseHeldError, RunNotFoundError
from .checkpointer import Checkpointer
from .runs import lineage_forks
from .types import JSON, Snapshot

log = logging.getLogger(__name__)

ARCHIVE_OWNER = "atomr-redis-state-archive"
"""The lease owner that archiving briefly takes on the target, to restore a run's note."""

NOTE_LEASE_TTL_S = 30.0


@dataclass(frozen=True, slots=True)
class ArchivedRun:
    """One run :func:`archive` copied (and, unless asked not to, deleted from the source)."""

    workflow_id: str
    run_id: str
    checkpoints: int
    """How many checkpoints the target now holds for the run."""
    deleted: bool
    """True when the source's copy was deleted by this call."""


@dataclass(frozen=True, slots=True)
class _RunCopy:
    snapshots: tuple[Snapshot, ...]
    note: JSON


async def archive(
    source: Checkpointer,
    target: Checkpointer,
    workflow_id: str,
    run_id: str,
    *,
    lineage: bool = True,
    delete_source: bool = True,
) -> builtins.list[ArchivedRun]:
    """Copy run ``run_id`` (and, with ``lineage``, its source and forks) into ``target``,
    verify every checkpoint read back, then delete it from ``source``.

    Raises :class:`~..errors.RunNotFoundError` when neither store has the run,
    :class:`~..errors.LeaseHeldError` when a worker holds one of the runs (it is in flight:
    archive finished runs), and :class:`~..errors.ArchiveError` when the target holds other
    checkpoints for a run, the copy does not read back the same, or a run changed while it was
    copied. In every error case the source is unchanged.
    """
    run_ids = [run_id]
    if lineage:
        run_ids = sorted({run_id, *await lineage_forks(source, workflow_id, run_id)})
    copies: dict[str, _RunCopy] = {}
    for each in run_ids:
        copy = await _read(source, workflow_id, each)
        if copy.snapshots:
            copies[each] = copy
    if not copies:
        held = await target.list(workflow_id, run_id)
        if not held:
            raise RunNotFoundError(workflow_id, run_id)
        return [ArchivedRun(workflow_id, run_id, len(held), deleted=False)]
    for each, copy in copies.items():
        await _write(target, workflow_id, each, copy)
    for each, copy in copies.items():
        if await _read(target, workflow_id, each) != copy:
            raise ArchiveError(workflow_id, each, "the copy read back differs from the source")
    archived = []
    for each, copy in copies.items():
        deleted = False
        if delete_source:
            if await _read(source, workflow_id, each) != copy:
                raise ArchiveError(workflow_id, each, "the run changed while it was copied")
            deleted = await source.delete_run(workflow_id, each)
        log.info(
            "archived run %s of workflow %s: %d checkpoint(s)%s",
            each,
            workflow_id,
            len(copy.snapshots),
            ", source deleted" if deleted else "",
        )
        archived.append(ArchivedRun(workflow_id, each, len(copy.snapshots), deleted))
    return archived


async def _read(store: Checkpointer, workflow_id: str, run_id: str) -> _RunCopy:
    """Every checkpoint of the run, ascending, and its note; refuses a run a worker holds."""
    snapshots = []
    for meta in await store.list(workflow_id, run_id):
        snapshot = await store.load(meta.key)
        if snapshot is not None:  # trimmed since the listing: the next read tells
            snapshots.append(snapshot)
    record = await store.run_record(workflow_id, run_id)
    if record.lease is not None:
        lease = record.lease
        raise LeaseHeldError(workflow_id, run_id, lease.owner, lease.expires_at_ms)
    return _RunCopy(tuple(snapshots), record.note)


async def _write(target: Checkpointer, workflow_id: str, run_id: str, copy: _RunCopy) -> None:
    """Save every checkpoint the target lacks; refuse one it holds differently."""
    wanted = {snapshot.key.super_step: snapshot for snapshot in copy.snapshots}
    for meta in await target.list(workflow_id, run_id):
        if meta.super_step not in wanted:
            raise ArchiveError(
                workflow_id, run_id, f"the target holds super-step {meta.super_step} already"
            )
    for snapshot in copy.snapshots:
        held = await target.load(snapshot.key)
        if held is None:
            await target.save(snapshot)
        elif held != snapshot:
            step = snapshot.key.super_step
            raise ArchiveError(
                workflow_id, run_id, f"the target holds a different super-step {step}"
            )
    if copy.note is not None and (await target.run_record(workflow_id, run_id)).note != copy.note:
        lease = await target.acquire_lease(workflow_id, run_id, ARCHIVE_OWNER, NOTE_LEASE_TTL_S)
        await target.release_lease(lease, note=copy.note)
