"""Every Redis key this library uses is built here.

Layout (``P`` = prefix, ``T`` = slot tag, ``W``/``R`` = escaped workflow/run id)::

    P:{T}:W:R:steps      sorted set: member and score = super-step, one per snapshot of the run
    P:{T}:W:R:snap:<n>   hash: the snapshot at super-step n (one field per channel, :label, :ts)
    P:{T}:W:R:meta       hash: super-step n -> "<ts> <label>" of each snapshot (what list reads)
    P:{T}:W:R:run        hash: the run's lease (owner, token, until, ttl), fencing counter (fence),
                         note, answer (answer_step, answer) and cancel request (cancel: ms)
    P:{T}:W:R:deleted    string, for a minute after delete_run: its token and answer
    P:{T}:W:runs         sorted set (all scores 0): run ids of workflow W whose tag is T
    P:{T}:workflows      sorted set (all scores 0): workflow ids with runs whose tag is T (the
                         registry ``list_workflows`` reads; kept by the scripts that index a
                         run, and read together with each W's ``runs`` set, which says whether
                         the workflow still has runs there)
    P:{T}:W:events       shard channel (pub/sub, not a key): events of workflow W's runs in T

The ready queue (see :mod:`.queue`); a run's queue state lives in its record hash::

    P:{T}:W:queue        sorted set: run id -> ready time (ms, server clock) of queued runs in T
    P:{T}:W:leased       sorted set: run id -> lease deadline of claimed runs (takeover index)
    P:{T}:W:paused       sorted set: run id -> when it paused (waiting for a human)
    P:{T}:W:dead         sorted set: run id -> when it failed for good (dead letters)
    P:{T}:W:blocked      sorted set: run id -> when it was blocked (workflow changed)
    P:{w:W}:hint         sorted set: bucket -> earliest time that bucket needs a claim
    P:{w:W}:hintgen      hash: bucket -> how often its hint was touched (settles compare it)
    P:{w:W}:wake         shard channel: a bucket number, when a run there became ready
    P:{w:W}:sweep        string: held (SET NX PX) by the one worker repairing hints
    P:{w:W}:permits      sorted set: holder -> expiry, the fleet-wide in-flight cap's permits
    P:{workers}:live     sorted set: worker id -> heartbeat deadline
    P:{workers}:w:I      string: worker I's heartbeat (JSON), expiring with it

The tag is one of :data:`SLOT_BUCKETS` values, chosen by hashing the workflow id with the run's
lineage root (a fork keeps its source's root, see :func:`..ids.fork_run_id`). So all keys of a
run, of its forks, and the run-index bucket they are listed in share one Redis Cluster slot, and
every script touches a single slot; and the runs of one workflow spread over many slots.
Ids are escaped (``%`` -> ``%25``, ``:`` -> ``%3A``, ``{`` -> ``%7B``, ``}`` -> ``%7D``), so ids
never collide, ``:`` separates fields unambiguously, and only the tag holds braces.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

from ..ids import lineage_root
from ..validation import check_prefix

CANCEL_FIELD = "cancel"
"""The field of a run's record hash that flags a cancel request (its value: the server's clock
in ms when first requested). Any script that sets it makes the run cancelled: leased saves are
refused and lease renewals report it."""

SLOT_BUCKETS = 256
"""How many slot tags runs are spread over. Changing it moves every run's keys."""

_ESCAPES = str.maketrans({"%": "%25", ":": "%3A", "{": "%7B", "}": "%7D"})


def escape(part: str) -> str:
    """Escape an id for use as one ``:``-separated key segment."""
    return part.translate(_ESCAPES)


def bucket_of(workflow_id: str, run_id: str) -> int:
    """The slot bucket of a run: shared by every run of its lineage."""
    seed = f"{workflow_id}\x00{lineage_root(run_id)}".encode()
    return zlib.crc32(seed) % SLOT_BUCKETS


