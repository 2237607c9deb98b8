"""Real LangGraph graphs on the Redis saver, compared with LangGraph's own InMemorySaver.

Each scenario runs once on ``InMemorySaver`` and once on ``AsyncRedisStateSaver`` (on a real
redis-server and on the real 3-master cluster) and must observe exactly the same thing.
"""

from __future__ import annotations

import asyncio
import operator
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Command, interrupt

from tests.langgraph_backends import SaverBackend, real_backend  # noqa: F401

Saver = BaseCheckpointSaver[Any]
Scenario = Callable[[Saver], Awaitable[Any]]


def config(thread: str, **extra: Any) -> RunnableConfig:
    return {"configurable": {"thread_id": thread, **extra}}


async def same_on_both(scenario: Scenario, backend: SaverBackend) -> Any:
    """Run the scenario on InMemorySaver and on the Redis saver; both must observe the same."""
    expected = await scenario(InMemorySaver())
    observed = await scenario(backend.make())
    assert observed == expected
    return observed


# A line of nodes that count


class Count(TypedDict):
    count: int
    trail: Annotated[list[str], operator.add]


def counting_graph(nodes: int = 3) -> Any:
    builder: Any = StateGraph(Count)

    def make(i: int) -> Callable[[Count], dict[str, Any]]:
        def node(state: Count) -> dict[str, Any]:
            return {"count": state["count"] + 1, "trail": [f"n{i}"]}

        return node

    for i in range(nodes):
        builder.add_node(f"n{i}", make(i))
    builder.add_edge(START, "n0")
    for i in range(nodes - 1):
        builder.add_edge(f"n{i}", f"n{i + 1}")
    builder.add_edge(f"n{nodes - 1}", END)
    return builder


def snapshot_view(state: Any) -> tuple[Any, ...]:
    return (
        state.values,
        state.next,
        state.metadata.get("step"),
        state.metadata.get("source"),
        len(state.tasks),
    )


# Parallel fan-out with a branch that fails once


class Fan(TypedDict):
    results: Annotated[list[str], operator.add]


async def fan_out_with_a_failing_branch(saver: Saver) -> Any:
    calls: Counter[str] = Counter()

    def branch(name: str, delay: float) -> Callable[[Fan], Awaitable[dict[str, Any]]]:
        async def node(state: Fan) -> dict[str, Any]:
            calls[name] += 1
            await asyncio.sleep(delay)
            if name == "b" and calls[name] == 1:
                raise RuntimeError("b fails once")
            return {"results": [name]}

        return node

    builder: Any = StateGraph(Fan)
    for name, delay in (("a", 0.0), ("b", 0.05), ("c", 0.0)):
        builder.add_node(name, branch(name, delay))
        builder.add_edge(START, name)
    builder.add_node("join", lambda state: {"results": ["join"]})
    builder.add_edge(["a", "b", "c"], "join")
    builder.add_edge("join", END)
    graph = builder.compile(checkpointer=saver)
    cfg = config(f"fan-{uuid.uuid4()}")
    with pytest.raises(RuntimeError, match="b fails once"):
        await graph.ainvoke({"results": []}, cfg)
    failed = await saver.aget_tuple(cfg)
    assert failed is not None
    saved_writes = sorted(channel for _, channel, _ in failed.pending_writes or [])
    result = await graph.ainvoke(None, cfg)
    return dict(calls), saved_writes, sorted(result["results"])


async def test_a_failed_branch_is_resumed_without_rerunning_finished_ones(
    real_backend: SaverBackend,  # noqa: F811
) -> None:
    calls, writes, results = await same_on_both(fan_out_with_a_failing_branch, real_backend)
    assert calls == {"a": 1, "b": 2, "c": 1}
    assert "__error__" in writes
    assert results == ["a", "b", "c", "join"]


# A subgraph that interrupts


class Ask(TypedDict):
    value: str
    answer: str


