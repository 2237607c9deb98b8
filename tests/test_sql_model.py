"""Model-based, beyond tests/test_model.py: random sequences that also take, renew and release
leases (with notes), hold runs and read run records give the same answers on the SQL stores as
on the in-memory store (the model), with and without ``keep_last`` and ``ttl``; and on SQLite,
with both stores on one test clock that moves, runs and leases expire as the model's do.

The fleet's queue too (submits, claims, finishes by every outcome, requeues, resumes, cancels,
answers, depths), on both SQL stores, both on real clocks. Operations collide on a few runs and
owners. Answers are compared whole, or as the error's type; what depends on a clock (fencing
tokens, lease deadlines, a fork's timestamp, a ready time) is compared by what it must mean
instead.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atomr_redis_state import (
    AtomrStateError,
    Checkpointer,
    CheckpointKey,
    InMemoryCheckpointer,
    Lease,
    Snapshot,
)
from atomr_redis_state.store.ids import FORK_MARKER
from tests.conftest import Backend

RUNS = ["a", "b", f"a{FORK_MARKER}1", f"a{FORK_MARKER}2", f"b{FORK_MARKER}1"]
OWNERS = ["w1", "w2"]
STEPS = st.integers(0, 3)
VALUES = st.one_of(st.integers(-3, 3), st.text(max_size=3), st.none(), st.floats(-1, 1))

ARGUMENTS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "save": st.tuples(
        st.sampled_from(RUNS[:2]),
        STEPS,
        VALUES,
        st.booleans(),
        st.sampled_from([None, None, "forever", 3600]),
        st.sampled_from([None, None, *OWNERS]),
    ),
    "load": st.tuples(st.sampled_from(RUNS), STEPS),
    "latest": st.tuples(st.sampled_from(RUNS)),
    "list": st.tuples(st.sampled_from(RUNS), st.none() | st.integers(1, 3), st.none() | STEPS),
    "fork": st.tuples(st.sampled_from(RUNS[:2]), STEPS, VALUES, st.integers(1, 2)),
    "list_runs": st.tuples(st.integers(1, 3), st.none() | st.sampled_from(RUNS)),
    "delete_run": st.tuples(st.sampled_from(RUNS)),
    "acquire": st.tuples(st.sampled_from(RUNS[:2]), st.sampled_from(OWNERS), st.booleans()),
    "renew": st.tuples(st.sampled_from(RUNS[:2]), st.sampled_from(OWNERS)),
    "release": st.tuples(
        st.sampled_from(RUNS[:2]), st.sampled_from(OWNERS), st.sampled_from([None, "done", "keep"])
    ),
    "record": st.tuples(st.sampled_from(RUNS)),
}
KINDS = [*["save"] * 8, *["list", "latest"] * 2, *ARGUMENTS]
"""Saves drawn most often, so that runs grow past ``keep_last``; reads next."""

QUEUE_RUNS = ["a", "b", "c"]
QUEUE_ARGUMENTS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "submit": st.tuples(st.sampled_from(QUEUE_RUNS), VALUES, st.sampled_from([None, None, 3600])),
    "claim": st.tuples(st.sampled_from(OWNERS)),
    "finish": st.tuples(
        st.sampled_from(QUEUE_RUNS),
        st.sampled_from(OWNERS),
        st.sampled_from(["completed", "paused", "released", "retry", "failed", "blocked"]),
        st.sampled_from([None, 2]),
        st.sampled_from([None, "clear", "failed here"]),
    ),
    "requeue": st.tuples(st.sampled_from(QUEUE_RUNS)),
    "resume": st.tuples(st.sampled_from(QUEUE_RUNS), VALUES),
    "cancel": st.tuples(st.sampled_from(QUEUE_RUNS)),
    "answer": st.tuples(
        st.sampled_from(QUEUE_RUNS), STEPS, VALUES, st.sampled_from([None, *OWNERS])
    ),
    "depth": st.tuples(),
    "save": st.tuples(
        st.sampled_from(QUEUE_RUNS),
        STEPS,
        VALUES,
        st.booleans(),
        st.just(None),
        st.sampled_from([None, *OWNERS]),
    ),
    "acquire": st.tuples(st.sampled_from(QUEUE_RUNS), st.sampled_from(OWNERS), st.booleans()),
    "renew": st.tuples(st.sampled_from(QUEUE_RUNS), st.sampled_from(OWNERS)),
    "release": st.tuples(
        st.sampled_from(QUEUE_RUNS), st.sampled_from(OWNERS), st.sampled_from([None, "done"])
    ),
    "delete_run": st.tuples(st.sampled_from(QUEUE_RUNS)),
    "record": st.tuples(st.sampled_from(QUEUE_RUNS)),
}
QUEUE_KINDS = [*["submit", "claim", "finish"] * 3, *QUEUE_ARGUMENTS]
"""The fleet's queue: submits, claims and finishes drawn most often, so that runs move."""


