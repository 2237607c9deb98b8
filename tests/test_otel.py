"""OpenTelemetry spans and metrics (the ``otel`` extra), with the SDK's in-memory exporters."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import fakeredis
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from atomr_redis_state import (
    CheckpointConflictError,
    Checkpointer,
    CheckpointKey,
    InMemoryCheckpointer,
    RedisCheckpointer,
    RetryPolicy,
    Snapshot,
    StatefulRunner,
    Step,
    StepContext,
    Writes,
)
from atomr_redis_state.observability import STATES, RunnerHooks, otel
from atomr_redis_state.testing import RedisServer
from tests.test_cli_support import SCHEMA, ToolDown, seed


@dataclass
class Otel:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.finished() if s.name.startswith(prefix)]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for m in scope.metrics
            if m.name == metric
            for point in m.data.data_points
        ]

    @property
    def providers(self) -> dict[str, Any]:
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}


@pytest.fixture
def telemetry() -> Iterator[Otel]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(spans, reader, tracer_provider, meter_provider)
    meter_provider.shutdown()
    tracer_provider.shutdown()


@pytest.fixture
async def fake_store() -> AsyncIterator[RedisCheckpointer]:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer(version=(7, 0)))
    yield RedisCheckpointer(client, prefix="otel")
    await client.aclose()


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_store_calls_make_client_spans_following_the_db_conventions(
    telemetry: Otel, fake_store: RedisCheckpointer
) -> None:
    store = otel.instrument(fake_store, **telemetry.providers)
    assert isinstance(store, Checkpointer)
    key = CheckpointKey("wf", "run-1", 0)
    await store.save(Snapshot(key, {"messages": ["hi"]}, label="init"))
    assert (await store.load(key)) is not None
    await store.latest("wf", "run-1")
    await store.list("wf", "run-1", limit=5)
    fork = await store.fork(key, {"messages": []})
    assert await store.list_runs("wf") == sorted(["run-1", fork])
    await store.run_record("wf", "run-1")
    assert await store.delete_run("wf", fork)
    names = [span.name for span in telemetry.finished()]
    assert names == [
        "atomr.save 0",
        "atomr.load 0",
        "atomr.latest 0",
        "atomr.list 0",
        "atomr.fork 0",
        "atomr.list_runs 0",
        "atomr.run_record 0",
        "atomr.delete_run 0",
    ]
    save = telemetry.finished()[0]
    assert save.kind is SpanKind.CLIENT
    assert attributes(save) == {
        "db.system.name": "redis",
        "db.operation.name": "atomr.save",
        "db.namespace": "0",
        "server.address": attributes(save)["server.address"],
        "server.port": 6379,
        "atomr.prefix": "otel",
        "atomr.workflow_id": "wf",
        "atomr.run_id": "run-1",
        "atomr.super_step": 0,
        "atomr.snapshot.bytes": attributes(save)["atomr.snapshot.bytes"],
    }
    assert attributes(save)["atomr.snapshot.bytes"] > len("messages")
    assert save.status.status_code is StatusCode.UNSET


async def test_operation_durations_conflicts_and_sizes_are_measured(
    telemetry: Otel, fake_store: RedisCheckpointer
) -> None:
    store = otel.instrument(fake_store, **telemetry.providers)
    key = CheckpointKey("wf", "run-1", 0)
    await store.save(Snapshot(key, {"text": "x" * 1000}), exclusive=True)
    with pytest.raises(CheckpointConflictError):
        await store.save(Snapshot(key, {"text": "y"}), exclusive=True)
    await store.load(key)
    durations = {
        (p.attributes["db.operation.name"], p.attributes.get("error.type")): p.count
        for p in telemetry.points("db.client.operation.duration")
    }
    assert durations == {
        ("atomr.save", None): 1,
        ("atomr.save", "atomr_redis_state.errors.CheckpointConflictError"): 1,
        ("atomr.load", None): 1,
    }
    point = telemetry.points("db.client.operation.duration")[0]
    assert point.attributes["db.system.name"] == "redis"
    assert "atomr.workflow_id" not in point.attributes  # no run ids on metrics
    conflicts = telemetry.points("atomr.store.conflicts")
    assert [(p.attributes["atomr.conflict"], p.value) for p in conflicts] == [("checkpoint", 1)]
    sizes = {p.attributes["db.operation.name"]: p for p in telemetry.points("atomr.snapshot.size")}
    assert sizes["atomr.save"].count == 2
    assert sizes["atomr.save"].max > 1000
    assert sizes["atomr.load"].count == 1
    failed = telemetry.finished()[1]
    assert failed.status.status_code is StatusCode.ERROR
    assert attributes(failed)["error.type"].endswith("CheckpointConflictError")


async def test_the_wrapper_forwards_everything_else(
    telemetry: Otel, fake_store: RedisCheckpointer
) -> None:
    store = otel.instrument(fake_store, **telemetry.providers)
    assert store.client is fake_store.client
    assert otel.instrument(store) is store
    assert "InstrumentedCheckpointer(RedisCheckpointer(" in repr(store)
    async with store as entered:
        assert entered is store
    async with store.watch("wf") as events:
        await fake_store.save(Snapshot(CheckpointKey("wf", "r", 0), {}))
        event = await anext(aiter(events))
    assert (event.kind, event.run_id) == ("saved", "r")


def test_the_package_exposes_the_otel_names_lazily() -> None:
    import atomr_redis_state.observability as observability

    assert observability.instrument is otel.instrument
    assert observability.instrument_runner is otel.instrument_runner
    assert observability.RunStatusSampler is otel.RunStatusSampler
    with pytest.raises(AttributeError):
        _ = observability.nothing_here


async def test_an_in_memory_store_is_not_called_redis(telemetry: Otel) -> None:
    store = otel.instrument(InMemoryCheckpointer(), **telemetry.providers)
    await store.latest("wf", "r")
    span = telemetry.finished()[0]
    assert span.name == "atomr.latest"
    assert attributes(span)["db.system.name"] == "atomr.memory"


async def test_server_address_and_port_of_a_real_redis(
    telemetry: Otel, redis_server: RedisServer
) -> None:
    async with RedisCheckpointer.from_url(redis_server.url, prefix="otel-real") as inner:
        store = otel.instrument(inner, **telemetry.providers)
        await store.latest("wf", "r")
    span = attributes(telemetry.finished()[0])
    assert span["server.address"] == "127.0.0.1"
    assert span["server.port"] == redis_server.port
    assert span["db.namespace"] == "0"


flaky_calls = 0


async def _flaky(ctx: StepContext) -> Writes:
    global flaky_calls
    flaky_calls += 1
    if ctx.attempt < 3:
        raise ToolDown("try again")
    return {"messages": "third time lucky"}


async def _plan(ctx: StepContext) -> Writes:
    return {"plan": "go"}


async def test_runner_calls_layers_and_steps_make_nested_spans(
    telemetry: Otel, fake_store: RedisCheckpointer
) -> None:
    steps = [
        Step("plan", _plan),
        Step("flaky", _flaky, ["plan"], retry=RetryPolicy(max_attempts=3, initial_delay=0.001)),
    ]
    runner = otel.instrument_runner(
        StatefulRunner("wf", "run-1", steps, SCHEMA, fake_store), **telemetry.providers
    )
    outcome = await runner.start({})
    assert outcome.completed
    call = telemetry.named("atomr.runner.start")
    assert [s.name for s in call] == ["atomr.runner.start"]
    assert attributes(call[0])["atomr.run.state"] == "completed"
    layers = telemetry.named("atomr.layer ")
    assert [(s.name, attributes(s)["atomr.layer.steps"]) for s in layers] == [
        ("atomr.layer 0", ("plan",)),
        ("atomr.layer 1", ("flaky",)),
    ]
    assert all(s.parent is not None and s.parent.span_id == call[0].context.span_id for s in layers)
    attempts = telemetry.named("atomr.step flaky")
    assert [attributes(s)["atomr.step.attempt"] for s in attempts] == [1, 2, 3]
    assert [s.status.status_code for s in attempts] == [
        StatusCode.ERROR,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert all(
        s.parent is not None and s.parent.span_id == layers[1].context.span_id for s in attempts
    )
    saves = [s for s in telemetry.named("atomr.save") if s.parent == layers[1].context]
    assert len(saves) == 1  # the layer's checkpoint is saved inside the layer span
    retries = telemetry.points("atomr.runner.step.retries")
    assert [(p.attributes["atomr.step"], p.value) for p in retries] == [("flaky", 2)]
    ended = telemetry.points("atomr.runner.runs")
    assert [(p.attributes["atomr.run.state"], p.value) for p in ended] == [("completed", 1)]


async def test_runs_ending_paused_and_failed_are_counted(
    telemetry: Otel, fake_store: RedisCheckpointer
) -> None:
    runner_of = otel.instrument_runner

    async def approve(ctx: StepContext) -> Writes:
        return {"approval": ctx.interrupt("ok?")}

    async def broken(ctx: StepContext) -> Writes:
        raise ToolDown("down")

    paused = runner_of(
        StatefulRunner("wf", "p", [Step("ask", approve)], SCHEMA, fake_store),
        **telemetry.providers,
    )
    assert (await paused.start({})).paused
    failing = runner_of(
        StatefulRunner("wf", "f", [Step("broken", broken)], SCHEMA, fake_store),
        **telemetry.providers,
    )
    with pytest.raises(ToolDown):
        await failing.start({})
    ended = {
        p.attributes["atomr.run.state"]: p.value for p in telemetry.points("atomr.runner.runs")
    }
    assert ended == {"paused": 1, "failed": 1}
    ask = telemetry.named("atomr.step ask")[0]
    assert ask.status.status_code is StatusCode.UNSET  # a pause is no error
    assert "error.type" not in attributes(ask)
    assert attributes(ask)["atomr.step.paused"] is True


async def test_a_refused_start_is_no_failed_run(
    telemetry: Otel, fake_store: RedisCheckpointer
) -> None:
    await StatefulRunner("wf", "r", [Step("plan", _plan)], SCHEMA, fake_store).start({})
    again = otel.instrument_runner(
        StatefulRunner("wf", "r", [Step("plan", _plan)], SCHEMA, fake_store),
        **telemetry.providers,
    )
    with pytest.raises(CheckpointConflictError):
        await again.start({})
    assert telemetry.points("atomr.runner.runs") == []
    [refused] = telemetry.points("atomr.runner.refusals")
    assert refused.value == 1
    assert refused.attributes["error.type"].endswith("CheckpointConflictError")
    [call] = telemetry.named("atomr.runner.start")
    assert attributes(call)["atomr.run.refused"] is True
    assert "atomr.run.state" not in attributes(call)


async def test_span_names_carry_no_ids(telemetry: Otel, fake_store: RedisCheckpointer) -> None:
    for run in ("run-a", "run-b"):
        runner = StatefulRunner(f"wf-{run}", run, [Step("plan", _plan)], SCHEMA, fake_store)
        await otel.instrument_runner(runner, **telemetry.providers).start({})
    names = {span.name for span in telemetry.finished()}
    assert not any("run-" in name or "wf-" in name for name in names), names


async def test_beside_redis_instrumentation_the_store_makes_no_client_spans(
    telemetry: Otel, fake_store: RedisCheckpointer
) -> None:
    store = otel.instrument(fake_store, client_spans=False, **telemetry.providers)
    await store.save(Snapshot(CheckpointKey("wf", "run-1", 0), {}))
    [save] = telemetry.finished()
    assert save.name == "atomr.save"
    assert save.kind is SpanKind.INTERNAL
    assert not any(k.startswith(("db.", "server.")) for k in attributes(save))
    assert attributes(save)["atomr.operation"] == "atomr.save"
    assert telemetry.points("db.client.operation.duration") == []
    [duration] = telemetry.points("atomr.store.operation.duration")
    assert duration.count == 1


async def test_the_run_status_gauge_counts_runs_by_state(
    telemetry: Otel, fake_store: RedisCheckpointer
) -> None:
    await seed(fake_store, "wf-a")
    sampler = otel.RunStatusSampler(
        fake_store, ["wf-a", "wf-empty"], meter_provider=telemetry.meter_provider
    )
    assert telemetry.points("atomr.runs") == []
    counts = await sampler.refresh()
    assert counts[("wf-a", "completed")] == 1
    gauge = {
        (p.attributes["atomr.workflow_id"], p.attributes["atomr.run.state"]): p.value
        for p in telemetry.points("atomr.runs")
    }
    expected = {
        (workflow, state): 0
        for workflow in ("wf-a", "wf-empty")
        for state in STATES
        if state != "not_found"
    }
    expected |= {
        ("wf-a", "forked"): 1,  # the fork, not run further
        ("wf-a", "paused"): 1,
        ("wf-a", "completed"): 1,
        ("wf-a", "failed"): 1,
    }
    assert gauge == expected


async def test_the_queue_depth_gauge_counts_each_workflows_runs_by_queue_part(
    telemetry: Otel, fake_store: RedisCheckpointer
) -> None:
    for run in ("r1", "r2", "r3"):
        await fake_store.submit(Snapshot(CheckpointKey("wf-q", run, 0), {}))
    later = Snapshot(CheckpointKey("wf-q", "later", 0), {})
    await fake_store.submit(later, not_before=timedelta(hours=1))
    claim = await fake_store.claim("wf-q", "worker-1", 30)
    assert claim is not None
    sampler = otel.QueueDepthSampler(
        fake_store, ["wf-q", "wf-idle"], meter_provider=telemetry.meter_provider
    )
    assert telemetry.points("atomr.queue.depth") == []
    await sampler.refresh()
    gauge = {
        (p.attributes["atomr.workflow_id"], p.attributes["atomr.queue.state"]): p.value
        for p in telemetry.points("atomr.queue.depth")
    }
    parts = ("ready", "delayed", "running", "paused", "failed", "blocked")
    assert gauge == {
        **{("wf-q", part): count for part, count in zip(parts, (2, 1, 1, 0, 0, 0), strict=True)},
        **{("wf-idle", part): 0 for part in parts},
    }


def test_without_opentelemetry_nothing_is_imported_and_the_error_says_what_to_install() -> None:
    script = """
