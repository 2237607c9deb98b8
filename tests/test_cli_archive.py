"""``archive``: finished runs move to another store, are inspected there the same way."""

from __future__ import annotations

import pytest

from atomr_redis_state import Checkpointer
from atomr_redis_state.cli.archive import parse_duration_ms
from atomr_redis_state.testing import RedisServer
from tests.test_cli_support import WF, FakeStores, Seeded, command, flat, run_on, seed


@pytest.fixture
def fake() -> FakeStores:
    return FakeStores()


@pytest.fixture
def seeded(fake: FakeStores) -> Seeded:
    return fake.run(seed)


@pytest.fixture
def target(redis_server: RedisServer) -> str:
    """The archive's URL: a real redis-server (the prefix is the default, 'atomr')."""
    return redis_server.url


def runs_in(url: str) -> list[str]:
    async def work(store: Checkpointer) -> list[str]:
        return await store.list_runs(WF)

    return run_on(url, "atomr", work)


@pytest.fixture(autouse=True)
def _empty_target(target: str) -> None:
    async def work(store: Checkpointer) -> None:
        for run_id in await store.list_runs(WF):
            await store.delete_run(WF, run_id)

    run_on(target, "atomr", work)


def test_archive_moves_the_finished_runs_with_their_forks(
    fake: FakeStores, seeded: Seeded, target: str
) -> None:
    done = fake.invoke("archive", WF, "--to", target)
    assert done.exit_code == 0, done.output
    assert runs_in(target) == sorted([seeded.done, seeded.fork, seeded.failed])
    assert fake.run(lambda store: store.list_runs(WF)) == [seeded.paused]
    assert "archived 3 run(s)" in done.stderr


def test_archive_of_one_state_leaves_the_others(
    fake: FakeStores, seeded: Seeded, target: str
) -> None:
    assert fake.invoke("archive", WF, "--to", target, "--state", "failed").exit_code == 0
    assert runs_in(target) == [seeded.failed]


def test_archive_older_than_skips_recent_runs(
    fake: FakeStores, seeded: Seeded, target: str
) -> None:
    done = fake.invoke("archive", WF, "--to", target, "--older-than", "1h")
    assert done.exit_code == 0, done.output
    assert runs_in(target) == []
    assert len(fake.run(lambda store: store.list_runs(WF))) == 4


def test_archive_dry_run_lists_and_moves_nothing(
    fake: FakeStores, seeded: Seeded, target: str
) -> None:
    done = fake.invoke("archive", WF, "--to", target, "--dry-run")
    assert done.exit_code == 0, done.output
    assert sorted(done.stdout.split()) == sorted([seeded.done, seeded.fork, seeded.failed])
    assert runs_in(target) == []


def test_an_archived_run_is_inspected_with_the_target_url(
    fake: FakeStores, seeded: Seeded, target: str
) -> None:
    assert fake.invoke("archive", WF, seeded.done, "--to", target).exit_code == 0
    shown = command("history", WF, seeded.done, "--redis-url", target)
    assert shown.returncode == 0, shown.stderr
    assert "layer:0" in flat(shown.stdout)


@pytest.mark.parametrize(
    ("text", "ms"), [("90", 90_000), ("15m", 900_000), ("1h", 3_600_000), ("500ms", 500)]
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


def test_a_bad_duration_is_a_usage_error(fake: FakeStores, target: str) -> None:
    assert fake.invoke("archive", WF, "--to", target, "--older-than", "soon").exit_code == 2