@st.composite
def operations(draw: st.DrawFn) -> tuple[Any, ...]:
    kind = draw(st.sampled_from(KINDS))
    return (kind, *draw(ARGUMENTS[kind]))


@st.composite
def queue_operations(draw: st.DrawFn) -> tuple[Any, ...]:
    kind = draw(st.sampled_from(QUEUE_KINDS))
    return (kind, *draw(QUEUE_ARGUMENTS[kind]))


class Player:
    """Plays operations on one store, remembering the leases its owners were given."""

    def __init__(self, store: Checkpointer, workflow_id: str) -> None:
        self.store = store
        self.wf = workflow_id
        self.leases: dict[tuple[str, str], Lease] = {}
        self.tick = 0

    async def play(self, op: tuple[Any, ...]) -> object:
        try:
            return await self._play(op)
        except AtomrStateError as exc:
            return type(exc).__name__

    async def _play(self, op: tuple[Any, ...]) -> object:
        kind, args, store, wf = op[0], op[1:], self.store, self.wf
        self.tick += 1
        if kind == "save":
            run, step, value, exclusive, hold, owner = args
            lease = None if owner is None else self.leases.get((run, owner))
            snapshot = Snapshot(CheckpointKey(wf, run, step), {"v": value}, "l", self.tick)
            await store.save(snapshot, exclusive=exclusive, hold=hold, lease=lease)
            return None
        if kind == "load":
            found = await store.load(CheckpointKey(wf, args[0], args[1]))
            return None if found is None else (found.values, found.label)
        if kind == "latest":
            found = await store.latest(wf, args[0])
            return None if found is None else (found.key.super_step, found.values, found.label)
        if kind == "list":
            rows = await store.list(wf, args[0], limit=args[1], before=args[2])
            return [(m.super_step, m.label) for m in rows]
        if kind == "fork":
            source, step, value, n = args
            target = f"{source}{FORK_MARKER}{n}"
            return await store.fork(CheckpointKey(wf, source, step), {"v": value}, run_id=target)
        if kind == "list_runs":
            return await store.list_runs(wf, limit=args[0], after=args[1])
        if kind == "delete_run":
            return await store.delete_run(wf, args[0])
        if kind == "acquire":
            run, owner, must_exist = args
            lease = await store.acquire_lease(wf, run, owner, 60, must_exist=must_exist)
            before = self.leases.get((run, owner))
            self.leases[(run, owner)] = lease
            return ("kept" if before and before.token == lease.token else "new", lease.owner)
        if kind == "renew":
            lease = self.leases.get((args[0], args[1]))
            if lease is None:
                return "no lease"
            renewed = await store.renew_lease(lease)
            return renewed.token == lease.token, renewed.cancel_requested
        if kind == "release":
            run, owner, note = args
            lease = self.leases.get((run, owner))
            if lease is None:
                return "no lease"
            if note == "keep":
                return await store.release_lease(lease, keep_note=True)
            return await store.release_lease(lease, note=note)
        if kind == "record":
            record = await store.run_record(wf, args[0])
            held = None if record.lease is None else record.lease.owner
            queue = record.queue and (
                record.queue.state,
                record.queue.attempts,
                record.queue.reason,
            )
            cancelled = record.cancel_requested_at_ms is not None
            return held, record.note, record.answer, cancelled, queue
        return await self._play_queue(kind, args)

    async def _play_queue(self, kind: str, args: tuple[Any, ...]) -> object:
        store, wf = self.store, self.wf
        if kind == "submit":
            run, value, delay = args
            not_before = None if delay is None else timedelta(seconds=delay)
            snapshot = Snapshot(CheckpointKey(wf, run, 0), {"v": value}, "l", self.tick)
            return await store.submit(snapshot, not_before=not_before)
        if kind == "claim":
            claim = await store.claim(wf, args[0], 60)
            if claim is None:
                return None
            self.leases[(claim.lease.run_id, args[0])] = claim.lease
            return (
                claim.lease.run_id,
                claim.attempts,
                claim.taken_over,
                claim.lease.cancel_requested,
            )
        if kind == "finish":
            run, owner, outcome, max_attempts, note = args
            lease = self.leases.get((run, owner))
            if lease is None:
                return "no lease"
            reason = {"outcome": outcome, "tick": self.tick}
            if note == "clear":
                return await store.finish(
                    lease, outcome, reason=reason, max_attempts=max_attempts, keep_note=False
                )
            return await store.finish(
                lease, outcome, reason=reason, max_attempts=max_attempts, note=note
            )
        if kind == "requeue":
            return await store.requeue(wf, args[0])
        if kind == "resume":
            return await store.resume_run(wf, args[0], args[1])
        if kind == "cancel":
            return await store.cancel(wf, args[0])
        if kind == "answer":
            run, step, value, owner = args
            lease = None if owner is None else self.leases.get((run, owner))
            await store.record_answer(wf, run, value, super_step=step, lease=lease)
            return None
        assert kind == "depth", kind
        return await store.queue_depth(wf)


