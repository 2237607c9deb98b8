"""The workflow of the fleet soak test (tests/test_fleet_soak.py), served by real worker processes
(``atomr-redis-state worker tests.soak_workflow:WORKFLOWS``).

Four layers, ``a -> (b, c) -> d -> e``. Each step performs one side effect keyed by its
idempotency key ``(run_id, super_step, step)``: ``HSETNX`` of the key into a hash of effects (the
first attempt's id wins), and when the key was already there (the layer ran again, after a kill
or a stop) ``HINCRBY`` of a hash of repeats. The step writes the winning id into the state, so
the test can match checkpoints with side effects.

Failures are injected by the run's input: ``{"fail": {"c": 2}}`` makes step c raise on its first
two executions (counted in Redis, so across processes), before its side effect. The fleet
retries the run; a count of :data:`MAX_ATTEMPTS` or more makes the run a dead letter.

The worker processes find the effects' Redis in the environment: ``SOAK_REDIS_URL``,
``SOAK_CLUSTER`` (``1`` for a cluster) and ``SOAK_KEY`` (the prefix of the effect hashes).
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from typing import Any

from redis.asyncio import Redis, RedisCluster

from atomr_redis_state import AppendList, StateSchema, Step, StepContext, Writes
from atomr_redis_state.fleet import Backoff, Registry, Workflow

WORKFLOW = "wf-soak"
SCHEMA = StateSchema.builder().add("effects", AppendList(), []).add_lww("fail").add_lww("n").build()


class InjectedFailure(RuntimeError):
    """The failure a run's input asked for."""


def effect_keys(base: str) -> tuple[str, str, str]:
    """The hashes of effects, of repeats, and of executions (one slot on a cluster)."""
    return f"{{{base}}}:effects", f"{{{base}}}:repeats", f"{{{base}}}:executions"


_client: Any = None


def _redis() -> Any:
    global _client
    if _client is None:
        url = os.environ["SOAK_REDIS_URL"]
        cluster = os.environ.get("SOAK_CLUSTER") == "1"
        _client = RedisCluster.from_url(url) if cluster else Redis.from_url(url)
    return _client


async def effect(ctx: StepContext) -> Writes:
    effects, repeats, executions = effect_keys(os.environ["SOAK_KEY"])
    client = _redis()
    failing = ctx.read("fail")
    planned = failing.get(ctx.step, 0) if isinstance(failing, dict) else 0
    if planned:
        done = await client.hincrby(executions, f"{ctx.run_id}|{ctx.step}", 1)
        if done <= planned:
            raise InjectedFailure(f"{ctx.run_id} {ctx.step}: injected failure {done}/{planned}")
    await asyncio.sleep(random.uniform(0.02, 0.12))  # the work, during which a kill may land
    key = f"{ctx.run_id}|{ctx.super_step}|{ctx.step}"
    mine = uuid.uuid4().hex
    if not await client.hsetnx(effects, key, mine):
        await client.hincrby(repeats, key, 1)
    winner = await client.hget(effects, key)
    return {"effects": [[ctx.step, ctx.super_step, winner.decode()]]}


STEPS = [
    Step("a", effect),
    Step("b", effect, ["a"]),
    Step("c", effect, ["a"]),
    Step("d", effect, ["b", "c"]),
    Step("e", effect, ["d"]),
]
LAYERS = [["a"], ["b", "c"], ["d"], ["e"]]
MAX_ATTEMPTS = 4

WORKFLOWS = Registry(
    [
        Workflow(
            WORKFLOW,
            STEPS,
            SCHEMA,
            max_attempts=MAX_ATTEMPTS,
            backoff=Backoff(base=0.05, cap=0.4),  # quick retries: the test has 1,000 runs to do
        )
    ]
)
