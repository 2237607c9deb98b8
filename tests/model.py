"""A model-based comparison of checkpoint stores: random operation sequences, run in lockstep on
several stores, must get the same answer (or the same error type) from every one.

Reusable for any backend: a :class:`StoreFactory` opens a fresh store with a ``ttl`` and a
``keep_last``; :func:`compare` runs one sequence on all of them. The first factory is the judge
(real Redis when it is there): a divergence names the operation, the judge's answer and the
other store's. Fork ids and fork timestamps (the only things a store makes up) are made the
same for every store of a step.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from typing import Any
from unittest import mock

from hypothesis import strategies as st

from atomr_redis_state import JSON, Checkpointer, CheckpointKey, Snapshot
from atomr_redis_state.store import checkpointer as base
from atomr_redis_state.store.ids import fork_run_id

WF = "wf-model"
ROOTS = ("r0", "r1")
STEPS = 4
FORK_TIME_MS = 1_700_000_000_000

StoreFactory = Callable[[float | None, int | None], AbstractAsyncContextManager[Checkpointer]]
"""Opens a fresh, empty store with ``(ttl, keep_last)`` for one sequence, and closes it."""


@dataclass(frozen=True)
class NamedFactory:
    name: str
    open: StoreFactory


@dataclass(frozen=True)
class Op:
    """One operation; ``run`` and ``source`` index the runs known so far (roots, then forks)."""

    kind: str
    run: int = 0
    step: int = 0
    value: int = 0
    exclusive: bool = False
    """For ``save``: an exclusive save; for ``fork``: from any key, not one written before."""
    limit: int | None = None
    before: int | None = None
    fork_id: str = "new"
    """For ``fork``: ``new`` (a fresh id), ``none`` (the store makes one), ``again`` (the last
    fork, sent again as it was), ``reuse`` (the id of fork ``run``, from this source)."""


def ops() -> st.SearchStrategy[Op]:
    run = st.integers(0, 5)
    step = st.integers(0, STEPS - 1)
    small = st.none() | st.integers(1, STEPS)
    return st.one_of(
        st.builds(Op, st.just("save"), run, step, st.integers(0, 3), st.booleans()),
        st.builds(Op, st.just("save_again"), exclusive=st.booleans()),
        st.builds(Op, st.just("load"), run, step),
        st.builds(Op, st.just("latest"), run),
        st.builds(Op, st.just("list"), run, limit=small, before=small),
        st.builds(
            Op,
            st.just("fork"),
            run,
            step,
            st.integers(0, 3),
            st.booleans(),
            fork_id=st.sampled_from(["new", "none", "again", "reuse"]),
        ),
        st.builds(Op, st.just("delete_run"), run),
        st.builds(Op, st.just("list_runs"), limit=st.integers(1, 3), before=small),
    )


def sequences() -> st.SearchStrategy[list[Op]]:
    return st.lists(ops(), min_size=1, max_size=30)


@dataclass(frozen=True)
class Config:
    ttl: float | None
    keep_last: int | None

    @property
    def args(self) -> tuple[float | None, int | None]:
        return self.ttl, self.keep_last


def configs() -> st.SearchStrategy[Config]:
    # A ttl long enough that nothing expires during a sequence: the stores' clocks differ.
    return st.builds(Config, st.sampled_from([None, 3600.0]), st.sampled_from([None, 1, 2]))


class Sequence:
    """The ids and arguments of a sequence, the same for every store."""

    def __init__(self) -> None:
        self.runs: list[str] = list(ROOTS)
        self.last_saved: Snapshot | None = None
        self.last_fork: tuple[CheckpointKey, dict[str, JSON], str | None] | None = None
        self.made_fork_id = ""
        self.written: list[CheckpointKey] = []
        """Every key saved or forked into so far: forks mostly copy one of them."""

    def run(self, index: int) -> str:
        return self.runs[index % len(self.runs)]

    def prepare(self, op: Op) -> Callable[[Checkpointer], Any]:
        """The call ``op`` makes on a store (and the ids it names, added to the runs)."""
        if op.kind == "save":
            snapshot = Snapshot(
                CheckpointKey(WF, self.run(op.run), op.step),
                {"v": op.value},
                label=f"s{op.value}",
                timestamp_ms=op.value,
                metadata={"m": op.step},
            )
            self.last_saved = snapshot
            self.written.append(snapshot.key)
            return lambda store: store.save(snapshot, exclusive=op.exclusive)
        if op.kind == "save_again":
            again = self.last_saved
            if again is None:
                return lambda store: store.latest(WF, ROOTS[0])
            return lambda store: store.save(again, exclusive=op.exclusive)
        if op.kind == "load":
            key = CheckpointKey(WF, self.run(op.run), op.step)
            return lambda store: store.load(key)
        if op.kind == "latest":
            run = self.run(op.run)
            return lambda store: store.latest(WF, run)
        if op.kind == "list":
            run = self.run(op.run)
            return lambda store: store.list(WF, run, limit=op.limit, before=op.before)
        if op.kind == "delete_run":
            run = self.run(op.run)
            return lambda store: store.delete_run(WF, run)
        if op.kind == "list_runs":
            after = None if op.before is None else self.run(op.before)
            return lambda store: store.list_runs(WF, limit=op.limit or 1, after=after)
        return self._fork(op)

    def _fork(self, op: Op) -> Callable[[Checkpointer], Any]:
        source = CheckpointKey(WF, self.run(op.run), op.step)
        if not op.exclusive and self.written:  # mostly a key written before, which may be there
            source = self.written[op.run % len(self.written)]
        edits: dict[str, JSON] = {"v": op.value}
        run_id: str | None
        if op.fork_id == "again" and self.last_fork is not None:
            source, edits, run_id = self.last_fork
        elif op.fork_id == "reuse" and len(self.runs) > len(ROOTS):
            run_id = self.runs[len(ROOTS) + op.value % (len(self.runs) - len(ROOTS))]
        else:
            run_id = None if op.fork_id == "none" else fork_run_id(source.run_id)
        self.made_fork_id = fork_run_id(source.run_id)  # what a store makes when given none
        for made in (run_id, self.made_fork_id if run_id is None else None):
            if made is not None and made not in self.runs:
                self.runs.append(made)
        self.last_fork = (source, edits, run_id)
        self.written.append(CheckpointKey(WF, run_id or self.made_fork_id, source.super_step))
        return lambda store: store.fork(source, edits, run_id=run_id)


async def answer(call: Callable[[Checkpointer], Any], store: Checkpointer) -> object:
    """What ``call`` returns on ``store``, or its error's type."""
    try:
        return await call(store)
    except Exception as exc:
        return ("raised", type(exc).__name__)


async def compare(factories: list[NamedFactory], config: Config, sequence: list[Op]) -> None:
    """Run ``sequence`` on a fresh store of every factory, in lockstep; fail at the first
    answer that differs from the first factory's."""
    ids = Sequence()
    async with AsyncExitStack() as opened:
        stores = [
            (factory.name, await opened.enter_async_context(factory.open(*config.args)))
            for factory in factories
        ]
        with (
            mock.patch.object(base, "now_ms", return_value=FORK_TIME_MS),
            mock.patch.object(base, "fork_run_id", side_effect=lambda _: ids.made_fork_id),
        ):
            for number, op in enumerate(sequence):
                call = ids.prepare(op)
                judge_name, judge = stores[0]
                expected = await answer(call, judge)
                for name, store in stores[1:]:
                    got = await answer(call, store)
                    assert got == expected, (
                        f"operation {number} ({op}) under {config}: {judge_name} answered "
                        f"{expected!r}, {name} answered {got!r}"
                    )
