"""``list()`` without a namespace (or without a config) lists checkpoints newest first, by
checkpoint id, across namespaces and threads, as langgraph-checkpoint-postgres and
langgraph-checkpoint-redis order them; checked against InMemorySaver's checkpoints sorted so."""

from __future__ import annotations

import asyncio
import operator
import uuid
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    CheckpointMetadata,
    CheckpointTuple,
    empty_checkpoint,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from tests.langgraph_backends import (  # noqa: F401
    SaverBackend,
    real_backend,
    saver_backend,
)

Saver = BaseCheckpointSaver[Any]


def metadata(step: int = 0, source: str = "loop") -> CheckpointMetadata:
    return {"source": source, "step": step, "parents": {}}  # type: ignore[typeddict-item]


def expected_order(found: list[CheckpointTuple]) -> list[tuple[str, str, str]]:
    """InMemorySaver's checkpoints, in the order every saver must list them without a
    namespace: newest (highest checkpoint id) first, across namespaces (and threads)."""
    views = [view(t) for t in found]
    return sorted(views, reverse=True)


def view(item: CheckpointTuple) -> tuple[str, str, str]:
    conf = item.config["configurable"]
    return (conf["checkpoint_id"], conf["checkpoint_ns"], str(conf["thread_id"]))


async def put_history(saver: Saver, thread: str, count: int) -> None:
    """``count`` checkpoints in three namespaces, ids increasing, with every tenth id shared
    by two namespaces (a tie the order must break the same way everywhere)."""
    for i in range(count):
        namespaces = ["", "child:1", "child%2"][i % 3 : i % 3 + 1]
        if i % 10 == 0:
            namespaces.append("child:0")
        for ns in namespaces:
            checkpoint = empty_checkpoint()
            checkpoint["id"] = f"1f0{i:06d}"
            checkpoint["channel_values"] = {"n": i}
            checkpoint["channel_versions"] = {"n": f"{i:016}.0"}
            await saver.aput(
                {"configurable": {"thread_id": thread, "checkpoint_ns": ns}},
                checkpoint,
                metadata(step=i, source="loop" if i % 4 else "input"),
                {"n": f"{i:016}.0"},
            )


QUERIES: list[dict[str, Any]] = [
    {},
    {"limit": 1},
    {"limit": 7},
    {"filter": {"source": "input"}},
    {"filter": {"source": "input"}, "limit": 9},
    {"filter": {"source": "loop"}, "limit": 100},
    {"filter": {"step": 3}, "limit": 1},
    {"filter": {"source": "input"}, "limit": 70, "before": "1f0000150"},
    {"limit": 5, "before": "1f0000100"},
    {"checkpoint_id": "1f0000040"},
]


def list_args(query: dict[str, Any], thread: str | None) -> tuple[Any, dict[str, Any]]:
    config: RunnableConfig | None = None
    if thread is not None:
        config = {"configurable": {"thread_id": thread}}
        if "checkpoint_id" in query:
            config["configurable"]["checkpoint_id"] = query["checkpoint_id"]
    before = query.get("before")
    return config, {
        "filter": query.get("filter"),
        "limit": query.get("limit"),
        "before": {"configurable": {"checkpoint_id": before}} if before else None,
    }


@pytest.mark.parametrize("query", QUERIES, ids=[str(q) for q in QUERIES])
async def test_list_without_a_namespace_is_newest_first_across_namespaces(
    saver_backend: SaverBackend,  # noqa: F811
    query: dict[str, Any],
) -> None:
    saver = saver_backend.make()
    reference = InMemorySaver()
    thread = f"t-{uuid.uuid4()}"
    await asyncio.gather(put_history(saver, thread, 200), put_history(reference, thread, 200))
    config, options = list_args(query, thread)
    everything = [t async for t in reference.alist(config, filter=options["filter"])]
    before = query.get("before")
    wanted = expected_order([t for t in everything if before is None or view(t)[0] < before])
    wanted = wanted[: query.get("limit")]
    found = [t async for t in saver.alist(config, **options)]
    assert [view(t) for t in found] == wanted
    assert wanted  # every query finds something
    by_id = {view(t): t for t in everything}
    for item in found:
        expected = by_id[view(item)]
        assert item.checkpoint["channel_values"] == expected.checkpoint["channel_values"]
        assert item.metadata == expected.metadata


