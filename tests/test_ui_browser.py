"""The inspector in a real browser: Debian's Chromium, driven by Playwright.

Without Chromium (or Playwright) these tests skip, unless ATOMR_REQUIRE_BROWSER=1 (set by
.ci/run), which makes them fail instead. Screenshots of the main pages are kept under
``test-artifacts/ui/`` (at 1280x800 and at phone width).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from atomr_redis_state import CheckpointKey, RedisCheckpointer, Snapshot
from atomr_redis_state.cli import demo
from atomr_redis_state.testing import RedisServer
from atomr_redis_state.ui.server import fleet_answer
from tests.ui_support import BIG_WF, WF, Inspector, opener, seed, served

REQUIRE_BROWSER_ENV = "ATOMR_REQUIRE_BROWSER"
CHROMIUM = os.environ.get("ATOMR_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "ui"
TOKEN = "browser-test-token-0123456789"
WAIT_MS = 20_000
"""How long a page may take to show something (the machine is shared and loaded)."""

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def _unavailable() -> str | None:
    if importlib_missing("playwright"):
        return "playwright is not installed: pip install -e '.[dev]'"
    if shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} not found: apt-get install chromium"
    return None


def importlib_missing(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    reason = _unavailable()
    if reason is not None:
        if os.environ.get(REQUIRE_BROWSER_ENV) == "1":
            pytest.fail(f"{reason} ({REQUIRE_BROWSER_ENV}=1, so this is a failure)")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(autouse=True)
def instant_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's tools answer at once (they wait 0.2 s to look real)."""
    monkeypatch.setattr(demo, "TOOL_LATENCY_S", 0)


@contextlib.contextmanager
def new_page(browser: Any, viewport: dict[str, int] = DESKTOP) -> Iterator[Any]:
    """A page in a fresh context; a script error or a blocked resource fails the test."""
    context = browser.new_context(viewport=viewport, color_scheme="light")
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            errors.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    try:
        yield page
    finally:
        context.close()
    assert errors == [], f"script errors on the page: {errors}"