TIME_STEPS = st.sampled_from([500, 4_000, 6_000, 9_000, 11_000, 21_000])
"""How far the test clock moves: around the ttl (10 s) and its double, where runs expire."""


async def compare(
    backend: Backend,
    options: dict[str, Any],
    sequence: list[tuple[Any, ...]],
    *,
    pace: float = 0,
    **clock: Any,
) -> None:
    """Play ``sequence`` on the model and on a SQL store of ``backend``: the same answers.
    ``pace`` seconds pass after each operation (so that two stores on real clocks order runs
    queued one after the other alike)."""
    workflow_id = f"wf-{uuid.uuid4().hex[:8]}"  # every example on runs of its own
    model = Player(InMemoryCheckpointer(**options, **clock), workflow_id)
    assert backend.sql is not None
    sql_store = backend.sql(**options, **clock)  # closed here: an example leaves nothing open
    store = Player(sql_store, workflow_id)
    try:
        for i, op in enumerate(sequence):
            if op[0] == "advance":
                clock["clock"].now += op[1]
                continue
            expected = await model.play(op)
            got = await store.play(op)
            assert got == expected, f"op {i} {op}: {backend.name} {got!r}, model {expected!r}"
            await asyncio.sleep(pace)
    finally:
        await sql_store.aclose()


class MovingClock:
    """A clock both stores share, moved by the test (milliseconds since the epoch)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000_000

    def __call__(self) -> int:
        return self.now


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize("options", [{}, {"keep_last": 2}, {"ttl": 3600}], ids=str)
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=st.lists(operations(), min_size=10, max_size=40))
async def test_sql_stores_answer_as_the_in_memory_model(
    backend: Backend, options: dict[str, Any], sequence: list[tuple[Any, ...]]
) -> None:
    await compare(backend, options, sequence)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("options", [{"ttl": 10}, {"ttl": 10, "keep_last": 2}], ids=str)
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    sequence=st.lists(
        operations() | st.tuples(st.just("advance"), TIME_STEPS), min_size=10, max_size=40
    )
)
async def test_sqlite_expires_runs_and_leases_as_the_in_memory_model(
    backend: Backend, options: dict[str, Any], sequence: list[tuple[Any, ...]]
) -> None:
    """With both stores on one test clock, time moves on between operations: runs expire
    whole (ttl 10 s, leases 60 s), and every answer still matches the model's. (Postgres runs
    on its server's clock, which a test cannot move.)"""
    await compare(backend, options, sequence, clock=MovingClock())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize("options", [{}, {"ttl": 3600}], ids=str)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=st.lists(queue_operations(), min_size=10, max_size=40))
async def test_sql_queues_answer_as_the_in_memory_model(
    backend: Backend, options: dict[str, Any], sequence: list[tuple[Any, ...]]
) -> None:
    """The fleet's queue (submit, claim, finish by every outcome, requeue, resume with an
    answer, cancel, answers, depth) mixed with saves, leases and deletes on a few runs and two
    owners: every answer is the model's, with the run records' queue part, answer and cancel
    flag. Both stores run on real clocks, 3 ms apart per operation."""
    await compare(backend, options, sequence, pace=0.003)
