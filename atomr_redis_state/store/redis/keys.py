"""Every Redis key this library uses is built here.

Layout (``P`` = prefix, ``T`` = slot tag, ``W``/``R`` = escaped workflow/run id)::

    P:{T}:W:R:steps      sorted set: member and score = super-step, one per snapshot of the run
    P:{T}:W:R:snap:<n>   hash: the snapshot at super-step n (one field per channel, :label, :ts)
    P:{T}:W:R:meta       hash: super-step n -> "<ts> <label>" of each snapshot (what list reads)
    P:{T}:W:R:run        hash: the run's lease (owner, token, until, ttl), fencing counter, note
    P:{T}:W:R:deleted    string, for a minute after delete_run: its token and answer
    P:{T}:W:runs         sorted set (all scores 0): run ids of workflow W whose tag is T
    P:{T}:workflows      sorted set (all scores 0): workflow ids with runs whose tag is T (the
                         registry ``list_workflows`` reads; kept by the scripts that index a
                         run, and read together with each W's ``runs`` set, which says whether
                         the workflow still has runs there)
    P:{T}:W:events       shard channel (pub/sub, not a key): events of workflow W's runs in T

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
    """The run's record hash: its lease, fencing counter and note."""
    deleted: str
    """Set for a minute by ``delete_run``, so a retried delete gets the same answer."""
    events: str
    """The shard channel where the store announces changes to this run (and its workflow's
    other runs with the same tag)."""

    def snapshot(self, super_step: int) -> str:
        return f"{self.snapshot_prefix}{super_step}"


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
            steps=f"{run_part}:steps",
            snapshot_prefix=f"{run_part}:snap:",
            meta=f"{run_part}:meta",
            run_index=f"{workflow_part}:runs",
            record=f"{run_part}:run",
            deleted=f"{run_part}:deleted",
            events=f"{workflow_part}:events",
        )

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