async def test_list_without_a_config_is_newest_first_across_threads(
    saver_backend: SaverBackend,  # noqa: F811
) -> None:
    saver = saver_backend.make()
    reference = InMemorySaver()
    for thread, count in (("t1", 40), ("t2", 25), ("t3", 31)):
        await put_history(saver, thread, count)
        await put_history(reference, thread, count)
    everything = expected_order([t async for t in reference.alist(None)])
    assert [view(t) async for t in saver.alist(None)] == everything
    assert [view(t) async for t in saver.alist(None, limit=4)] == everything[:4]
    loops = expected_order([t async for t in reference.alist(None, filter={"source": "input"})])
    found = [view(t) async for t in saver.alist(None, filter={"source": "input"}, limit=5)]
    assert found == loops[:5]


# The same on a real graph: a subgraph that interrupts, then resumes


class Trail(TypedDict):
    trail: Annotated[list[str], operator.add]


def graph_with_a_subgraph(saver: Saver) -> Any:
    def ask(state: Trail) -> dict[str, Any]:
        return {"trail": [f"asked:{interrupt('go on?')}"]}

    sub: Any = StateGraph(Trail)
    sub.add_node("s1", lambda state: {"trail": ["s1"]})
    sub.add_node("ask", ask)
    sub.add_edge(START, "s1")
    sub.add_edge("s1", "ask")
    sub.add_edge("ask", END)
    parent: Any = StateGraph(Trail)
    parent.add_node("a", lambda state: {"trail": ["a"]})
    parent.add_node("child", sub.compile())
    parent.add_node("z", lambda state: {"trail": ["z"]})
    parent.add_edge(START, "a")
    parent.add_edge("a", "child")
    parent.add_edge("child", "z")
    parent.add_edge("z", END)
    return parent.compile(checkpointer=saver)


async def listed_while_interrupted_and_after(saver: Saver) -> Any:
    """What ``list`` without a namespace shows, while the subgraph waits and after the resume:
    (namespace kind, step, values) newest first, and the ids in that order."""
    graph = graph_with_a_subgraph(saver)
    config: RunnableConfig = {"configurable": {"thread_id": f"g-{uuid.uuid4()}"}}
    seen = []
    inputs: list[Any] = [{"trail": []}, Command(resume="yes")]
    for command in inputs:
        await graph.ainvoke(command, config)
        found = [t async for t in saver.alist(config)]
        seen.append(
            (
                [
                    (
                        t.config["configurable"]["checkpoint_ns"].split(":")[0],
                        t.metadata.get("step"),
                        t.checkpoint["channel_values"].get("trail"),
                    )
                    for t in found
                ],
                [t.config["configurable"]["checkpoint_id"] for t in found],
                view(next(iter([t async for t in saver.alist(config, limit=1)]))),
            )
        )
    return seen


async def test_a_graph_with_a_subgraph_lists_newest_first(
    real_backend: SaverBackend,  # noqa: F811
) -> None:
    reference = InMemorySaver()
    expected = await listed_while_interrupted_and_after(reference)
    observed = await listed_while_interrupted_and_after(real_backend.make())
    for (views, ids, newest), (reference_views, reference_ids, _) in zip(
        observed, expected, strict=True
    ):
        # InMemorySaver lists namespace by namespace; sorted by id, it is the same history.
        order = sorted(range(len(reference_ids)), key=lambda i: reference_ids[i], reverse=True)
        assert views == [reference_views[i] for i in order]
        assert ids == sorted(ids, reverse=True)
        assert newest[0] == ids[0]
    waiting = observed[0][0]
    assert waiting[0][0] == "child"  # the subgraph's checkpoint is the newest while it waits
    assert {kind for kind, _, _ in waiting} == {"", "child"}
    # The subgraph returns its whole trail, which the parent's reducer appends to its own.
    assert observed[1][0][0] == ("", 3, ["a", "a", "s1", "asked:yes", "z"])
