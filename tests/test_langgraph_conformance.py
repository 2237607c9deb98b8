"""LangGraph's own conformance suite (langgraph-checkpoint-conformance), all 8 capabilities.

The suite's report says "FULL" even when an extended capability is not implemented (it counts
only methods the saver overrides), so every capability is checked here by name: detected, run,
and passed with no failure. It runs against the async saver, the async saver with a ttl, and the
sync saver (whose async methods run the sync ones in a thread), on every backend.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from tests.langgraph_backends import SaverBackend, saver_backend  # noqa: F401

CAPABILITIES = [
    "put",
    "put_writes",
    "get_tuple",
    "list",
    "delete_thread",
    "delete_for_runs",
    "copy_thread",
    "prune",
]


def test_the_suite_has_exactly_these_capabilities() -> None:
    assert sorted(c.value for c in ALL_CAPABILITIES) == sorted(CAPABILITIES)


@pytest.mark.parametrize("variant", ["async", "async-ttl", "sync"])
async def test_every_capability_of_the_conformance_suite_passes(
    saver_backend: SaverBackend,  # noqa: F811
    variant: str,
) -> None:
    def make() -> BaseCheckpointSaver[Any]:
        if variant == "sync":
            return saver_backend.make_sync()
        return saver_backend.make(ttl=3600 if variant == "async-ttl" else None)

    @checkpointer_test(name=f"AtomrRedisStateSaver-{saver_backend.name}-{variant}")
    async def factory() -> AsyncGenerator[BaseCheckpointSaver[Any], None]:
        yield make()

    report = await validate(factory)
    results = {name: report.results[name] for name in CAPABILITIES}
    summary = {
        name: (r.detected, r.passed, r.tests_passed, r.tests_failed, r.failures)
        for name, r in results.items()
    }
    for _name, result in results.items():
        assert result.detected, summary
        assert result.passed is True, summary
        assert result.tests_failed == 0, summary
        assert result.tests_passed > 0, summary
