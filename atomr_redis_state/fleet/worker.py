"""A worker process of the fleet: claims runs from the ready queue and runs them.

:class:`Worker` runs up to ``concurrency`` runs at once, of any of its workflows, taking them
from the store's queue (:meth:`~..store.checkpointer.Checkpointer.claim`) in turn per workflow.
Each claimed run gets a :class:`~..graph.runner.StatefulRunner` under the claimed lease, which it
renews while steps run; the run's end settles the claim (``finish``):

- completed, or paused for a human: ``completed`` / ``paused``;
- a step's error (after the step's own retries): ``retry``, queued again after the workflow's
  :class:`~.workflow.Backoff`, until ``max_attempts`` failed attempts make it a dead letter
  (``failed``);
- :class:`~..errors.WorkflowChangedError` (a deploy the run cannot carry over): ``blocked``,
  with the changes as the reason, until someone requeues it;
- :class:`~..errors.LeaseLostError`: the run was taken over (this worker stalled past its
  lease) or deleted; nothing is settled, the new owner does it.

While idle, a worker waits on the store's wake-ups (a run queued or released anywhere), and
otherwise looks at the queue at most once a second (sooner when a delayed run or a lease deadline
comes due), so a crashed worker's run is taken over within about a second of its lease's end.

A workflow's ``max_in_flight`` caps its runs in flight across the whole fleet: before claiming
one, a worker takes one of the workflow's permits (``take_permit``), renews it with its heartbeat
while the run goes on, and drops it at the run's end; a crashed worker's permits expire after
``max(lease_ttl, 3 * heartbeat_every)``. That costs two more calls per claim of a capped
workflow.

Health: every ``heartbeat_every`` the worker writes its own heartbeat key (its id, host, pid,
workflows and the runs it holds), living three beats: ``store.workers()`` lists live workers,
and one worker's heartbeat never touches another's.

Graceful shutdown (:meth:`Worker.stop`, or SIGTERM/SIGINT with :meth:`Worker.handle_signals`):
the worker stops claiming; each run stops at its next checkpoint (so its current layer finishes
and is saved) and is released to the queue at once; runs still going after ``grace`` seconds
are cancelled and released at once, so another worker continues without waiting for a lease
to expire. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from ..errors import LeaseLostError, RunCancelledError, WorkerStopping, WorkflowChangedError
from ..graph.outcomes import RunOutcome
from ..graph.progress import Progress
from ..graph.runner import default_owner
from ..store.archive import archive
from ..store.checkpointer import Checkpointer
from ..store.types import JSON, Claim, Outcome, Snapshot, now_ms
from ..store.validation import check_owner, check_positive_int, duration_to_ms
from .workflow import Target, Workflow, as_registry

if TYPE_CHECKING:
    from ..observability.hooks import RunnerHooks

log = logging.getLogger(__name__)

DEFAULT_LEASE_TTL = 15.0
"""Seconds a worker's lease on a run lasts without renewal (renewed every third of it).

