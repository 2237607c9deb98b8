"""The demo: a small trip-planning agent whose every super-step is checkpointed.

plan -> three tool calls in parallel -> a human approval pause -> summarise. There is no network
and no model: the tools answer from a table, so every run prints the same story (only ids and
times change). :func:`run_demo` walks through what the store is for: a worker crashes mid-layer,
a second worker resumes from the last checkpoint, a human approves the pause, and a fork of a
past step with an edit is replayed as a branch of its own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..graph.outcomes import RunOutcome
from ..graph.reducers import AppendList, AppendMessages, MergeMap
from ..graph.runner import StatefulRunner
from ..graph.schema import StateSchema
from ..graph.steps import Step, StepContext, Writes, plan_layers
from ..store.checkpointer import Checkpointer
from ..store.ids import new_run_id
from ..store.types import JSON, Snapshot

WORKFLOW_ID = "demo-trip-planner"
REQUEST = "3 days in Lisbon for 2 people in May"
BUDGET_EUR = 1500
TOOLS: dict[str, dict[str, JSON]] = {
    "search_flights": {"offer": "TP1351 LHR-LIS return, 2 seats", "price_eur": 640},
    "find_hotels": {"offer": "Casa do Rio, 3 nights", "price_eur": 780},
    "check_weather": {"offer": "sunny, 24 C", "price_eur": 0},
}
CHEAPER_HOTEL: dict[str, JSON] = {"offer": "Pensao Azul, 3 nights", "price_eur": 510}
TOOL_LATENCY_S = 0.2
APPROVAL: dict[str, JSON] = {"approved": True, "by": "alice"}

SCHEMA = (
    StateSchema.builder()
    .add_lww("request")
    .add_lww("plan")
    .add("tool_results", MergeMap(), {})
    .add("messages", AppendMessages(), [])
    .add("trace", AppendList(), [])
    .add_lww("approval")
    .add_lww("summary")
    .build()
)

Connect = Callable[[], Checkpointer]
"""Opens the store as a new worker would: its own connection to the same Redis."""


def build_steps(worker: str, say: Callable[[str], None], crash_in: str | None = None) -> list[Step]:
    """The workflow's steps as ``worker`` runs them; ``crash_in`` names a tool that kills it."""

    async def plan(ctx: StepContext) -> Writes:
        say(f"[{worker}] plan: {ctx.read('request')} -> call {', '.join(TOOLS)}")
        note = f"I'll check {len(TOOLS)} sources in parallel, then ask you before booking."
        return {
            "plan": list(TOOLS),
            "messages": [{"id": "plan", "role": "ai", "content": note}],
            "trace": f"plan@{worker}",
        }

    def tool(name: str) -> Step:
        async def call(ctx: StepContext) -> Writes:
            say(f"[{worker}] calling tool {name}")
            if name == crash_in:
                raise ConnectionAbortedError(f"{worker} died while calling {name}")
            try:
                await asyncio.sleep(TOOL_LATENCY_S)
            except asyncio.CancelledError:
                say(f"[{worker}] {name} cancelled")
                raise
            result = TOOLS[name]
            return {
                "tool_results": {name: result},
                "messages": [{"id": f"tool:{name}", "role": "tool", "content": result["offer"]}],
                "trace": f"{name}@{worker}",
            }

        return Step(name, call, ["plan"])

    async def approve(ctx: StepContext) -> Writes:
        total = total_price(ctx.read("tool_results"))
        question = {"question": "Book this trip?", "total_eur": total, "budget_eur": BUDGET_EUR}
        decision = ctx.interrupt(question)
        say(f"[{worker}] approve: got {json.dumps(decision)}")
        return {"approval": decision, "trace": f"approve@{worker}"}

    async def summarise(ctx: StepContext) -> Writes:
        results = _tool_results(ctx.read("tool_results"))
        offers = "; ".join(str(result.get("offer")) for result in results.values())
        approval = ctx.read("approval")
        booked = isinstance(approval, dict) and approval.get("approved") is True
        summary = (
            f"{'Booked' if booked else 'Not booked'}: {offers}. Total EUR {total_price(results)}."
        )
        say(f"[{worker}] summarise")
        return {
            "summary": summary,
            "messages": [{"id": "summary", "role": "ai", "content": summary}],
            "trace": f"summarise@{worker}",
        }

    return [
        Step("plan", plan),
        *(tool(name) for name in TOOLS),
        Step("approve", approve, list(TOOLS)),
        Step("summarise", summarise, ["approve"]),
    ]


LAYERS = tuple(tuple(step.name for step in layer) for layer in plan_layers(build_steps("", print)))
"""The step names of each layer of the demo workflow."""


def total_price(results: object) -> int:
    """The sum of the ``price_eur`` of every tool result."""
    prices = (result.get("price_eur") for result in _tool_results(results).values())
    return sum(price for price in prices if isinstance(price, int))


def _tool_results(value: object) -> dict[str, dict[str, JSON]]:
    """The ``tool_results`` channel, keeping only well-formed results."""
    if not isinstance(value, dict):
        return {}
    return {name: result for name, result in value.items() if isinstance(result, dict)}