def shot(page: Any, name: str, *, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(300)  # let the last fetch paint
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def run_address(inspector_url: str, run: str, workflow: str = WF) -> str:
    from urllib.parse import urlencode

    return f"{inspector_url}/run?{urlencode({'workflow': workflow, 'run': run})}"


@pytest.fixture
def inspector() -> Iterator[Inspector]:
    with served(opener("memory")) as started:
        yield started


@pytest.fixture
def writable() -> Iterator[Inspector]:
    with served(opener("memory"), allow_writes=True, token=TOKEN) as started:
        yield started


def test_navigate_from_workflows_to_a_run_its_steps_a_diff_and_a_fork(
    browser: Any, inspector: Inspector
) -> None:
    s = inspector.seeded
    with new_page(browser) as page:
        page.goto(inspector.url + "/")
        page.wait_for_selector(f"a.mini[href*='state=failed'][href*='{WF}']")
        shot(page, "workflows")
        page.get_by_role("link", name=WF).click()
        page.wait_for_selector(f"tr[data-run='{s.failed}']")
        assert page.locator(".chip-failed .count").inner_text() == "1"
        shot(page, "runs")
        page.get_by_role("link", name=s.completed, exact=True).click()
        page.wait_for_selector(".cp[data-step='1']")
        shot(page, "run-completed", full_page=True)

        page.locator(".cp[data-step='1']").click()
        page.get_by_role("heading", name="State at step 1").wait_for()
        assert "step=1" in page.url
        assert page.locator(".cp[data-step='1']").get_attribute("aria-current") == "step"

        page.get_by_role("button", name="Compare step 2 with step 1").click()
        page.wait_for_selector(".changes .path:text-is('tool_results.search_flights')")

        page.locator(".forktree a", has_text=s.forks[0][-32:][:8]).first.click()
        page.wait_for_url(re.compile(re.escape(s.forks[0].split("~")[1])))
        page.get_by_role("heading", name=s.forks[0]).wait_for()
        page.select_option("#a-run", s.completed)
        page.wait_for_selector("#a-step option[value='2']", state="attached")
        page.select_option("#a-step", "2")
        page.select_option("#b-step", "2")
        page.get_by_role("button", name="Compare", exact=True).click()
        page.wait_for_selector(".changes .path:text-is('tool_results.find_hotels.offer')")
        shot(page, "run-fork-diff", full_page=True)


def test_a_megabyte_state_opens_lazily(browser: Any, inspector: Inspector) -> None:
    with new_page(browser) as page:
        page.goto(run_address(inspector.url, "run-big", BIG_WF))
        page.get_by_text("more characters of 1,048,576").wait_for()
        items = page.locator("details.node[data-path='[\"items\"]']")
        items.locator("> summary").click()
        page.get_by_role("button", name=re.compile(r"show 200 more of 4,800 left")).wait_for()
        page.get_by_role("button", name="Compare step 1 with step 0").click()
        page.get_by_text("differ from character 1,048,575").wait_for()
        assert page.locator(".sdiff ins").first.inner_text() == "b"
        shot(page, "run-big-state")


def test_a_paused_run_is_answered_with_writes_on(browser: Any, writable: Inspector) -> None:
    run = writable.seeded.paused
    with new_page(browser) as page:
        page.goto(run_address(writable.url, run) + f"#token={TOKEN}")
        page.get_by_role("heading", name="Waiting for an answer").wait_for()
        assert "Book this trip?" in page.locator(".card-pause .payload").inner_text()
        assert "#token" not in page.url
        shot(page, "run-paused")
        page.fill("#answer-value", '{"approved": true, "by": "on-call"}')
        page.get_by_role("button", name="Answer and resume").click()
        page.get_by_text(f"Answered the pause of {run}: the run is now completed.").wait_for()
        page.wait_for_selector(".summary .badge[data-state='completed']")
    status = writable.call(lambda store: store.latest(WF, run))
    assert status is not None
    assert status.values["approval"] == {"approved": True, "by": "on-call"}


def test_an_answer_through_the_fleet_queues_the_run_for_a_worker(browser: Any) -> None:
    with served(opener("memory"), allow_writes=True, token=TOKEN, resume=fleet_answer) as ui:
        run = ui.seeded.paused
        with new_page(browser) as page:
            page.goto(run_address(ui.url, run) + f"#token={TOKEN}")
            page.fill("#answer-value", '{"approved": false}')
            page.get_by_role("button", name="Answer and resume").click()
            page.get_by_text(f"Answered the pause of {run}: the run is now queued.").wait_for()
            page.get_by_role("heading", name="Answered").wait_for()
            assert page.locator("#answer-value").count() == 0
            shot(page, "run-answered")
        record = ui.call(lambda store: store.run_record(WF, run))
    assert record.answer is not None
    assert record.answer.value == {"approved": False}


def test_a_wrong_token_is_refused(browser: Any, writable: Inspector) -> None:
    run = writable.seeded.paused
    with new_page(browser) as page:
        page.goto(run_address(writable.url, run))
        page.fill("#token", "not-the-token-at-all")
        page.get_by_role("button", name="Use token").click()
        page.fill("#answer-value", "true")
        page.get_by_role("button", name="Answer and resume").click()
        page.get_by_text("Refused: wrong or missing write token").wait_for()
        assert page.locator(".summary .badge").inner_text().lower() == "paused"


def test_with_writes_off_nothing_can_be_answered(browser: Any, inspector: Inspector) -> None:
    run = inspector.seeded.paused
    with new_page(browser) as page:
        page.goto(run_address(inspector.url, run))
        page.get_by_text("Answering needs an inspector started with --allow-writes").wait_for()
        assert page.locator("#answer-value").count() == 0
        assert page.get_by_role("button", name="Delete run").count() == 0
        refused = page.request.post(
            inspector.url + "/api/answer",
            data={"workflow": WF, "run": run, "value": True},
            headers={"X-Atomr-Token": TOKEN},
        )
        assert refused.status == 403
    record = inspector.call(lambda store: store.latest(WF, run))
    assert record is not None
    assert record.label == "interrupt:approve"


def test_phone_width_has_no_sideways_scrolling(browser: Any, inspector: Inspector) -> None:
    s = inspector.seeded
    with new_page(browser, PHONE) as page:
        for name, address in (
            ("runs-phone", f"{inspector.url}/workflow?workflow={WF}"),
            ("run-phone", run_address(inspector.url, s.forks[0])),
        ):
            page.goto(address)
            page.wait_for_selector(".badge")
            page.wait_for_timeout(500)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"], f"{name} is {width}px wide"
            shot(page, name, full_page=True)


def test_the_keyboard_reaches_a_run_and_opens_it(browser: Any, inspector: Inspector) -> None:
    with new_page(browser) as page:
        page.goto(f"{inspector.url}/workflow?workflow={WF}")
        page.wait_for_selector("tr[data-run] a")
        for _ in range(40):
            page.keyboard.press("Tab")
            focused = page.evaluate("document.activeElement.closest('tr[data-run]') !== null")
            if focused:
                break
        assert focused, "Tab never reached a run link"
        outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert outline != "none"
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"/run\?"))
        page.wait_for_selector(".timeline .cp")


