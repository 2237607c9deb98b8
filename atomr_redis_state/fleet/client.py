"""The fleet's client side: submit runs, answer paused ones, cancel, requeue, look at them.

Any process (an API server, a cron job, a notebook) uses a :class:`Fleet` to hand runs to the
workers, and never executes a step itself::

    fleet = Fleet(store, [support_bot])
    run_id = await fleet.submit(support_bot, {"question": "..."})
    await fleet.resume(support_bot, run_id, {"approved": True})  # a human's answer
    await fleet.cancel(support_bot, run_id)
    status = await fleet.status(support_bot, run_id)

Every call is one store call (one round trip on standalone Redis) and safe to retry: a
``submit`` with a caller-chosen ``run_id`` is idempotent.
"""

from __future__ import annotations

from ..graph.outcomes import RunStatus
from ..graph.progress import run_status
from ..graph.steps import Writes
from ..store.checkpointer import Checkpointer, NotBefore
from ..store.ids import new_run_id
from ..store.types import JSON, QueueDepth, QueueState
from .workflow import Registry, Target, Workflow, as_registry


class Fleet:
    """Submits runs of the registered workflows to ``store``'s ready queue, and steers them.

    ``workflows`` (a :class:`~.workflow.Registry`, or workflows) are needed only to
    :meth:`submit` (to build a run's first checkpoint); the other calls take a workflow or its
    id.
    """

    def __init__(self, store: Checkpointer, workflows: Target | None = None) -> None:
        self.store = store
        self.workflows = Registry() if workflows is None else as_registry(workflows)

    async def submit(
        self,
        workflow: Workflow | str,
        input: Writes = None,
        *,
        run_id: str | None = None,
        not_before: NotBefore | None = None,
    ) -> str:
        """Create a run of ``workflow`` with ``input`` and queue it for the workers, in one
        atomic round trip; return its run id. With a ``run_id`` of the caller's choosing,
        submitting again is a no-op that returns the same id (safe to retry). ``not_before``
        (an aware datetime, or a timedelta) delays it."""
        definition = self._definition(workflow)
        run_id = new_run_id() if run_id is None else run_id
        await self.store.submit(definition.initial_snapshot(run_id, input), not_before=not_before)
        return run_id

    async def resume(
        self,
        workflow: Workflow | str,
        run_id: str,
        value: JSON = None,
        *,
        not_before: NotBefore | None = None,
    ) -> QueueState:
        """Answer a paused run: the answer is stored with the run (it survives a failed
        attempt) and the run is queued; a worker resumes it with ``value``."""
        return await self.store.resume_run(_id(workflow), run_id, value, not_before=not_before)

    async def cancel(self, workflow: Workflow | str, run_id: str) -> QueueState:
        """Stop a run: ``cancelled`` at once if it waits; ``running`` if a worker has it (it
        stops at its next checkpoint and ends ``cancelled``)."""
        return await self.store.cancel(_id(workflow), run_id)

    async def requeue(
        self, workflow: Workflow | str, run_id: str, *, not_before: NotBefore | None = None
    ) -> QueueState:
        """Queue a dead letter (``failed``) or a ``blocked`` run again, its attempts reset."""
        return await self.store.requeue(_id(workflow), run_id, not_before=not_before)

    async def status(self, workflow: Workflow | str, run_id: str) -> RunStatus:
        """Where the run stands (see :func:`~..graph.progress.run_status`)."""
        return await run_status(self.store, _id(workflow), run_id)

    async def depth(self, workflow: Workflow | str) -> QueueDepth:
        """How many runs of the workflow are ready, delayed, running, paused, failed, blocked."""
        return await self.store.queue_depth(_id(workflow))

    def _definition(self, workflow: Workflow | str) -> Workflow:
        if isinstance(workflow, Workflow):
            return workflow
        return self.workflows[workflow]


def _id(workflow: Workflow | str) -> str:
    return workflow.id if isinstance(workflow, Workflow) else workflow
