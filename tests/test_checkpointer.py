"""The Checkpointer contract: save, load, latest, list and fork, identical on every backend."""

from __future__ import annotations

import pytest

from atomr_redis_state import (
    JSON,
    CheckpointConflictError,
    Checkpointer,
    CheckpointKey,
    CheckpointMeta,
    CheckpointNotFoundError,
    Snapshot,
    new_run_id,
    new_workflow_id,
)
from tests.conftest import Backend

WF = "wf-contract"


def snap(run: str, step: int, label: str = "", **values: JSON) -> Snapshot:
    return Snapshot(CheckpointKey(WF, run, step), dict(values), label=label)


async def steps_of(cp: Checkpointer, run: str) -> list[int]:
    return [m.super_step for m in await cp.list(WF, run)]


def test_every_backend_is_a_checkpointer(checkpointer: Checkpointer) -> None:
    assert isinstance(checkpointer, Checkpointer)


async def test_save_then_latest_returns_the_snapshot(checkpointer: Checkpointer) -> None:
    saved = snap("r1", 0, label="start", n=1, msg="hi")
    await checkpointer.save(saved)
    assert await checkpointer.latest(WF, "r1") == saved


async def test_load_returns_the_saved_snapshot(checkpointer: Checkpointer) -> None:
    saved = snap("r1", 3, label="x", a=[1, {"b": None}])
    await checkpointer.save(saved)
    assert await checkpointer.load(saved.key) == saved


async def test_load_of_a_missing_checkpoint_is_none(checkpointer: Checkpointer) -> None:
    await checkpointer.save(snap("r1", 0))
    assert await checkpointer.load(CheckpointKey(WF, "r1", 1)) is None
    assert await checkpointer.load(CheckpointKey(WF, "nope", 0)) is None


async def test_latest_of_an_unknown_run_is_none(checkpointer: Checkpointer) -> None:
    assert await checkpointer.latest(WF, "never-saved") is None


async def test_list_of_an_unknown_run_is_empty(checkpointer: Checkpointer) -> None:
    assert await checkpointer.list(WF, "never-saved") == []


async def test_list_of_four_saves_is_ascending(checkpointer: Checkpointer) -> None:
    for step in range(4):
        await checkpointer.save(snap("r1", step, label=f"s{step}"))
    metas = await checkpointer.list(WF, "r1")
    assert [m.super_step for m in metas] == [0, 1, 2, 3]
    assert [m.label for m in metas] == ["s0", "s1", "s2", "s3"]
    assert all(isinstance(m, CheckpointMeta) and m.run_id == "r1" for m in metas)


async def test_list_reports_timestamps_and_keys(checkpointer: Checkpointer) -> None:
    saved = Snapshot(CheckpointKey(WF, "r1", 7), {}, label="l", timestamp_ms=1234)
    await checkpointer.save(saved)
    [meta] = await checkpointer.list(WF, "r1")
    assert (meta.timestamp_ms, meta.label, meta.key) == (1234, "l", saved.key)


async def test_list_is_ascending_when_saved_out_of_order(checkpointer: Checkpointer) -> None:
    for step in (5, 1, 10, 0, 3):
        await checkpointer.save(snap("r1", step))
    assert await steps_of(checkpointer, "r1") == [0, 1, 3, 5, 10]


async def test_latest_is_the_highest_step_not_the_last_saved(checkpointer: Checkpointer) -> None:
    await checkpointer.save(snap("r1", 9, v="nine"))
    await checkpointer.save(snap("r1", 2, v="two"))
    latest = await checkpointer.latest(WF, "r1")
    assert latest is not None
    assert latest.key.super_step == 9
    assert latest.values == {"v": "nine"}


async def test_saving_a_step_again_replaces_it(checkpointer: Checkpointer) -> None:
    await checkpointer.save(snap("r1", 1, label="first", a=1, b=2))
    await checkpointer.save(snap("r1", 1, label="second", a=3))
    loaded = await checkpointer.load(CheckpointKey(WF, "r1", 1))
    assert loaded is not None
    assert (loaded.values, loaded.label) == ({"a": 3}, "second")


async def test_list_never_shows_duplicates(checkpointer: Checkpointer) -> None:
    for _ in range(3):
        await checkpointer.save(snap("r1", 0))
        await checkpointer.save(snap("r1", 1))
    assert await steps_of(checkpointer, "r1") == [0, 1]