class DemoScript:
    """Prints the demo's story as it runs: steps, checkpoints, pauses and history."""

    def __init__(self, connect: Connect, console: Console) -> None:
        self.connect = connect
        self.console = console
        self.store = connect()

    def say(self, line: str, style: str = "") -> None:
        self.console.print(Text(line, style=style))

    def heading(self, title: str) -> None:
        self.console.print()
        self.console.rule(Text(title, style="bold"))

    def worker(self, name: str, run_id: str, crash_in: str | None = None) -> StatefulRunner:
        """A runner with its own connection, as on another machine."""

        def saved(snapshot: Snapshot) -> None:
            step = snapshot.key.super_step
            self.say(f"  checkpoint  super-step {step:<2} {snapshot.label:<20} by {name}", "green")

        steps = build_steps(name, lambda line: self.say(f"  {line}"), crash_in)
        return StatefulRunner(
            WORKFLOW_ID, run_id, steps, SCHEMA, self.connect(), on_checkpoint=saved
        )

    def report(self, outcome: RunOutcome) -> None:
        if outcome.pause is not None:
            pause = outcome.pause
            payload = json.dumps(pause.payload)
            self.say(f"  paused at '{pause.step}' ({pause.kind}): {payload}", "yellow")
        else:
            self.say(f"  completed: {outcome.state['summary']}", "bold green")
            trace = outcome.state["trace"]
            steps = ", ".join(map(str, trace)) if isinstance(trace, list) else ""
            self.say(f"  who ran what: {steps}")

    async def crash_and_resume(self, run_id: str) -> None:
        self.heading("1. worker-1 starts the run and crashes during the tool calls")
        try:
            await self.worker("worker-1", run_id, crash_in="find_hotels").start(
                {"request": REQUEST}
            )
        except ConnectionAbortedError as crash:  # the demo's simulated crash
            self.say(f"  worker-1 crashed: {crash}", "red")
        status = await self.worker("observer", run_id).status()
        error = status.last_error
        self.say(
            f"  status: {status.state} at super-step {status.super_step} ({status.label}); "
            f"failed step: {error.step if error else '-'}; the tool calls that finished are "
            "kept, so only the crashed one runs again"
        )
        self.heading("2. worker-2 picks the run up from the store")
        self.report(await self.worker("worker-2", run_id).run())

    async def approve(self, run_id: str, worker: str) -> RunOutcome:
        self.say(f"  a human approves on {worker}: {json.dumps(APPROVAL)}")
        outcome = await self.worker(worker, run_id).resume(APPROVAL)
        self.report(outcome)
        return outcome

    async def fork_and_replay(self, run_id: str) -> str:
        self.heading("4. time travel: fork after the tool calls, with a cheaper hotel")
        source = next(m for m in await self.store.list(WORKFLOW_ID, run_id) if m.label == "layer:1")
        snapshot = await self.store.load(source.key)
        results = _tool_results(None if snapshot is None else snapshot.values.get("tool_results"))
        edited = {**results, "find_hotels": CHEAPER_HOTEL}
        fork_id = await self.store.fork(source.key, {"tool_results": edited})
        self.say(f"  forked super-step {source.super_step} of {run_id} into {fork_id}")
        self.report(await self.worker("worker-2", fork_id).run())
        await self.approve(fork_id, "worker-2")
        return fork_id

    async def history(self, title: str, run_id: str) -> None:
        """Print ``list()`` of the run as a table."""
        self.say(f"{title}: {run_id}", "bold")
        table = Table()
        table.add_column("super-step", justify="right")
        table.add_column("label", no_wrap=True)
        table.add_column("what happened")
        table.add_column("saved at", no_wrap=True)
        for meta in await self.store.list(WORKFLOW_ID, run_id):
            saved_at = datetime.fromtimestamp(meta.timestamp_ms / 1000).strftime("%H:%M:%S.%f")
            label = _abbreviated(meta.label)
            table.add_row(str(meta.super_step), label, _describe(meta.label), saved_at[:-3])
        self.console.print(table)

    async def play(self) -> tuple[str, str]:
        """Play every scene; the ids of the run and of its fork."""
        run_id = new_run_id()
        self.say(f"workflow {WORKFLOW_ID}, run {run_id}")
        for index, layer in enumerate(LAYERS):
            self.say(f"  layer {index}: {', '.join(layer)}")
        await self.crash_and_resume(run_id)
        self.heading("3. the approval arrives; worker-3 resumes the paused run")
        await self.approve(run_id, "worker-3")
        fork_id = await self.fork_and_replay(run_id)
        self.heading("5. run history")
        await self.history("original run", run_id)
        await self.history("fork", fork_id)
        return run_id, fork_id


def _describe(label: str) -> str:
    """What a checkpoint label means, in words."""
    kind, _, detail = label.partition(":")
    if kind == "init":
        return "request received"
    if kind == "layer" and detail.isdigit() and int(detail) < len(LAYERS):
        return "ran " + ", ".join(LAYERS[int(detail)])
    if kind == "interrupt":
        return f"paused inside {detail}"
    if kind == "interrupt-before":
        return f"paused before {detail}"
    if kind == "interrupt-after":
        return f"paused after {detail}"
    if kind == "resume":
        return f"resumed after {detail}, nothing left to run"
    if kind == "fork-of":
        return "forked, with an edit"
    return label


def _abbreviated(label: str) -> str:
    """A label with any run id in it cut short, to fit a table."""
    kind, _, detail = label.partition(":")
    return f"{kind}:{detail[:12]}..." if kind == "fork-of" and len(detail) > 12 else label


async def run_demo(connect: Connect, console: Console) -> tuple[str, str]:
    """Play the whole demo against the store ``connect`` opens; the ids of the run and of its
    fork."""
    return await DemoScript(connect, console).play()