import sys
sys.modules["opentelemetry"] = None
import atomr_redis_state, atomr_redis_state.observability, atomr_redis_state.cli.app
assert not [m for m, v in sys.modules.items() if m.startswith("opentelemetry") and v], "imported"
for load in (
    lambda: __import__("atomr_redis_state.observability.otel"),
    lambda: atomr_redis_state.observability.instrument,
):
    try:
        load()
    except ImportError as exc:
        print(exc)
    else:
        raise SystemExit("no ImportError")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    hint = (
        "atomr_redis_state.observability.otel needs OpenTelemetry: "
        "pip install 'atomr-redis-state[otel]'"
    )
    assert done.stdout.splitlines() == [hint, hint]


class HookedRunner(StatefulRunner):
    """A runner that takes the telemetry hooks itself (the wired-in way)."""

    telemetry: RunnerHooks | None = None


async def test_a_runner_with_a_telemetry_hook_gets_it_instead_of_being_wrapped(
    telemetry: Otel, fake_store: RedisCheckpointer
) -> None:
    runner = HookedRunner("wf", "r", [Step("plan", _plan)], SCHEMA, fake_store)
    assert otel.instrument_runner(runner, **telemetry.providers) is runner
    assert isinstance(runner.telemetry, otel.RunnerTelemetry)
    hooks: RunnerHooks = runner.telemetry  # RunnerTelemetry implements the protocol
    assert hooks is runner.telemetry
    assert "_run_layer" not in vars(runner)
    assert "_call" not in vars(runner)
    assert isinstance(runner.checkpointer, otel.InstrumentedCheckpointer)
    await runner.start({})
    assert [s.name for s in telemetry.named("atomr.runner.")] == ["atomr.runner.start"]