@dataclass(frozen=True, slots=True)
class RunKeys:
    """The keys of one run."""

    steps: str
    """The run's sorted set of super-steps."""
    snapshot_prefix: str
    """Snapshot hash keys are this prefix followed by the super-step."""
    meta: str
    """The run's hash of super-step -> ``"<timestamp_ms> <label>"``, one field per snapshot:
    ``list`` reads it with one command."""
    run_index: str
    """The run-index bucket that lists this run."""
    record: str
    """The run's record hash: its lease, fencing counter and note; ``answer_step`` and
    ``answer`` (a recorded answer, see ``record_answer``); ``cancel`` (:data:`CANCEL_FIELD`)."""
    deleted: str
    """Set for a minute by ``delete_run``, so a retried delete gets the same answer."""
    events: str
    """The shard channel where the store announces changes to this run (and its workflow's
    other runs with the same tag)."""
    queue: QueueKeys
    """The ready-queue keys of the run's bucket."""

    def snapshot(self, super_step: int) -> str:
        return f"{self.snapshot_prefix}{super_step}"


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """The ready-queue keys of one workflow in one slot bucket (declared in this order)."""

    queue: str
    leased: str
    paused: str
    dead: str
    blocked: str
    events: str
    bucket: int

    def declared(self) -> list[str]:
        return [self.queue, self.leased, self.paused, self.dead, self.blocked]


@dataclass(frozen=True, slots=True)
class HintKeys:
    """The keys of a workflow's hint index: which buckets need attention, and when."""

    hint: str
    generation: str
    wake: str
    sweep: str
    permits: str


class KeyLayout:
    """Builds the keys of one tenant (``prefix``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = check_prefix(prefix)
        self.run = lru_cache(maxsize=8192)(self._run_keys)

    def _run_keys(self, workflow_id: str, run_id: str) -> RunKeys:
        workflow_part = (
            f"{self.prefix}:{{{bucket_of(workflow_id, run_id):02x}}}:{escape(workflow_id)}"
        )
        run_part = f"{workflow_part}:{escape(run_id)}"
        return RunKeys(
            queue=self.queue(workflow_id, bucket_of(workflow_id, run_id)),
            steps=f"{run_part}:steps",
            snapshot_prefix=f"{run_part}:snap:",
            meta=f"{run_part}:meta",
            run_index=f"{workflow_part}:runs",
            record=f"{run_part}:run",
            deleted=f"{run_part}:deleted",
            events=f"{workflow_part}:events",
        )

    def queue(self, workflow_id: str, bucket: int) -> QueueKeys:
        """The ready-queue keys of a workflow in slot bucket ``bucket``."""
        part = f"{self.prefix}:{{{bucket:02x}}}:{escape(workflow_id)}"
        return QueueKeys(
            f"{part}:queue",
            f"{part}:leased",
            f"{part}:paused",
            f"{part}:dead",
            f"{part}:blocked",
            f"{part}:events",
            bucket,
        )

    def hint(self, workflow_id: str) -> HintKeys:
        """The workflow's hint keys: one slot of their own (tag ``w:<workflow>``)."""
        part = f"{self.prefix}:{{w:{escape(workflow_id)}}}"
        return HintKeys(
            f"{part}:hint", f"{part}:hintgen", f"{part}:wake", f"{part}:sweep", f"{part}:permits"
        )

    @property
    def workers_index(self) -> str:
        """The sorted set of live workers (worker id -> heartbeat deadline)."""
        return f"{self.prefix}:{{workers}}:live"

    @property
    def worker_prefix(self) -> str:
        """Heartbeat keys are this prefix followed by the escaped worker id."""
        return f"{self.prefix}:{{workers}}:w:"

    def run_index_buckets(self, workflow_id: str) -> list[str]:
        """Every run-index bucket key of a workflow, one per slot tag."""
        return self._per_bucket(workflow_id, "runs")

    def event_channels(self, workflow_id: str) -> list[str]:
        """Every event channel of a workflow, one per slot tag."""
        return self._per_bucket(workflow_id, "events")

    def run_index_bucket(self, workflow_id: str, bucket: int) -> str:
        """The run-index bucket of a workflow with slot tag ``bucket``."""
        return f"{self.prefix}:{{{bucket:02x}}}:{escape(workflow_id)}:runs"

    def workflow_registry_buckets(self) -> list[str]:
        """Every workflow registry bucket of the prefix, one per slot tag (``index_run`` in
        ``lua/_common.lua`` derives the same key from a run-index bucket's)."""
        return [f"{self.prefix}:{{{b:02x}}}:workflows" for b in range(SLOT_BUCKETS)]

    def _per_bucket(self, workflow_id: str, name: str) -> list[str]:
        workflow = escape(workflow_id)
        return [f"{self.prefix}:{{{b:02x}}}:{workflow}:{name}" for b in range(SLOT_BUCKETS)]