class CliInspector:
    """``atomr-redis-state ui`` as a process of its own, on a seeded prefix of real Redis."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self, port: int = 0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "atomr_redis_state.cli", "ui", "--port", str(port)],
            env={
                **os.environ,
                "ATOMR_REDIS_URL": self.redis_url,
                "ATOMR_PREFIX": self.prefix,
                "PYTHONUNBUFFERED": "1",
            },
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        line = self.process.stderr.readline()
        match = re.match(r"inspector: (http://\S+)/ ", line)
        assert match, f"unexpected first line: {line!r}"
        self.url = match.group(1)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)
            if self.process.stderr is not None:
                self.process.stderr.close()
            self.process = None

    @property
    def port(self) -> int:
        return int(self.url.rpartition(":")[2])

    def save(self, run: str, step: int, values: dict[str, Any]) -> None:
        """Save a checkpoint from this (test) process: another process than the inspector."""

        async def save() -> None:
            async with RedisCheckpointer.from_url(self.redis_url, prefix=self.prefix) as store:
                await store.save(Snapshot(CheckpointKey(WF, run, step), values, f"layer:{step}"))

        elsewhere(save)


def elsewhere(work: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``work`` to the end in a thread of its own (Playwright's loop runs in this one)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, work()).result(60)


@pytest.fixture
def cli_inspector(redis_server: RedisServer) -> Iterator[CliInspector]:
    prefix = f"tuicli{os.getpid()}x{os.urandom(3).hex()}"

    async def seeded() -> None:
        async with RedisCheckpointer.from_url(redis_server.url, prefix=prefix) as store:
            await seed(store)

    elsewhere(seeded)
    inspector = CliInspector(redis_server.url, prefix)
    inspector.start()
    try:
        yield inspector
    finally:
        inspector.stop()


def test_a_checkpoint_saved_by_another_process_appears_live(
    browser: Any, cli_inspector: CliInspector
) -> None:
    run = "run-3-midway"
    with new_page(browser) as page:
        page.goto(run_address(cli_inspector.url, run))
        page.wait_for_selector(".dot-live")
        assert page.locator(".cp").count() == 1
        cli_inspector.save(run, 1, {"request": "Faro", "plan": ["search_flights"]})
        page.wait_for_selector(".cp[data-step='1']")
        page.get_by_role("heading", name="State at step 1").wait_for()
        shot(page, "run-live")


def test_after_a_lost_connection_the_page_says_so_and_reads_again(
    browser: Any, cli_inspector: CliInspector
) -> None:
    run = "run-3-midway"
    with new_page(browser) as page:
        page.goto(run_address(cli_inspector.url, run))
        page.wait_for_selector(".dot-live")
        cli_inspector.stop()
        page.wait_for_selector(".dot-connecting")
        cli_inspector.save(run, 1, {"request": "Faro"})  # while nobody listens: missed
        cli_inspector.start(cli_inspector.port)
        page.get_by_text("events may have been missed").wait_for()
        page.wait_for_selector(".cp[data-step='1']")
        page.wait_for_selector(".dot-live")
