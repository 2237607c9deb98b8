"""The archive tier: a finished run moves to another store, verified, and only then deleted.

Each test archives from the backend under test into an in-memory store, and back, so every
backend is both a source and a target.
"""

from __future__ import annotations

import pytest

from atomr_redis_state import Checkpointer, CheckpointKey, InMemoryCheckpointer, Snapshot
from atomr_redis_state.errors import ArchiveError, LeaseHeldError, RunNotFoundError
from atomr_redis_state.store.archive import archive
from tests.conftest import Backend

WF = "wf-archive"


def snap(run: str, step: int, **values: object) -> Snapshot:
    return Snapshot(
        CheckpointKey(WF, run, step),
        {"step": step, **values},  # type: ignore[dict-item]
        label=f"layer:{step}",
        timestamp_ms=1_700_000_000_000 + step,
        metadata={"atomr": {"done": [f"s{step}"]}},
    )


async def history(store: Checkpointer, run: str) -> list[Snapshot]:
    found = []
    for meta in await store.list(WF, run):
        snapshot = await store.load(meta.key)
        assert snapshot is not None
        found.append(snapshot)
    return found


@pytest.fixture(params=["from-backend", "into-backend"])
def stores(request: pytest.FixtureRequest, backend: Backend) -> tuple[Checkpointer, Checkpointer]:
    """(source, target): the backend under test on one side, an in-memory store on the other."""
    if request.param == "from-backend":
        return backend.make(ttl=3600), InMemoryCheckpointer()
    return InMemoryCheckpointer(ttl=3600), backend.make()


async def test_archive_copies_the_whole_history_exactly_then_deletes_the_source(
    stores: tuple[Checkpointer, Checkpointer],
) -> None:
    source, target = stores
    saved = [snap("r", step, text="\u202e x \x00") for step in range(5)]
    for snapshot in saved:
        await source.save(snapshot)
    [result] = await archive(source, target, WF, "r")
    assert (result.run_id, result.checkpoints, result.deleted) == ("r", 5, True)
    assert await history(target, "r") == saved
    assert await source.list(WF, "r") == []


async def test_archive_keeps_the_note_of_a_failed_run(
    stores: tuple[Checkpointer, Checkpointer],
) -> None:
    source, target = stores
    await source.save(snap("r", 0))
    lease = await source.acquire_lease(WF, "r", "worker", 30)
    await source.release_lease(lease, note={"failure": {"step": "act", "attempts": 3}})
    await archive(source, target, WF, "r")
    record = await target.run_record(WF, "r")
    assert record.note == {"failure": {"step": "act", "attempts": 3}}
    assert record.lease is None


async def test_archive_takes_the_runs_lineage_along(
    stores: tuple[Checkpointer, Checkpointer],
) -> None:
    source, target = stores
    for step in range(3):
        await source.save(snap("r", step))
    fork = await source.fork(CheckpointKey(WF, "r", 1), {"step": 99})
    archived = await archive(source, target, WF, fork)
    assert sorted(a.run_id for a in archived) == sorted(["r", fork])
    assert [s.values["step"] for s in await history(target, fork)] == [99]
    assert len(await history(target, "r")) == 3
    assert await source.list_runs(WF) == []


async def test_archive_without_lineage_moves_only_the_run(
    stores: tuple[Checkpointer, Checkpointer],
) -> None:
    source, target = stores
    await source.save(snap("r", 0))
    fork = await source.fork(CheckpointKey(WF, "r", 0))
    await archive(source, target, WF, "r", lineage=False)
    assert await target.list_runs(WF) == ["r"]
    assert await source.list_runs(WF) == [fork]


async def test_archive_refuses_a_run_a_worker_holds_and_changes_nothing(
    stores: tuple[Checkpointer, Checkpointer],
) -> None:
    source, target = stores
    await source.save(snap("r", 0))
    await source.acquire_lease(WF, "r", "busy-worker", 30)
    with pytest.raises(LeaseHeldError):
        await archive(source, target, WF, "r")
    assert await target.list_runs(WF) == []
    assert len(await source.list(WF, "r")) == 1


async def test_archive_refuses_a_target_holding_a_different_history(
    stores: tuple[Checkpointer, Checkpointer],
) -> None:
    source, target = stores
    await source.save(snap("r", 0))
    await source.save(snap("r", 1))
    await target.save(snap("r", 1, other=True))
    with pytest.raises(ArchiveError, match="super-step 1"):
        await archive(source, target, WF, "r")
    assert len(await source.list(WF, "r")) == 2


async def test_archive_refuses_a_target_with_extra_steps(
    stores: tuple[Checkpointer, Checkpointer],
) -> None:
    source, target = stores
    await source.save(snap("r", 0))
    await target.save(snap("r", 7))
    with pytest.raises(ArchiveError, match="super-step 7"):
        await archive(source, target, WF, "r")
    assert len(await source.list(WF, "r")) == 1


async def test_an_interrupted_archive_completes_when_called_again(
    stores: tuple[Checkpointer, Checkpointer],
) -> None:
    source, target = stores
    saved = [snap("r", step) for step in range(4)]
    for snapshot in saved:
        await source.save(snapshot)
    for snapshot in saved[:2]:  # what a crashed archive had copied
        await target.save(snapshot)
    await archive(source, target, WF, "r")
    assert await history(target, "r") == saved
    assert await source.list(WF, "r") == []


async def test_archiving_an_archived_run_again_reports_it_and_deletes_nothing(
    stores: tuple[Checkpointer, Checkpointer],
) -> None:
    source, target = stores
    await source.save(snap("r", 0))
    await archive(source, target, WF, "r")
    [again] = await archive(source, target, WF, "r")
    assert (again.checkpoints, again.deleted) == (1, False)


async def test_archive_can_keep_the_source(stores: tuple[Checkpointer, Checkpointer]) -> None:
    source, target = stores
    await source.save(snap("r", 0))
    [result] = await archive(source, target, WF, "r", delete_source=False)
    assert result.deleted is False
    assert await history(source, "r") == await history(target, "r")


async def test_archiving_a_run_no_store_has_is_not_found(
    stores: tuple[Checkpointer, Checkpointer],
) -> None:
    source, target = stores
    with pytest.raises(RunNotFoundError):
        await archive(source, target, WF, "missing")


async def test_a_target_that_trims_history_fails_verification_and_keeps_the_source(
    backend: Backend,
) -> None:
    source, target = backend.make(), InMemoryCheckpointer(keep_last=1)
    for step in range(3):
        await source.save(snap("r", step))
    with pytest.raises(ArchiveError, match="differs"):
        await archive(source, target, WF, "r")
    assert len(await source.list(WF, "r")) == 3