async def subgraph_interrupt_and_resume(saver: Saver) -> Any:
    def ask(state: Ask) -> dict[str, Any]:
        return {"answer": interrupt({"question": f"approve {state['value']}?"})}

    sub: Any = StateGraph(Ask)
    sub.add_node("ask", ask)
    sub.add_edge(START, "ask")
    sub.add_edge("ask", END)
    parent: Any = StateGraph(Ask)
    parent.add_node("prep", lambda state: {"value": state["value"] + "!"})
    parent.add_node("sub", sub.compile())
    parent.add_edge(START, "prep")
    parent.add_edge("prep", "sub")
    parent.add_edge("sub", END)
    graph = parent.compile(checkpointer=saver)
    cfg = config(f"ask-{uuid.uuid4()}")
    first = await graph.ainvoke({"value": "x", "answer": ""}, cfg)
    asked = [i.value for i in first["__interrupt__"]]
    state = await graph.aget_state(cfg, subgraphs=True)
    sub_state = state.tasks[0].state
    assert sub_state is not None
    assert not isinstance(sub_state, dict)
    view = (
        snapshot_view(state),
        snapshot_view(sub_state),
        [i.value for i in state.tasks[0].interrupts],
        sub_state.config["configurable"]["checkpoint_ns"].split(":")[0],
    )
    done = await graph.ainvoke(Command(resume="yes"), cfg)
    return asked, view, done


async def test_a_subgraph_interrupt_is_resumed_with_a_command(
    real_backend: SaverBackend,  # noqa: F811
) -> None:
    asked, view, done = await same_on_both(subgraph_interrupt_and_resume, real_backend)
    assert asked == [{"question": "approve x!?"}]
    assert view[0][1] == ("sub",)
    assert view[3] == "sub"
    assert done == {"value": "x!", "answer": "yes"}


# History, replay and forks


async def history_with_before_limit_filter(saver: Saver) -> Any:
    graph = counting_graph().compile(checkpointer=saver)
    cfg = config(f"history-{uuid.uuid4()}")
    await graph.ainvoke({"count": 0, "trail": []}, cfg)
    await graph.ainvoke({"count": 10, "trail": ["again"]}, cfg)
    history = [s async for s in graph.aget_state_history(cfg)]
    before = history[3].config
    return (
        [snapshot_view(s) for s in history],
        [snapshot_view(s) for s in [s async for s in graph.aget_state_history(cfg, limit=3)]],
        [
            snapshot_view(s)
            for s in [s async for s in graph.aget_state_history(cfg, before=before, limit=2)]
        ],
        [
            snapshot_view(s)
            for s in [s async for s in graph.aget_state_history(cfg, filter={"source": "input"})]
        ],
        [
            snapshot_view(s)
            for s in [s async for s in graph.aget_state_history(cfg, filter={"step": 2})]
        ],
    )


async def test_history_with_before_limit_and_filter(
    real_backend: SaverBackend,  # noqa: F811
) -> None:
    full, latest, page, inputs, steps = await same_on_both(
        history_with_before_limit_filter, real_backend
    )
    assert len(full) == 10
    assert latest == full[:3]
    assert page == full[4:6]
    assert [s[3] for s in inputs] == ["input", "input"]
    assert [s[2] for s in steps] == [2]


async def replay_and_fork(saver: Saver) -> Any:
    graph = counting_graph().compile(checkpointer=saver)
    cfg = config(f"replay-{uuid.uuid4()}")
    await graph.ainvoke({"count": 0, "trail": []}, cfg)
    history = [s async for s in graph.aget_state_history(cfg)]
    recorded = {s.config["configurable"]["checkpoint_id"]: (s.values, s.next) for s in history}
    before_n1 = next(s for s in history if s.next == ("n1",))
    replayed = await graph.ainvoke(None, before_n1.config)
    forked = await graph.aupdate_state(before_n1.config, {"count": 100})
    from_fork = await graph.ainvoke(None, forked)
    after = {}
    for checkpoint_id in recorded:
        state = await graph.aget_state(
            config(cfg["configurable"]["thread_id"], checkpoint_id=checkpoint_id)
        )
        after[checkpoint_id] = (state.values, state.next)
    unchanged = after == recorded
    total = len([s async for s in graph.aget_state_history(cfg)])
    latest = await graph.aget_state(cfg)
    return replayed, from_fork, unchanged, total, latest.values


