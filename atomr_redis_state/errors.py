"""The exceptions of atomr-redis-state: every one derives from :class:`AtomrStateError`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


class AtomrStateError(Exception):
    """Base class of every error this library raises on purpose."""


class CheckpointNotFoundError(AtomrStateError, LookupError):
    """A checkpoint that an operation needs does not exist (for example the source of a fork)."""

    def __init__(
        self,
        workflow_id: str,
        run_id: str,
        super_step: int,
        *,
        available: Sequence[int] = (),
    ) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.super_step = super_step
        self.available = tuple(available)
        """The super-steps the run has, when the caller looked (empty otherwise)."""
        if not self.available:
            super().__init__(
                f"no checkpoint for workflow {workflow_id!r}, run {run_id!r} "
                f"at super-step {super_step}"
            )
            return
        shown = ", ".join(str(step) for step in self.available[-20:])
        more = "..., " if len(self.available) > 20 else ""
        super().__init__(
            f"run {run_id!r} of workflow {workflow_id!r} has no super-step {super_step} "
            f"(it has {more}{shown})"
        )


class CheckpointConflictError(AtomrStateError):
    """An exclusive save found the super-step already checkpointed; nothing was written."""

    def __init__(self, workflow_id: str, run_id: str, super_step: int) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.super_step = super_step
        super().__init__(
            f"super-step {super_step} of workflow {workflow_id!r}, run {run_id!r} "
            "is already checkpointed"
        )


class ValueEncodingError(AtomrStateError, ValueError):
    """A channel value (or channel name) is not strict JSON and cannot be stored."""


class UnknownChannelError(AtomrStateError, KeyError):
    """A write named a channel that the schema does not declare; nothing was written."""

    def __init__(
        self, key: object, known: Iterable[str], *, declared_by: str = "the schema declares"
    ) -> None:
        self.key = key
        names = ", ".join(repr(name) for name in known) or "none"
        super().__init__(f"unknown channel {key!r} ({declared_by}: {names})")

    def __str__(self) -> str:
        return str(self.args[0])


class WorkflowGraphError(AtomrStateError, ValueError):
    """The steps do not form a valid DAG: a cycle, an unknown dependency, or a duplicate name."""


class RunNotPausedError(AtomrStateError):
    """``resume()`` found the run not paused (finished, or mid-way)."""


class QueueStateError(AtomrStateError):
    """The run's queue state refuses the call (requeueing a completed or cancelled run, or
    answering a run that is not waiting for a human); nothing was written."""

    def __init__(self, workflow_id: str, run_id: str, state: str, action: str) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.state = state
        super().__init__(f"run {run_id!r} of workflow {workflow_id!r} is {state}: cannot {action}")


class WorkerStopping(AtomrStateError):
    """A stopping worker let its run go at a checkpoint (the layer before it is saved); the
    worker releases the run to the queue, and another worker continues it from there."""


class QueueUnsupportedError(AtomrStateError, NotImplementedError):
    """This store has no ready queue (submit, claim, finish...): the fleet needs the in-memory
    or the Redis store."""

    def __init__(self, store: object) -> None:
        super().__init__(
            f"{type(store).__name__} has no ready queue yet: run the fleet on "
            "RedisCheckpointer (or InMemoryCheckpointer in one process)"
        )


class Interrupt(Exception):
    """Raised by a step to pause the run for a human; ``payload`` says what it needs.

    :meth:`~atomr_redis_state.graph.steps.StepContext.interrupt` raises it unless the step is
    being resumed. It is the one exception here that is not an error: the runner catches it.
    """

    def __init__(self, payload: object = None) -> None:
        self.payload = payload
        super().__init__(payload)


class RunNotFoundError(AtomrStateError, LookupError):
    """The run has no checkpoint (never started, deleted, or expired): it is not started anew."""

    def __init__(self, workflow_id: str, run_id: str) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        super().__init__(
            f"run {run_id!r} of workflow {workflow_id!r} has no checkpoint "
            "(never started, deleted, or expired)"
        )


class LeaseHeldError(AtomrStateError):
    """Another worker holds the run's lease; nothing was run or written."""

    def __init__(self, workflow_id: str, run_id: str, owner: str, expires_at_ms: int) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.owner = owner
        self.expires_at_ms = expires_at_ms
        super().__init__(
            f"run {run_id!r} of workflow {workflow_id!r} is leased by {owner!r} "
            f"until {expires_at_ms} ms (server clock)"
        )


class LeaseLostError(AtomrStateError):
    """This worker's lease on the run expired or was taken over; the store wrote nothing."""

    def __init__(self, workflow_id: str, run_id: str, token: int) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.token = token
        super().__init__(
            f"the lease (fencing token {token}) on run {run_id!r} of workflow {workflow_id!r} "
            "was lost: it expired, was taken over, or the run was deleted"
        )


