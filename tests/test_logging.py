"""What the library logs, on every backend: one line per lease event, naming the workflow;
DEBUG lines for saves and forks with their size and duration."""

from __future__ import annotations

import logging
import re

import pytest

from atomr_redis_state import (
    AppendList,
    Checkpointer,
    CheckpointKey,
    Snapshot,
    StatefulRunner,
    StateSchema,
    Step,
    StepContext,
    Writes,
)

WF = "wf-logs"
SCHEMA = StateSchema.builder().add("log", AppendList(), []).build()


async def note(ctx: StepContext) -> Writes:
    return {"log": ctx.step}


def lines(caplog: pytest.LogCaptureFixture, pattern: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if re.search(pattern, r.getMessage())]


async def test_each_lease_event_is_logged_once_naming_the_workflow(
    checkpointer: Checkpointer, caplog: pytest.LogCaptureFixture
) -> None:
    runner = StatefulRunner(WF, "run-1", [Step("a", note)], SCHEMA, checkpointer, owner="w-1")
    with caplog.at_level(logging.DEBUG, logger="atomr_redis_state"):
        await runner.start({})
    [taken] = lines(caplog, "lease .* taken")
    [released] = lines(caplog, "lease .* released")
    assert re.fullmatch(rf"workflow {WF} run run-1: lease \d+ taken by w-1 for 30000 ms", taken)
    assert re.fullmatch(rf"workflow {WF} run run-1: lease \d+ released by w-1", released)
    assert all(WF in message for message in lines(caplog, "run-1"))


async def test_saves_and_forks_are_logged_at_debug_with_their_size_and_duration(
    checkpointer: Checkpointer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="atomr_redis_state"):
        await checkpointer.save(Snapshot(CheckpointKey(WF, "r", 3), {"n": "x" * 100}, "layer:2"))
        fork = await checkpointer.fork(CheckpointKey(WF, "r", 3), {"n": 1})
    [saved] = lines(caplog, "saved super-step")
    assert re.fullmatch(
        rf"workflow {WF} run r: saved super-step 3 \(layer:2, (\d+) bytes\) in [\d.]+ ms", saved
    )
    assert int(re.findall(r"(\d+) bytes", saved)[0]) > 100
    [forked] = lines(caplog, "forked super-step")
    assert re.fullmatch(
        rf"workflow {WF} run r: forked super-step 3 into {re.escape(fork)} "
        r"\(\d+ bytes of edits\) in [\d.]+ ms",
        forked,
    )
    assert all(r.levelno == logging.DEBUG for r in caplog.records if "super-step 3" in r.message)


async def test_nothing_is_logged_at_info_for_a_save(
    checkpointer: Checkpointer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="atomr_redis_state"):
        await checkpointer.save(Snapshot(CheckpointKey(WF, "r", 0), {}))
    assert caplog.records == []
