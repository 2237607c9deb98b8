"""OpenTelemetry spans and metrics for the store and the runner: the ``otel`` extra.

Nothing here runs unless you call it: the library never imports this module itself, so without
the extra (``pip install 'atomr-redis-state[otel]'``) nothing is imported, wrapped or measured.

- :func:`instrument` wraps a :class:`~atomr_redis_state.Checkpointer`: a CLIENT span per store
  call, following OpenTelemetry's database-client conventions for Redis (``db.system.name``,
  ``db.operation.name``, ``db.namespace``, ``server.address``, ``server.port``, ``error.type``),
  the ``db.client.operation.duration`` histogram, and counters of conflicts and snapshot bytes.
- :func:`instrument_runner` adds spans for a :class:`~atomr_redis_state.StatefulRunner`'s
  ``start``/``run``/``resume``, each layer and each step attempt, counts step retries and the
  runs that end in each state, and instruments the runner's store.
- :class:`RunStatusSampler` reads how many runs of some workflows are in each state, every so
  often, for the ``atomr.runs`` gauge (one sampler per fleet is enough).
- :class:`QueueDepthSampler` reads the depth of some workflows' ready queues (ready, delayed,
  running, paused, failed, blocked), every so often, for the ``atomr.queue.depth`` gauge.

Spans and metrics go to the global tracer and meter providers unless you pass your own.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

try:
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import MeterProvider, Observation
    from opentelemetry.trace import Span, SpanKind, StatusCode, TracerProvider
except ImportError as exc:  # pragma: no cover: exercised in a subprocess by the tests
    raise ImportError(
        "atomr_redis_state.observability.otel needs OpenTelemetry: "
        "pip install 'atomr-redis-state[otel]'"
    ) from exc

import orjson

from ..errors import (
    CheckpointConflictError,
    Interrupt,
    LeaseHeldError,
    LeaseLostError,
    RunNotFoundError,
    RunNotPausedError,
    WorkflowChangedError,
)
from ..graph.outcomes import RunOutcome
from ..graph.runner import StatefulRunner
from ..graph.steps import StepContext
from ..store.checkpointer import Checkpointer, Edits
from ..store.types import CheckpointEvent, CheckpointKey, CheckpointMeta, Lease, RunRecord
from ..store.types import Snapshot as _Snapshot
from .runs import STATES, all_runs, summarise_run

log = logging.getLogger(__name__)

SCOPE = "atomr_redis_state"
"""The instrumentation scope of every span and metric here."""

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
"""The buckets OpenTelemetry's conventions advise for ``db.client.operation.duration``."""

REFUSALS: tuple[type[Exception], ...] = (
    CheckpointConflictError,
    LeaseHeldError,
    RunNotFoundError,
    RunNotPausedError,
    WorkflowChangedError,
)
"""What ``start``/``run``/``resume`` raise when they refuse to run at all (the run exists,
another worker holds it, it is not there or not paused, the steps changed): not a failed run."""

T = TypeVar("T")
C = TypeVar("C", bound=Checkpointer)