class RunCancelledError(AtomrStateError):
    """Someone asked the store to cancel the run (``cancel``): a save carrying a lease,
    or an answer, is refused and nothing is written; the run ends in state ``cancelled``."""

    def __init__(self, workflow_id: str, run_id: str) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        super().__init__(f"run {run_id!r} of workflow {workflow_id!r} was cancelled")


class AnswerRefusedError(AtomrStateError):
    """``record_answer`` refused the answer and stored nothing: the run is no longer at that
    super-step (``latest`` says where it is), or that pause already has a different answer."""

    def __init__(self, workflow_id: str, run_id: str, super_step: int, reason: str) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.super_step = super_step
        self.reason = reason
        super().__init__(
            f"no answer recorded for run {run_id!r} of workflow {workflow_id!r} at super-step "
            f"{super_step}: {reason}"
        )


class WorkflowChangedError(AtomrStateError):
    """The workflow's steps changed in a way the run's progress cannot carry over; nothing ran."""

    def __init__(self, workflow_id: str, run_id: str, changes: Sequence[str]) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.changes = tuple(changes)
        super().__init__(
            f"run {run_id!r} of workflow {workflow_id!r} cannot continue on the changed "
            f"workflow: {'; '.join(self.changes)}"
        )


class StepTimeoutError(AtomrStateError, TimeoutError):
    """A step's attempt ran longer than its ``timeout``; it counts as a failed attempt."""

    def __init__(self, step: str, timeout: float) -> None:
        self.step = step
        self.timeout = timeout
        super().__init__(f"step {step!r} did not finish within its timeout of {timeout:g} s")


class StoreUnavailableError(AtomrStateError, ConnectionError):
    """Redis could not be reached, or a cluster kept redirecting, past the retry budget.

    The outcome of the call is unknown (it may have been applied); every store operation is safe
    to call again with the same arguments, and then gives the answer the first would have given.
    """


class StoreOutOfMemoryError(AtomrStateError, MemoryError):
    """Redis is over its ``maxmemory`` with a ``noeviction`` policy: nothing was written.

    Free memory (delete or expire runs, set a ``ttl`` or ``keep_last``) or raise ``maxmemory``.
    """


class StoreConfigurationError(AtomrStateError):
    """The store's connection settings are wrong, so calling again will not help.

    A TLS certificate that does not verify, credentials that Redis refuses, a database index
    the server does not have, or a Redis user without a permission the store needs: fix the
    settings (the URL, ``ssl_ca_certs``, the password, the user's ACL) and connect again.
    Unlike :class:`StoreUnavailableError`, the outcome is known: nothing was written.
    """


class StorePermissionError(StoreConfigurationError, PermissionError):
    """The Redis user lacks a permission the store needs (see the README's "Security" section),
    or Redis refused its credentials."""


class DurabilityError(AtomrStateError):
    """A save was applied on the primary but fewer replicas than required confirmed it in time.

    It may be lost if the primary fails now; saving the same snapshot again is safe.
    """

    def __init__(self, required: int, confirmed: int, timeout_ms: int) -> None:
        self.required = required
        self.confirmed = confirmed
        self.timeout_ms = timeout_ms
        super().__init__(
            f"only {confirmed} of {required} replicas confirmed the write within {timeout_ms} ms"
        )


class StoreLockedError(AtomrStateError):
    """The database stayed locked by other writers past the store's wait (SQLite's
    ``busy_timeout``, Postgres's ``lock_timeout``): nothing was written; try again."""


class StoreDiskFullError(AtomrStateError, OSError):
    """The database's disk (or quota) is full: nothing was written.

    Free space (delete or expire runs, set a ``ttl`` or ``keep_last``) or give the database more.
    """


class SchemaVersionError(StoreConfigurationError):
    """The database's schema is missing or older than this library's (run ``setup()``, which
    creates or migrates it), or newer than this version of the library knows: the store refuses
    to run against it rather than corrupt it. No retry fixes it."""

    def __init__(self, found: int | None, known: int) -> None:
        self.found = found
        self.known = known
        if found is None:
            message = "the store's tables are missing: call setup() once to create them"
        elif found < known:
            message = (
                f"the database has schema version {found}, older than version {known} that "
                "this atomr-redis-state needs: call setup() once to migrate it"
            )
        else:
            message = (
                f"the database has schema version {found}, newer than version {known} that "
                "this atomr-redis-state knows: upgrade the library"
            )
        super().__init__(message)


class ArchiveError(AtomrStateError):
    """A run could not be archived; the source was left as it was (nothing deleted).

    Raised when the target already holds different checkpoints for the run, when the copy read
    back from the target differs from the source, or when the run changed during the copy.
    """

    def __init__(self, workflow_id: str, run_id: str, reason: str) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.reason = reason
        super().__init__(
            f"run {run_id!r} of workflow {workflow_id!r} was not archived: {reason}; "
            "the source is unchanged"
        )