async def test_replay_and_update_state_forks_leave_old_checkpoints_unchanged(
    real_backend: SaverBackend,  # noqa: F811
) -> None:
    replayed, from_fork, unchanged, total, latest = await same_on_both(
        replay_and_fork, real_backend
    )
    assert replayed == {"count": 3, "trail": ["n0", "n1", "n2"]}
    assert from_fork == {"count": 102, "trail": ["n0", "n1", "n2"]}
    assert unchanged
    assert latest == from_fork
    assert total > 5


# Values JSON cannot hold


class Rich(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]
    when: datetime
    raw: bytes
    tags: set[str]
    ids: tuple[int, ...]


async def non_json_values(saver: Saver) -> Any:
    def reply(state: Rich) -> dict[str, Any]:
        return {
            "messages": [AIMessage(content="hi", id="ai-1")],
            "when": state["when"].replace(year=2031),
            "raw": state["raw"] + b"\x00\xff",
            "tags": state["tags"] | {"answered"},
            "ids": (*state["ids"], 3),
        }

    builder: Any = StateGraph(Rich)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    builder.add_edge("reply", END)
    graph = builder.compile(checkpointer=saver)
    cfg = config(f"rich-{uuid.uuid4()}")
    await graph.ainvoke(
        {
            "messages": [HumanMessage(content="hello", id="h-1")],
            "when": datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
            "raw": b"\x01\x02",
            "tags": {"new"},
            "ids": (1, 2),
        },
        cfg,
    )
    return (await graph.aget_state(cfg)).values


async def test_values_json_cannot_hold_round_trip(
    real_backend: SaverBackend,  # noqa: F811
) -> None:
    values = await same_on_both(non_json_values, real_backend)
    assert values["when"] == datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert values["raw"] == b"\x01\x02\x00\xff"
    assert values["tags"] == {"new", "answered"}
    assert [m.content for m in values["messages"]] == ["hello", "hi"]
    assert isinstance(values["messages"][1], AIMessage)


# Many threads at once


async def many_threads(saver: Saver) -> Any:
    graph = counting_graph(4).compile(checkpointer=saver)
    run = uuid.uuid4().hex

    async def one(i: int) -> Any:
        out = await graph.ainvoke({"count": i, "trail": []}, config(f"many-{run}-{i}"))
        return out["count"], len(
            [s async for s in graph.aget_state_history(config(f"many-{run}-{i}"))]
        )

    return await asyncio.gather(*(one(i) for i in range(40)))


async def test_many_concurrent_threads_stay_apart(
    real_backend: SaverBackend,  # noqa: F811
) -> None:
    results = await same_on_both(many_threads, real_backend)
    assert results == [(i + 4, 6) for i in range(40)]


# The sync saver and the async saver's sync methods


def sync_graph_run(saver: Saver) -> Any:
    graph = counting_graph().compile(checkpointer=saver)
    cfg = config(f"sync-{uuid.uuid4()}")
    out = graph.invoke({"count": 0, "trail": []}, cfg)
    streamed = list(graph.stream({"count": 5, "trail": []}, cfg))
    history = [snapshot_view(s) for s in graph.get_state_history(cfg, limit=4)]
    return out, streamed, history


async def test_the_sync_saver_serves_invoke_and_stream(
    real_backend: SaverBackend,  # noqa: F811
) -> None:
    expected = await asyncio.to_thread(sync_graph_run, InMemorySaver())
    observed = await asyncio.to_thread(sync_graph_run, real_backend.make_sync())
    assert observed == expected
    assert observed[0] == {"count": 3, "trail": ["n0", "n1", "n2"]}


async def test_the_async_saver_serves_sync_calls_from_another_thread(
    real_backend: SaverBackend,  # noqa: F811
) -> None:
    saver = real_backend.make()
    graph = counting_graph().compile(checkpointer=saver)
    cfg = config(f"threads-{uuid.uuid4()}")
    await graph.ainvoke({"count": 0, "trail": []}, cfg)
    state = await asyncio.to_thread(graph.get_state, cfg)
    assert state.values == {"count": 3, "trail": ["n0", "n1", "n2"]}
    with pytest.raises(RuntimeError, match="another thread"):
        graph.get_state(cfg)