async def test_exclusive_save_of_a_new_step_writes_it(checkpointer: Checkpointer) -> None:
    await checkpointer.save(snap("r1", 0, a=1), exclusive=True)
    assert await steps_of(checkpointer, "r1") == [0]


async def test_exclusive_save_of_an_existing_step_conflicts(checkpointer: Checkpointer) -> None:
    original = snap("r1", 4, label="winner", a=1)
    await checkpointer.save(original)
    with pytest.raises(CheckpointConflictError) as info:
        await checkpointer.save(snap("r1", 4, label="loser", a=2), exclusive=True)
    assert (info.value.run_id, info.value.super_step) == ("r1", 4)
    assert await checkpointer.load(original.key) == original
    assert await steps_of(checkpointer, "r1") == [4]


async def test_only_one_of_many_racing_exclusive_saves_wins(checkpointer: Checkpointer) -> None:
    import asyncio

    results = await asyncio.gather(
        *(checkpointer.save(snap("r1", 1, worker=i), exclusive=True) for i in range(20)),
        return_exceptions=True,
    )
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, CheckpointConflictError) for r in results if r is not None)


async def test_runs_and_workflows_are_separate(checkpointer: Checkpointer) -> None:
    await checkpointer.save(Snapshot(CheckpointKey("w1", "r", 0), {"who": "w1"}))
    await checkpointer.save(Snapshot(CheckpointKey("w2", "r", 1), {"who": "w2"}))
    one = await checkpointer.latest("w1", "r")
    two = await checkpointer.latest("w2", "r")
    assert one is not None
    assert two is not None
    assert (one.values, two.values) == ({"who": "w1"}, {"who": "w2"})


async def test_ids_made_by_helpers_look_like_atomr_ids() -> None:
    assert new_run_id().startswith("run-")
    assert len(new_run_id()) == 40
    assert new_workflow_id().startswith("wf-")
    assert len(new_workflow_id()) == 39
    assert new_run_id() != new_run_id()


async def test_fork_copies_a_snapshot_into_a_new_run(checkpointer: Checkpointer) -> None:
    await checkpointer.save(snap("r1", 2, label="src", a=1, b=[1, 2]))
    forked = await checkpointer.fork(CheckpointKey(WF, "r1", 2))
    assert forked != "r1"
    copy = await checkpointer.latest(WF, forked)
    assert copy is not None
    assert copy.key == CheckpointKey(WF, forked, 2)
    assert copy.values == {"a": 1, "b": [1, 2]}
    assert await steps_of(checkpointer, forked) == [2]


async def test_fork_applies_edits(checkpointer: Checkpointer) -> None:
    await checkpointer.save(snap("r1", 1, a=1, b=2))
    forked = await checkpointer.fork(CheckpointKey(WF, "r1", 1), {"b": 20, "c": "new"})
    copy = await checkpointer.latest(WF, forked)
    assert copy is not None
    assert copy.values == {"a": 1, "b": 20, "c": "new"}


async def test_fork_edits_as_pairs_let_a_later_edit_win(checkpointer: Checkpointer) -> None:
    await checkpointer.save(snap("r1", 1, a=1))
    forked = await checkpointer.fork(CheckpointKey(WF, "r1", 1), [("a", 2), ("a", 3)])
    copy = await checkpointer.latest(WF, forked)
    assert copy is not None
    assert copy.values == {"a": 3}


async def test_fork_is_labelled_and_stamped_now(checkpointer: Checkpointer) -> None:
    from atomr_redis_state.store.types import now_ms

    await checkpointer.save(Snapshot(CheckpointKey(WF, "r1", 1), {}, timestamp_ms=5))
    before = now_ms()
    forked = await checkpointer.fork(CheckpointKey(WF, "r1", 1))
    copy = await checkpointer.latest(WF, forked)
    assert copy is not None
    assert copy.label == "fork-of:r1"
    assert before <= copy.timestamp_ms <= now_ms()