class Telemetry:
    """The tracer, the meter and every instrument, shared by the wrappers below."""

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        from .. import __name__ as package

        version = _version()
        self.tracer = trace.get_tracer(package, version, tracer_provider)
        self.meter = metrics.get_meter(package, version, meter_provider)
        self.duration = self.meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of checkpoint store operations.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.conflicts = self.meter.create_counter(
            "atomr.store.conflicts",
            unit="{conflict}",
            description="Store calls refused by a race: an existing step, or a lease.",
        )
        self.snapshot_bytes = self.meter.create_histogram(
            "atomr.snapshot.size",
            unit="By",
            description="Encoded size of the snapshots saved and read (channels and metadata).",
        )
        self.store_duration = self.meter.create_histogram(
            "atomr.store.operation.duration",
            unit="s",
            description=(
                "Duration of checkpoint store operations, when the store's spans leave the "
                "database-client conventions to redis-py's own instrumentation."
            ),
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.refusals = self.meter.create_counter(
            "atomr.runner.refusals",
            unit="{call}",
            description="start/run/resume calls refused before running anything, by error type.",
        )
        self.retries = self.meter.create_counter(
            "atomr.runner.step.retries",
            unit="{retry}",
            description="Step attempts after the first.",
        )
        self.runs_ended = self.meter.create_counter(
            "atomr.runner.runs",
            unit="{run}",
            description="start/run/resume calls, by the state the run was left in.",
        )


_default: Telemetry | None = None


def _telemetry(
    tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None
) -> Telemetry:
    global _default
    if tracer_provider is not None or meter_provider is not None:
        return Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    if _default is None:
        _default = Telemetry()
    return _default


def instrument(
    checkpointer: Checkpointer,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    measure_sizes: bool = True,
    client_spans: bool = True,
) -> InstrumentedCheckpointer:
    """Wrap ``checkpointer`` so that every call makes a span and feeds the store metrics.

    The wrapper is a :class:`~atomr_redis_state.Checkpointer` itself; anything else (``client``,
    ``aclose``, ``async with``) goes through to the wrapped store. ``measure_sizes`` records the
    encoded size of the snapshots saved and read (one extra JSON encoding per call).

    ``client_spans=False`` is for running beside redis-py's own OpenTelemetry instrumentation
    (``opentelemetry-instrumentation-redis``), which already makes a CLIENT span per Redis
    command: the store's spans become INTERNAL, without the ``db.*``/``server.*`` attributes,
    and their durations go to ``atomr.store.operation.duration`` instead of
    ``db.client.operation.duration``. Database calls are then counted once, by redis-py's
    spans, which nest under the store's logical ``atomr.*`` spans.
    """
    if isinstance(checkpointer, InstrumentedCheckpointer):
        return checkpointer
    return InstrumentedCheckpointer(
        checkpointer,
        _telemetry(tracer_provider, meter_provider),
        measure_sizes=measure_sizes,
        client_spans=client_spans,
    )


class InstrumentedCheckpointer:
    """A :class:`~atomr_redis_state.Checkpointer` that traces and measures another one."""

    def __init__(
        self,
        inner: Checkpointer,
        telemetry: Telemetry,
        *,
        measure_sizes: bool = True,
        client_spans: bool = True,
    ) -> None:
        self.inner = inner
        self.telemetry = telemetry
        self.measure_sizes = measure_sizes
        self.client_spans = client_spans
        self._base = _connection_attributes(inner)
        namespace = self._base.get("db.namespace")
        self._target = f" {namespace}" if namespace is not None else ""
        if not client_spans:  # redis-py's instrumentation describes the database calls
            self._base = {k: v for k, v in self._base.items() if k.startswith("atomr.")}
            self._target = ""
        self._kind = SpanKind.CLIENT if client_spans else SpanKind.INTERNAL
        self._duration = telemetry.duration if client_spans else telemetry.store_duration

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"InstrumentedCheckpointer({self.inner!r})"

    async def __aenter__(self) -> InstrumentedCheckpointer:
        enter = getattr(self.inner, "__aenter__", None)
        if enter is not None:
            await enter()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        leave = getattr(self.inner, "__aexit__", None)
        if leave is not None:
            await leave(*exc_info)

    async def _traced(
        self,
        operation: str,
        call: Callable[[], Awaitable[T]],
        *,
        workflow_id: str | None = None,
        run_id: str | None = None,
        super_step: int | None = None,
    ) -> T:
        name = f"atomr.{operation}"
        operation_key = "db.operation.name" if self.client_spans else "atomr.operation"
        attributes: dict[str, Any] = {**self._base, operation_key: name}
        span_attributes = dict(attributes)
        for key, value in (
            ("atomr.workflow_id", workflow_id),
            ("atomr.run_id", run_id),
            ("atomr.super_step", super_step),
        ):
            if value is not None:
                span_attributes[key] = value
        started = time.perf_counter()
        with self.telemetry.tracer.start_as_current_span(
            name + self._target,
            kind=self._kind,
            attributes=span_attributes,
            record_exception=True,
            set_status_on_exception=True,
        ) as span:
            try:
                return await call()
            except BaseException as exc:
                error = _error_type(exc)
                attributes["error.type"] = error
                span.set_attribute("error.type", error)
                conflict = _conflict_kind(exc)
                if conflict is not None:
                    self.telemetry.conflicts.add(
                        1, {**self._base, operation_key: name, "atomr.conflict": conflict}
                    )
                raise
            finally:
                self._duration.record(time.perf_counter() - started, attributes)

    def _measure(self, span: Span | None, operation: str, snapshot: _Snapshot | None) -> None:
        if snapshot is None or not self.measure_sizes:
            return
        size = _encoded_size(snapshot)
        operation_key = "db.operation.name" if self.client_spans else "atomr.operation"
        self.telemetry.snapshot_bytes.record(
            size, {**self._base, operation_key: f"atomr.{operation}"}
        )
        if span is not None and span.is_recording():
            span.set_attribute("atomr.snapshot.bytes", size)

    # Keyword options go through as they are, so new ones of the protocol need no change here.

    async def save(self, snapshot: _Snapshot, **options: Any) -> None:
        async def call() -> None:
            self._measure(trace.get_current_span(), "save", snapshot)
            await self.inner.save(snapshot, **options)

        key = snapshot.key
        await self._traced(
            "save",
            call,
            workflow_id=key.workflow_id,
            run_id=key.run_id,
            super_step=key.super_step,
        )

    async def load(self, key: CheckpointKey) -> _Snapshot | None:
        async def call() -> _Snapshot | None:
            found = await self.inner.load(key)
            self._measure(trace.get_current_span(), "load", found)
            return found

        return await self._traced(
            "load", call, workflow_id=key.workflow_id, run_id=key.run_id, super_step=key.super_step
        )

    async def latest(self, workflow_id: str, run_id: str) -> _Snapshot | None:
        async def call() -> _Snapshot | None:
            found = await self.inner.latest(workflow_id, run_id)
            self._measure(trace.get_current_span(), "latest", found)
            return found

        return await self._traced("latest", call, workflow_id=workflow_id, run_id=run_id)

    async def list(
        self, workflow_id: str, run_id: str, **options: Any
    ) -> builtins.list[CheckpointMeta]:
        return await self._traced(
            "list",
            lambda: self.inner.list(workflow_id, run_id, **options),
            workflow_id=workflow_id,
            run_id=run_id,
        )

    async def fork(
        self, from_key: CheckpointKey, edits: Edits | None = None, **options: Any
    ) -> str:
        return await self._traced(
            "fork",
            lambda: self.inner.fork(from_key, edits, **options),
            workflow_id=from_key.workflow_id,
            run_id=from_key.run_id,
            super_step=from_key.super_step,
        )

    async def list_runs(self, workflow_id: str, **options: Any) -> builtins.list[str]:
        return await self._traced(
            "list_runs",
            lambda: self.inner.list_runs(workflow_id, **options),
            workflow_id=workflow_id,
        )

    async def list_workflows(self, **options: Any) -> builtins.list[str]:
        return await self._traced("list_workflows", lambda: self.inner.list_workflows(**options))

    async def delete_run(self, workflow_id: str, run_id: str) -> bool:
        return await self._traced(
            "delete_run",
            lambda: self.inner.delete_run(workflow_id, run_id),
            workflow_id=workflow_id,
            run_id=run_id,
        )

    async def acquire_lease(
        self, workflow_id: str, run_id: str, owner: str, ttl: Any, **options: Any
    ) -> Lease:
        return await self._traced(
            "acquire_lease",
            lambda: self.inner.acquire_lease(workflow_id, run_id, owner, ttl, **options),
            workflow_id=workflow_id,
            run_id=run_id,
        )

    async def renew_lease(self, lease: Lease) -> Lease:
        return await self._traced(
            "renew_lease",
            lambda: self.inner.renew_lease(lease),
            workflow_id=lease.workflow_id,
            run_id=lease.run_id,
        )

    async def release_lease(self, lease: Lease, **options: Any) -> bool:
        return await self._traced(
            "release_lease",
            lambda: self.inner.release_lease(lease, **options),
            workflow_id=lease.workflow_id,
            run_id=lease.run_id,
        )

    async def run_record(self, workflow_id: str, run_id: str) -> RunRecord:
        return await self._traced(
            "run_record",
            lambda: self.inner.run_record(workflow_id, run_id),
            workflow_id=workflow_id,
            run_id=run_id,
        )

    def watch(
        self, workflow_id: str, run_id: str | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[CheckpointEvent]]:
        """The wrapped store's event stream, untraced (a subscription is no single call)."""
        return self.inner.watch(workflow_id, run_id)


class RunnerTelemetry:
    """Spans and metrics for a runner's calls, layers and step attempts.

    :func:`instrument_runner` applies it to a runner; a runner can also call these hooks
    itself: ``layer()`` around each layer, ``step()`` around each step attempt.
    """

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    @contextlib.contextmanager
    def call(self, method: str, workflow_id: str, run_id: str) -> Iterator[Span]:
        """A span around ``start``/``run``/``resume`` (named by the method alone: the ids are
        attributes, so span names stay few)."""
        with self.telemetry.tracer.start_as_current_span(
            f"atomr.runner.{method}",
            kind=SpanKind.INTERNAL,
            attributes={"atomr.workflow_id": workflow_id, "atomr.run_id": run_id},
        ) as span:
            yield span

    def ended(self, span: Span, workflow_id: str, outcome: RunOutcome | None) -> None:
        """Count a run left ``completed``/``paused`` (``outcome``) or ``failed`` (None)."""
        state = "failed" if outcome is None else "completed" if outcome.completed else "paused"
        span.set_attribute("atomr.run.state", state)
        if outcome is not None:
            span.set_attribute("atomr.super_step", outcome.super_step)
        self.telemetry.runs_ended.add(
            1, {"atomr.workflow_id": workflow_id, "atomr.run.state": state}
        )

    def refused(self, span: Span, workflow_id: str, error: BaseException) -> None:
        """Count a call refused before it ran anything (see :data:`REFUSALS`): the run did not
        fail, it was left as it was."""
        error_type = _error_type(error)
        span.set_attribute("atomr.run.refused", True)
        self.telemetry.refusals.add(1, {"atomr.workflow_id": workflow_id, "error.type": error_type})

    @contextlib.contextmanager
    def layer(
        self, workflow_id: str, run_id: str, index: int, steps: Sequence[str], super_step: int
    ) -> Iterator[Span]:
        """A span around one layer: its steps run concurrently inside it, then it is saved."""
        with self.telemetry.tracer.start_as_current_span(
            f"atomr.layer {index}",
            kind=SpanKind.INTERNAL,
            attributes={
                "atomr.workflow_id": workflow_id,
                "atomr.run_id": run_id,
                "atomr.layer": index,
                "atomr.layer.steps": list(steps),
                "atomr.super_step": super_step,
            },
        ) as span:
            yield span

    @contextlib.contextmanager
    def step(self, context: StepContext) -> Iterator[Span]:
        """A span around one attempt of a step; an attempt after the first counts as a retry."""
        if context.attempt > 1:
            self.telemetry.retries.add(
                1, {"atomr.workflow_id": context.workflow_id, "atomr.step": context.step}
            )
        with self.telemetry.tracer.start_as_current_span(
            f"atomr.step {context.step}",
            kind=SpanKind.INTERNAL,
            attributes={
                "atomr.workflow_id": context.workflow_id,
                "atomr.run_id": context.run_id,
                "atomr.step": context.step,
                "atomr.step.attempt": context.attempt,
                "atomr.super_step": context.super_step,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except Interrupt:  # a pause is no error: error-rate views must not count it
                span.set_attribute("atomr.step.paused", True)
                raise
            except BaseException as exc:
                span.set_attribute("error.type", _error_type(exc))
                span.record_exception(exc)
                span.set_status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}")
                raise


def instrument_runner(
    runner: StatefulRunner,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    client_spans: bool = True,
) -> StatefulRunner:
    """Trace ``runner``'s calls, layers and step attempts, and instrument its store
    (``client_spans`` as for :func:`instrument`).

    Returns the same runner, its ``telemetry`` hooks set to a :class:`RunnerTelemetry`.
    """
    telemetry = _telemetry(tracer_provider, meter_provider)
    hooks = RunnerTelemetry(telemetry)
    runner.checkpointer = instrument(
        runner.checkpointer,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        client_spans=client_spans,
    )
    for method in ("start", "run", "resume"):
        setattr(runner, method, _traced_call(runner, method, hooks))
    runner.telemetry = hooks
    return runner


def _traced_call(
    runner: StatefulRunner, method: str, hooks: RunnerTelemetry
) -> Callable[..., Awaitable[RunOutcome]]:
    original: Callable[..., Awaitable[RunOutcome]] = getattr(runner, method)

    @functools.wraps(original)
    async def traced(*args: Any, **kwargs: Any) -> RunOutcome:
        with hooks.call(method, runner.workflow_id, runner.run_id) as span:
            try:
                outcome = await original(*args, **kwargs)
            except REFUSALS as refusal:
                hooks.refused(span, runner.workflow_id, refusal)
                raise
            except Exception:
                hooks.ended(span, runner.workflow_id, None)
                raise
            hooks.ended(span, runner.workflow_id, outcome)
            return outcome

    return traced


class _Sampler:
    """Counts read from the store every ``interval`` seconds, reported by an observable gauge
    (its callback cannot await): run :meth:`run` as a task, or call :meth:`refresh` yourself."""

    def __init__(
        self,
        checkpointer: Checkpointer,
        workflow_ids: Iterable[str],
        interval: float,
        meter_provider: MeterProvider | None,
    ) -> None:
        self.checkpointer = checkpointer
        self.workflow_ids = tuple(workflow_ids)
        self.interval = interval
        self.counts: dict[tuple[str, str], int] = {}
        self.meter = metrics.get_meter(SCOPE, _version(), meter_provider)

    async def refresh(self) -> dict[tuple[str, str], int]:
        """Read the counts now; they are also what the gauge reports from then on."""
        self.counts = await self._read()
        return self.counts

    async def _read(self) -> dict[tuple[str, str], int]:
        raise NotImplementedError

    async def run(self) -> None:
        """Refresh every ``interval`` seconds, until cancelled."""
        while True:
            try:
                await self.refresh()
            except Exception:
                log.warning("%s: sampling failed", type(self).__name__, exc_info=True)
            await asyncio.sleep(self.interval)

    def _observations(self, state_attribute: str) -> builtins.list[Observation]:
        return [
            Observation(count, {"atomr.workflow_id": workflow_id, state_attribute: state})
            for (workflow_id, state), count in sorted(self.counts.items())
        ]


class RunStatusSampler(_Sampler):
    """How many runs of ``workflow_ids`` are in each state: the ``atomr.runs`` gauge.

    Reading every run's status costs two reads per run, so the sampler refreshes every
    ``interval`` seconds (run :meth:`run` as a task, or call :meth:`refresh` yourself) and the
    gauge reports the last counts. Run one per fleet, not one per worker.
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        workflow_ids: Iterable[str],
        *,
        interval: float = 60.0,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        super().__init__(checkpointer, workflow_ids, interval, meter_provider)
        self.meter.create_observable_gauge(
            "atomr.runs",
            callbacks=[lambda _: self._observations("atomr.run.state")],
            unit="{run}",
            description="Runs of each workflow in each state, as last sampled.",
        )

    async def _read(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for workflow_id in self.workflow_ids:
            for state in STATES:
                if state != "not_found":
                    counts[(workflow_id, state)] = 0
            async for run_id in all_runs(self.checkpointer, workflow_id):
                status = await summarise_run(self.checkpointer, workflow_id, run_id)
                key = (workflow_id, status.state)
                counts[key] = counts.get(key, 0) + 1
        return counts


QUEUE_PARTS = ("ready", "delayed", "running", "paused", "failed", "blocked")
"""The parts of a workflow's ready queue that :class:`QueueDepthSampler` reports."""


class QueueDepthSampler(_Sampler):
    """How many runs of each of ``workflow_ids`` are in each part of its ready queue (ready,
    delayed, running, paused, failed, blocked): the ``atomr.queue.depth`` gauge.

    One :meth:`~atomr_redis_state.Checkpointer.queue_depth` call per workflow and refresh
    (counters the store keeps: no run is read), every ``interval`` seconds. Run one per fleet
    (or in each worker: the figures are the fleet's, so aggregate them with ``max``, not ``sum``).
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        workflow_ids: Iterable[str],
        *,
        interval: float = 15.0,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        super().__init__(checkpointer, workflow_ids, interval, meter_provider)
        self.meter.create_observable_gauge(
            "atomr.queue.depth",
            callbacks=[lambda _: self._observations("atomr.queue.state")],
            unit="{run}",
            description="Runs of each workflow in each part of its ready queue, as last sampled.",
        )

    async def _read(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for workflow_id in self.workflow_ids:
            depth = await self.checkpointer.queue_depth(workflow_id)
            for part in QUEUE_PARTS:
                counts[(workflow_id, part)] = getattr(depth, part)
        return counts


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("atomr-redis-state")
    except PackageNotFoundError:  # pragma: no cover
        return "0"


def _connection_attributes(checkpointer: Checkpointer) -> dict[str, Any]:
    """``db.system.name``, ``db.namespace``, ``server.*`` and the prefix, where known."""
    attributes: dict[str, Any] = {"db.system.name": "redis"}
    keys = getattr(checkpointer, "keys", None)
    prefix = getattr(keys, "prefix", None)
    if isinstance(prefix, str):
        attributes["atomr.prefix"] = prefix
    client = getattr(checkpointer, "client", None)
    if client is None:
        attributes["db.system.name"] = "atomr.memory"  # not Redis: InMemoryCheckpointer
        return attributes
    pool = getattr(client, "connection_pool", None)
    options = getattr(pool, "connection_kwargs", None)
    if isinstance(options, dict):
        if options.get("db") is not None:
            attributes["db.namespace"] = str(options["db"])
        if isinstance(options.get("host"), str):
            attributes["server.address"] = options["host"]
        if isinstance(options.get("port"), int):
            attributes["server.port"] = options["port"]
    else:  # a RedisCluster: the node it was pointed at
        nodes = getattr(getattr(client, "nodes_manager", None), "startup_nodes", None)
        if isinstance(nodes, dict) and nodes:
            node = next(iter(nodes.values()))
            attributes["server.address"] = node.host
            attributes["server.port"] = node.port
            attributes["db.namespace"] = "0"
    return attributes


def _encoded_size(snapshot: _Snapshot) -> int:
    size = len(snapshot.label.encode()) + len(str(snapshot.timestamp_ms))
    for channel, value in snapshot.values.items():
        size += len(channel.encode()) + len(orjson.dumps(value))
    if snapshot.metadata:
        size += len(orjson.dumps(snapshot.metadata))
    return size


def _error_type(exc: BaseException) -> str:
    kind = type(exc)
    return (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )


def _conflict_kind(exc: BaseException) -> str | None:
    if isinstance(exc, CheckpointConflictError):
        return "checkpoint"
    if isinstance(exc, LeaseHeldError):
        return "lease_held"
    if isinstance(exc, LeaseLostError):
        return "lease_lost"
    return None