Agents' steps wait on models and tools for seconds to minutes; the lease does not bound a step
(it is renewed in the background), only how long a crashed worker's run waits: 15 s keeps a
takeover under 16 s after a ``SIGKILL`` while tolerating a stall (a GC pause, a slow network,
a loaded event loop) of up to 10 s without a false takeover. The runner's own default (30 s)
is for inline use, where nobody waits on a takeover."""

DEFAULT_GRACE = 30.0
"""Seconds a graceful shutdown lets running layers finish before releasing their runs
(Kubernetes' default ``terminationGracePeriodSeconds`` is 30: set it a little higher)."""

HEARTBEAT_EVERY = 5.0
"""Seconds between two heartbeats; a heartbeat lives three of them."""

POLL = 1.0
"""Seconds an idle worker waits at most before it looks at the queue again."""


@dataclass(slots=True)
class WorkerStats:
    """What a worker has done since it started."""

    claimed: int = 0
    taken_over: int = 0
    completed: int = 0
    paused: int = 0
    retried: int = 0
    failed: int = 0
    blocked: int = 0
    released: int = 0
    cancelled: int = 0
    lost: int = 0
    archived: int = 0


class Worker:
    """Claims and runs the runs of ``workflows`` from ``store``'s ready queue.

    ``concurrency`` is how many runs this process runs at once; ``worker_id`` names it (and
    its leases; default: host, pid and a random suffix); ``lease_ttl`` is the lease each claim
    takes (see :data:`DEFAULT_LEASE_TTL`); ``grace`` bounds a graceful shutdown.

    ``archive_to`` is a store (typically Postgres or SQLite) that every run this worker
    completes is moved to, with its history, verified before it leaves ``store`` (see
    :func:`~..store.archive.archive`); a run that cannot be archived stays where it is, and is
    logged.

    ``await worker.run()`` runs until :meth:`stop`; ``run(burst=True)`` returns once nothing is
    left to claim and every run it took has ended (for tests, scripts and cron jobs).
    """

    def __init__(
        self,
        store: Checkpointer,
        workflows: Target,
        *,
        concurrency: int = 10,
        worker_id: str | None = None,
        lease_ttl: float | timedelta = DEFAULT_LEASE_TTL,
        grace: float | timedelta = DEFAULT_GRACE,
        heartbeat_every: float | timedelta = HEARTBEAT_EVERY,
        poll: float | timedelta = POLL,
        telemetry: RunnerHooks | None = None,
        archive_to: Checkpointer | None = None,
    ) -> None:
        self.store = store
        self.archive_to = archive_to
        self.workflows = as_registry(workflows)
        self.concurrency = check_positive_int(concurrency, "concurrency")
        self.worker_id = default_owner() if worker_id is None else check_owner(worker_id)
        self.lease_ttl = _seconds(lease_ttl, "lease_ttl")
        self.grace = _seconds(grace, "grace")
        self.heartbeat_every = _seconds(heartbeat_every, "heartbeat_every")
        self.poll = _seconds(poll, "poll")
        self.telemetry = telemetry
        self.stats = WorkerStats()
        self.started_at_ms = now_ms()
        self._held: dict[asyncio.Task[None], Claim] = {}
        self._permits: dict[asyncio.Task[None], tuple[str, str]] = {}
        self._permit_ttl = max(self.lease_ttl, 3 * self.heartbeat_every)
        self._stopping = asyncio.Event()
        self._running = False

    @property
    def held(self) -> list[tuple[str, str]]:
        """The (workflow id, run id) of each run this worker holds now."""
        return sorted((c.lease.workflow_id, c.lease.run_id) for c in self._held.values())

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Stop gracefully: claim nothing more, release each run at its next checkpoint."""
        if not self._stopping.is_set():
            log.info("worker %s stopping: %d run(s) in hand", self.worker_id, len(self._held))
        self._stopping.set()

    @contextmanager
    def handle_signals(self) -> Iterator[None]:
        """Within the block, SIGTERM and SIGINT stop the worker gracefully (a second one
        cancels its runs at once, releasing them)."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)

        def handle() -> None:
            if self._stopping.is_set():
                self.grace = 0.0
                for task in list(self._held):
                    task.cancel()
            self.stop()

        for signum in signals:
            loop.add_signal_handler(signum, handle)
        try:
            yield
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)

    async def run(self, *, burst: bool = False) -> None:
        """Claim and run runs until :meth:`stop` (or, with ``burst``, until none is left)."""
        if self._running:
            raise RuntimeError("this worker is running already")
        self._running = True
        log.info(
            "worker %s started: workflows %s, concurrency %d",
            self.worker_id,
            ", ".join(self.workflows),
            self.concurrency,
        )
        try:
            async with self.store.wake_ups(list(self.workflows)) as wake:
                # Stopped by an event, not cancelled: a cancellation that lands inside a client
                # call can be swallowed there, and the loop would beat on.
                stopped = asyncio.Event()
                beat = asyncio.ensure_future(self._beat(stopped))
                try:
                    await self._claim_loop(wake, burst)
                    await self._drain()
                finally:
                    stopped.set()
                    await asyncio.gather(beat, return_exceptions=True)
        finally:
            self._running = False
            with suppress(Exception):
                await self.store.forget_worker(self.worker_id)
            log.info("worker %s stopped: %s", self.worker_id, self.stats)

    async def _claim_loop(self, wake: Any, burst: bool) -> None:
        order = deque(self.workflows.values())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                if len(self._held) >= self.concurrency:
                    await asyncio.wait({stopping, *self._held}, return_when=asyncio.FIRST_COMPLETED)
                    continue
                if await self._claim_one(order):
                    continue
                if burst and not self._held:
                    return
                waiting = asyncio.ensure_future(wake.wait(at_most=self.poll))
                await asyncio.wait(
                    {waiting, stopping, *self._held}, return_when=asyncio.FIRST_COMPLETED
                )
                waiting.cancel()
                await asyncio.gather(waiting, return_exceptions=True)
        finally:
            stopping.cancel()
            await asyncio.gather(stopping, return_exceptions=True)

    async def _claim_one(self, order: deque[Workflow]) -> bool:
        """Claim one run of the next workflow that has one ready; True if one was claimed."""
        for _ in range(len(order)):
            workflow = order[0]
            order.rotate(-1)
            permit = await self._take_permit(workflow)
            if permit == "":
                continue  # the workflow's fleet-wide cap is reached
            claim = await self.store.claim(workflow.id, self.worker_id, self.lease_ttl)
            if claim is None:
                await self._drop_permit(workflow, permit)
                continue
            task = asyncio.ensure_future(self._execute(workflow, claim, permit))
            self._held[task] = claim
            if permit is not None:
                self._permits[task] = (workflow.id, permit)
            task.add_done_callback(self._forget)
            return True
        return False

    async def _take_permit(self, workflow: Workflow) -> str | None:
        """For a capped workflow, a fleet-wide permit's holder name ("" when none is free);
        None for a workflow without a cap."""
        if workflow.max_in_flight is None:
            return None
        holder = f"{self.worker_id}/{uuid.uuid4().hex[:12]}"
        taken = await self.store.take_permit(
            workflow.id, holder, workflow.max_in_flight, self._permit_ttl
        )
        return holder if taken else ""

    async def _drop_permit(self, workflow: Workflow, permit: str | None) -> None:
        if permit:
            with suppress(Exception):  # it expires on its own
                await self.store.drop_permit(workflow.id, permit)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._held.pop(task, None)
        self._permits.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("worker %s: a run's task failed", self.worker_id, exc_info=task.exception())

    async def _drain(self) -> None:
        """Wait for the runs in hand (up to ``grace`` once stopping); cancel the rest."""
        if not self._held:
            return
        if self._stopping.is_set():
            await asyncio.wait(set(self._held), timeout=self.grace)
            # Cancelled again until they end: a cancellation that lands inside a redis-py
            # call can be swallowed there (seen with redis-py 8.2 without pipelining).
            while self._held:
                for task in list(self._held):
                    task.cancel()
                await asyncio.wait(set(self._held), timeout=0.5)
        await asyncio.gather(*self._held, return_exceptions=True)

    async def _execute(self, workflow: Workflow, claim: Claim, permit: str | None) -> None:
        """Run one claimed run, settle its claim by how it ended, give its permit back."""
        try:
            await self._run_claimed(workflow, claim)
        finally:
            await self._drop_permit(workflow, permit)

    async def _run_claimed(self, workflow: Workflow, claim: Claim) -> None:
        lease = claim.lease
        self.stats.claimed += 1
        if claim.taken_over:
            self.stats.taken_over += 1
        log.info(
            "worker %s claimed run %s of %s%s (attempt %d)",
            self.worker_id,
            lease.run_id,
            workflow.id,
            " (a takeover: its worker's lease expired)" if claim.taken_over else "",
            claim.attempts + 1,
        )
        if lease.cancel_requested:
            await self._finish(workflow, claim, "released")
            return
        runner = workflow.runner(
            self.store,
            lease.run_id,
            owner=self.worker_id,
            lease_ttl=self.lease_ttl,
            on_checkpoint=self._checkpointed,
            telemetry=self.telemetry,
        )
        try:
            outcome = await runner.run_claimed(lease)
        except LeaseLostError:
            self.stats.lost += 1
            log.warning(
                "worker %s lost its lease on run %s of %s (taken over or deleted)",
                self.worker_id,
                lease.run_id,
                workflow.id,
            )
            return
        except asyncio.CancelledError:
            await self._finish(workflow, claim, "released", settlement=runner.settlement)
            raise
        except (WorkerStopping, RunCancelledError):
            ended: tuple[Outcome, JSON] = ("released", None)  # a cancelled run ends cancelled
        except WorkflowChangedError as exc:
            ended = ("blocked", {"error": type(exc).__name__, "changes": list(exc.changes)})
        except Exception as exc:
            ended = ("retry", {"error": type(exc).__name__, "message": str(exc)[:2000]})
        else:
            ended = (_settled(outcome), None)
        await self._finish(workflow, claim, *ended, settlement=runner.settlement)

    async def _finish(
        self,
        workflow: Workflow,
        claim: Claim,
        outcome: Outcome,
        reason: JSON = None,
        *,
        settlement: tuple[JSON, bool] = (None, False),
    ) -> None:
        """Settle the claim, releasing its lease with what the runner left (``settlement``:
        a failed layer's note, and whether the work finished), in one round trip."""
        lease = claim.lease
        note, finished = settlement
        retry_in = workflow.backoff.delay(claim.attempts + 1)
        try:
            state = await self.store.finish(
                lease,
                outcome,
                reason=reason,
                retry_in=retry_in,
                max_attempts=workflow.max_attempts,
                note=note,
                keep_note=note is None and not finished,
            )
        except LeaseLostError:
            self.stats.lost += 1
            log.warning("worker %s: run %s was taken over before it ended", self.worker_id, lease)
            return
        except Exception as exc:  # the lease expires on its own: the run is taken over
            log.warning("worker %s: ending run %s failed: %s", self.worker_id, lease.run_id, exc)
            return
        self._count(outcome, state)
        how = {
            "retry": f"failed, retried in {retry_in:.1f} s",
            "released": "released to the queue",
        }.get(outcome, outcome)
        if state in ("failed", "cancelled"):
            how = f"{state} (after {outcome})"
        level = logging.WARNING if state in ("failed", "blocked") else logging.INFO
        log.log(
            level,
            "worker %s: run %s of %s %s%s",
            self.worker_id,
            lease.run_id,
            workflow.id,
            how,
            "" if reason is None else f": {reason}",
        )
        if state == "completed" and self.archive_to is not None:
            await self._archive(workflow, lease.run_id)

    async def _archive(self, workflow: Workflow, run_id: str) -> None:
        """Move a completed run to the archive store; on failure it stays here (logged)."""
        target = cast(Checkpointer, self.archive_to)
        try:
            await archive(self.store, target, workflow.id, run_id, lineage=False)
        except Exception as exc:  # never lose the run: it stays in the store, as it was
            log.warning(
                "worker %s: run %s of %s was not archived: %s",
                self.worker_id,
                run_id,
                workflow.id,
                exc,
            )
            return
        self.stats.archived += 1

    def _count(self, outcome: Outcome, state: str) -> None:
        stats = self.stats
        if state == "cancelled":
            stats.cancelled += 1
        elif state == "failed":
            stats.failed += 1
        elif outcome == "retry":
            stats.retried += 1
        elif outcome == "released":
            stats.released += 1
        elif outcome == "blocked":
            stats.blocked += 1
        elif outcome == "paused":
            stats.paused += 1
        else:
            stats.completed += 1

    def _checkpointed(self, snapshot: Snapshot) -> None:
        """After each checkpoint: a stopping worker lets the run go there, unless it ended."""
        if not self._stopping.is_set():
            return
        progress = Progress.decode(snapshot.metadata, snapshot.key.super_step)
        if progress is None or progress.status == "running":
            raise WorkerStopping()

    async def _beat(self, stopped: asyncio.Event) -> None:
        """Write this worker's heartbeat now and every ``heartbeat_every`` seconds."""
        while not stopped.is_set():
            try:
                await self.store.heartbeat(
                    self.worker_id, self._heartbeat(), self.heartbeat_every * 3
                )
                await self._renew_permits()
            except Exception as exc:  # the next beat may get through
                log.warning("worker %s: heartbeat failed: %s", self.worker_id, exc)
            with suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), self.heartbeat_every)

    async def _renew_permits(self) -> None:
        """Keep the fleet-wide permits of the runs in hand (they outlive three beats)."""
        by_workflow: dict[str, list[str]] = {}
        for workflow_id, holder in self._permits.values():
            by_workflow.setdefault(workflow_id, []).append(holder)
        for workflow_id, holders in by_workflow.items():
            await self.store.renew_permits(workflow_id, holders, self._permit_ttl)

    def _heartbeat(self) -> JSON:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at_ms": self.started_at_ms,
            "workflows": list(self.workflows),
            "concurrency": self.concurrency,
            "stopping": self._stopping.is_set(),
            "runs": [
                {"workflow_id": workflow_id, "run_id": run_id} for workflow_id, run_id in self.held
            ],
            "beat_at_ms": int(time.time() * 1000),
        }


def _settled(outcome: RunOutcome) -> Outcome:
    return "paused" if outcome.paused else "completed"


def _seconds(value: float | timedelta, what: str) -> float:
    ms = duration_to_ms(value, what)
    if ms is None:
        raise TypeError(f"{what} is required")
    return ms / 1000