async def test_fork_leaves_the_source_untouched(checkpointer: Checkpointer) -> None:
    source = snap("r1", 1, label="src", a=1)
    await checkpointer.save(source)
    await checkpointer.save(snap("r1", 2, a=2))
    await checkpointer.fork(source.key, {"a": 99, "z": 0})
    assert await checkpointer.load(source.key) == source
    assert await steps_of(checkpointer, "r1") == [1, 2]


async def test_fork_of_a_fork_works(checkpointer: Checkpointer) -> None:
    await checkpointer.save(snap("r1", 3, a=1))
    first = await checkpointer.fork(CheckpointKey(WF, "r1", 3), {"b": 1})
    await checkpointer.save(snap(first, 4, a=2))
    second = await checkpointer.fork(CheckpointKey(WF, first, 4), {"c": 1})
    copy = await checkpointer.latest(WF, second)
    assert copy is not None
    assert copy.values == {"a": 2, "c": 1}
    assert copy.label == f"fork-of:{first}"
    assert len({"r1", first, second}) == 3


async def test_a_forked_run_continues_like_any_run(checkpointer: Checkpointer) -> None:
    await checkpointer.save(snap("r1", 1, a=1))
    forked = await checkpointer.fork(CheckpointKey(WF, "r1", 1))
    await checkpointer.save(snap(forked, 2, a=2), exclusive=True)
    assert await steps_of(checkpointer, forked) == [1, 2]
    assert await steps_of(checkpointer, "r1") == [1]


async def test_fork_of_a_missing_checkpoint_raises_and_writes_nothing(
    checkpointer: Checkpointer,
) -> None:
    await checkpointer.save(snap("r1", 1))
    with pytest.raises(CheckpointNotFoundError, match=r"'r1'.*super-step 7"):
        await checkpointer.fork(CheckpointKey(WF, "r1", 7), {"a": 1})
    assert await checkpointer.list_runs(WF) == ["r1"]


async def test_list_workflows_lists_each_workflow_with_runs_once_in_order(
    backend: Backend,
) -> None:
    store = backend.make()
    for workflow in ("wf-b", "wf-a:x", "wf-c{1}"):
        for run in ("r1", "r2", "r3"):
            await store.save(Snapshot(CheckpointKey(workflow, run, 0), {}))
    await store.fork(CheckpointKey("wf-b", "r1", 0))
    # Another tenant: a key prefix on Redis (a schema or a file on SQL: test_sql_stores.py).
    if backend.sql is None:
        other_prefix = backend.make(prefix=f"{backend.prefix}-other")
        await other_prefix.save(Snapshot(CheckpointKey("wf-elsewhere", "r", 0), {}))
        assert await other_prefix.list_workflows() == ["wf-elsewhere"]
    assert await store.list_workflows() == ["wf-a:x", "wf-b", "wf-c{1}"]
    assert await store.list_workflows(limit=2) == ["wf-a:x", "wf-b"]
    assert await store.list_workflows(after="wf-b") == ["wf-c{1}"]


async def test_a_workflow_whose_runs_are_all_deleted_is_no_longer_listed(
    backend: Backend,
) -> None:
    store = backend.make()
    await store.save(Snapshot(CheckpointKey("wf-gone", "r1", 0), {}))
    await store.save(Snapshot(CheckpointKey("wf-kept", "r1", 0), {}))
    await store.save(Snapshot(CheckpointKey("wf-kept", "r2", 0), {}))
    await store.delete_run("wf-gone", "r1")
    await store.delete_run("wf-kept", "r1")
    assert await store.list_workflows() == ["wf-kept"]
    assert await store.list_workflows(limit=1) == ["wf-kept"]


async def test_list_workflows_pages_past_workflows_that_are_gone(backend: Backend) -> None:
    store = backend.make()
    for index in range(6):
        await store.save(Snapshot(CheckpointKey(f"wf-{index}", "r", 0), {}))
    for index in (0, 1, 3):
        await store.delete_run(f"wf-{index}", "r")
    assert await store.list_workflows(limit=2) == ["wf-2", "wf-4"]
    assert await store.list_workflows(limit=2, after="wf-4") == ["wf-5"]


@pytest.mark.parametrize("limit", [0, -1])
async def test_list_workflows_refuses_a_limit_below_one(
    checkpointer: Checkpointer, limit: int
) -> None:
    with pytest.raises(ValueError, match="limit"):
        await checkpointer.list_workflows(limit=limit)
