"""The inspector's HTTP API, through Starlette's TestClient, on every store it supports."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from atomr_redis_state import Checkpointer, InMemoryCheckpointer
from atomr_redis_state.cli import demo
from atomr_redis_state.ui.server import TOKEN_HEADER, create_app, queued_answer
from atomr_redis_state.ui.tree import BUDGET, STRING_PREVIEW
from tests.ui_support import BIG_TEXT, BIG_WF, STORES, WF, Seeded, opener, resume_demo, seed

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(autouse=True)
def instant_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's tools answer at once (they wait 0.2 s to look real)."""
    monkeypatch.setattr(demo, "TOOL_LATENCY_S", 0)


@pytest.fixture(params=STORES)
def store_opener(
    request: pytest.FixtureRequest,
) -> Callable[[], AbstractAsyncContextManager[Checkpointer]]:
    kind: str = request.param
    url = None
    if kind == "redis":
        url = request.getfixturevalue("redis_server").url
    elif kind == "cluster":
        url = request.getfixturevalue("redis_cluster").url
    return opener(kind, url)


@dataclass
class Api:
    client: TestClient
    seeded: Seeded
    store: Checkpointer

    def get(self, name: str, **params: Any) -> Any:
        response = self.client.get(f"/api/{name}", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, name: str, body: Any, token: str | None = TOKEN, **headers: str) -> Any:
        sent = {"Content-Type": "application/json", **headers}
        if token is not None:
            sent[TOKEN_HEADER] = token
        return self.client.post(f"/api/{name}", content=orjson.dumps(body), headers=sent)


@contextlib.contextmanager
def inspector(
    store_opener: Callable[[], AbstractAsyncContextManager[Checkpointer]], **options: Any
) -> Iterator[Api]:
    """The app on a seeded store, opened (and seeded) in the test client's own loop."""
    opened: list[tuple[Checkpointer, Seeded]] = []

    @contextlib.asynccontextmanager
    async def open_seeded() -> AsyncIterator[Checkpointer]:
        async with store_opener() as store:
            opened.append((store, await seed(store)))
            yield store

    app = create_app(open_seeded, hosts=["testserver"], **options)
    with TestClient(app) as client:
        store, seeded = opened[0]
        yield Api(client, seeded, store)


@pytest.fixture
def api(store_opener: Callable[[], AbstractAsyncContextManager[Checkpointer]]) -> Iterator[Api]:
    with inspector(store_opener) as opened:
        yield opened


@pytest.fixture
def writable(
    store_opener: Callable[[], AbstractAsyncContextManager[Checkpointer]],
) -> Iterator[Api]:
    with inspector(store_opener, allow_writes=True, token=TOKEN, resume=resume_demo) as opened:
        yield opened


def states(api: Api, **params: Any) -> dict[str, str]:
    page = api.get("runs", workflow=WF, **params)
    return {run["run_id"]: run["state"] for run in page["runs"]}


def test_info_says_writes_are_off_by_default(api: Api) -> None:
    info = api.get("info")
    assert (info["writes"], info["can_answer"]) == (False, False)
    assert info["tones"]["failed"] == "danger"


def test_the_page_is_served_at_every_address(api: Api) -> None:
    for address in ("/", "/workflow?workflow=x", "/run?workflow=x&run=y"):
        response = api.client.get(address)
        assert response.status_code == 200
        assert '<script type="module" src="/static/app.js">' in response.text
    assert api.client.get("/static/app.js").headers["content-type"].startswith("text/javascript")


def test_the_page_runs_only_its_own_scripts_and_cannot_be_framed(api: Api) -> None:
    headers = api.client.get("/").headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"


def test_workflows_are_those_with_runs(api: Api) -> None:
    names = [w["workflow_id"] for w in api.get("workflows")["workflows"]]
    assert names == sorted([WF, BIG_WF])


def test_workflows_come_in_pages(api: Api) -> None:
    first = api.get("workflows", limit=1)
    second = api.get("workflows", limit=1, after=first["next_after"])
    assert [first["workflows"], second["workflows"]] == [
        [{"workflow_id": name}] for name in sorted([WF, BIG_WF])
    ]
    assert second["next_after"] is None


def test_runs_have_each_run_with_its_state(api: Api) -> None:
    s = api.seeded
    assert states(api) == {
        s.completed: "completed",
        s.forks[0]: "paused",
        s.forks[1]: "forked",
        s.paused: "paused",
        s.failed: "failed",
        s.midway: "idle",
        s.stalled: "stalled",
        s.running: "running",
    }


def test_runs_filtered_by_state_keep_only_those(api: Api) -> None:
    s = api.seeded
    assert states(api, state="paused,failed") == {
        s.paused: "paused",
        s.forks[0]: "paused",
        s.failed: "failed",
    }


def test_runs_filtered_by_id_keep_only_matching_ids(api: Api) -> None:
    assert set(states(api, q="FORK")) == set(api.seeded.forks)


def test_runs_filtered_by_state_and_id_keep_runs_matching_both(api: Api) -> None:
    assert states(api, q="fork", state="paused") == {api.seeded.forks[0]: "paused"}


def test_runs_pages_cover_every_run_once(api: Api) -> None:
    seen: list[str] = []
    after = None
    while True:
        page = api.get("runs", workflow=WF, limit=2, **({"after": after} if after else {}))
        seen += [run["run_id"] for run in page["runs"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == sorted(states(api))


def test_counts_count_every_run_by_state(api: Api) -> None:
    counts = api.get("counts", workflow=WF)
    assert counts["states"] == {
        "completed": 1,
        "paused": 2,
        "failed": 1,
        "forked": 1,
        "idle": 1,
        "stalled": 1,
        "running": 1,
    }
    assert (counts["total"], counts["forks"], counts["partial"]) == (8, 2, False)


def test_a_paused_run_shows_its_payload(api: Api) -> None:
    run = api.get("run", workflow=WF, run=api.seeded.paused)
    assert run["pause"]["step"] == "approve"
    assert run["pause"]["payload"]["question"] == "Book this trip?"


def test_a_running_run_shows_the_worker_holding_it(api: Api) -> None:
    lease = api.get("run", workflow=WF, run=api.seeded.running)["lease"]
    assert lease["owner"] == "worker-7:4242"


def test_a_failed_run_shows_its_error_and_attempts(api: Api) -> None:
    error = api.get("run", workflow=WF, run=api.seeded.failed)["last_error"]
    assert (error["step"], error["error_type"], error["attempts"]) == (
        "find_hotels",
        "ConnectionAbortedError",
        1,
    )


def test_the_timeline_names_the_steps_each_layer_ran(api: Api) -> None:
    history = api.get("history", workflow=WF, run=api.seeded.completed)
    ran = {cp["label"]: cp["steps"] for cp in history["checkpoints"]}
    assert ran["layer:0"] == ["plan"]
    assert sorted(ran["layer:1"]) == ["check_weather", "find_hotels", "search_flights"]


def test_the_timeline_can_leave_out_the_steps_to_read_only_labels(api: Api) -> None:
    history = api.get("history", workflow=WF, run=api.seeded.completed, steps=0)
    assert [cp["label"] for cp in history["checkpoints"]][:2] == ["init", "layer:0"]
    assert {cp["steps"] is None for cp in history["checkpoints"]} == {True}


def test_a_state_with_megabyte_values_comes_folded(api: Api) -> None:
    response = api.client.get("/api/state", params={"workflow": BIG_WF, "run": "run-big"})
    assert len(response.content) < 4 * BUDGET
    channels = dict(response.json()["node"]["items"])
    assert channels["document"]["len"] == len(BIG_TEXT)
    assert channels["document"]["cut"] == len(BIG_TEXT) - STRING_PREVIEW
    assert channels["items"]["n"] == 5_000


def test_a_folded_subtree_is_fetched_by_its_path(api: Api) -> None:
    path = orjson.dumps(["nested", "level", "deeper", "deepest"]).decode()
    node = api.get("state", workflow=BIG_WF, run="run-big", step=0, path=path)["node"]
    assert [value["v"] for _index, value in node["items"]] == list(range(50))


def test_a_long_list_comes_in_pages(api: Api) -> None:
    path = orjson.dumps(["items"]).decode()
    first = api.get("state", workflow=BIG_WF, run="run-big", path=path)["node"]
    second = api.get("state", workflow=BIG_WF, run="run-big", path=path, offset=first["next"])
    assert first["items"][0][0] == 0
    assert second["node"]["items"][0][0] == first["next"]


def test_a_cut_string_is_sent_whole_when_asked(api: Api) -> None:
    path = orjson.dumps(["document"]).decode()
    node = api.get("state", workflow=BIG_WF, run="run-big", step=1, path=path, full=1)["node"]
    assert (node["v"], node["cut"]) == (BIG_TEXT, 0)


def test_a_path_that_leads_nowhere_is_not_found(api: Api) -> None:
    path = orjson.dumps(["nested", "nope"]).decode()
    response = api.client.get(
        "/api/state", params={"workflow": BIG_WF, "run": "run-big", "path": path}
    )
    assert response.status_code == 404
    assert "'nope'" in response.json()["error"]


def test_a_diff_of_a_megabyte_string_shows_the_last_character(api: Api) -> None:
    diff = api.get("diff", workflow=BIG_WF, a_run="run-big", a_step=0, b_run="run-big", b_step=1)
    (change,) = diff["changes"]
    assert change["path"] == ["document"]
    region = change["string"]
    assert (region["start"], region["old"], region["new"]) == (len(BIG_TEXT) - 1, "a", "b")


def test_a_diff_across_a_run_and_its_fork_shows_the_edit(api: Api) -> None:
    s = api.seeded
    diff = api.get("diff", workflow=WF, a_run=s.completed, a_step=2, b_run=s.forks[0], b_step=2)
    paths = [change["path"] for change in diff["changes"]]
    assert ["tool_results", "find_hotels", "offer"] in paths


def test_the_fork_tree_holds_the_fork_of_the_fork(api: Api) -> None:
    s = api.seeded
    tree = api.get("lineage", workflow=WF, run=s.forks[1])
    nodes = {node["run_id"]: node for node in tree["nodes"]}
    assert tree["root"] == s.completed
    assert nodes[s.completed]["children"] == [s.forks[0]]
    assert (nodes[s.forks[1]]["parent"], nodes[s.forks[1]]["from_step"]) == (s.forks[0], 2)
    assert nodes[s.forks[1]]["current"] is True
    assert tree["states"][s.forks[0]]["state"] == "paused"


def test_a_missing_run_is_not_found(api: Api) -> None:
    response = api.client.get("/api/run", params={"workflow": WF, "run": "run-nope"})
    assert response.status_code == 404
    assert "run-nope" in response.json()["error"]


def test_a_bad_step_is_a_bad_request(api: Api) -> None:
    response = api.client.get("/api/state", params={"workflow": WF, "run": "x", "step": "two"})
    assert response.status_code == 400


def test_export_writes_the_export_commands_lines(api: Api) -> None:
    response = api.client.get("/api/export", params={"workflow": WF, "run": api.seeded.paused})
    lines = [orjson.loads(line) for line in response.content.splitlines()]
    assert lines[0]["format"] == "atomr-redis-state/checkpoints"
    assert [line["super_step"] for line in lines[1:]] == [0, 1, 2, 3]


def test_another_host_name_is_refused(api: Api) -> None:
    response = api.client.get("/api/info", headers={"Host": "attacker.example"})
    assert response.status_code == 400


def test_writes_are_refused_when_off(api: Api) -> None:
    response = api.post("delete", {"workflow": WF, "run": api.seeded.paused})
    assert response.status_code == 403
    assert api.get("run", workflow=WF, run=api.seeded.paused)["state"] == "paused"


def test_a_wrong_token_is_refused(writable: Api) -> None:
    response = writable.post("delete", {"workflow": WF, "run": writable.seeded.paused}, "x" * 26)
    assert response.status_code == 401
    assert writable.get("run", workflow=WF, run=writable.seeded.paused)["state"] == "paused"


def test_a_missing_token_is_refused(writable: Api) -> None:
    response = writable.post("delete", {"workflow": WF, "run": writable.seeded.paused}, None)
    assert response.status_code == 401


def test_a_write_that_is_not_json_is_refused(writable: Api) -> None:
    response = writable.client.post(
        "/api/delete",
        content=b"workflow=x&run=y",
        headers={TOKEN_HEADER: TOKEN, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415


def test_answering_a_pause_resumes_the_run(writable: Api) -> None:
    run = writable.seeded.paused
    response = writable.post("answer", {"workflow": WF, "run": run, "value": {"approved": True}})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "completed"
    state = writable.get("state", workflow=WF, run=run, path='["approval"]')
    assert state["node"]["items"] == [["approved", {"t": "bool", "v": True}]]


def test_answering_a_run_that_is_not_paused_is_a_conflict(writable: Api) -> None:
    response = writable.post("answer", {"workflow": WF, "run": writable.seeded.completed})
    assert response.status_code == 409


def test_answering_without_a_resumer_says_why(
    store_opener: Callable[[], AbstractAsyncContextManager[Checkpointer]],
) -> None:
    with inspector(store_opener, allow_writes=True, token=TOKEN) as api:
        assert api.get("info")["can_answer"] is False
        response = api.post("answer", {"workflow": WF, "run": api.seeded.paused, "value": 1})
        assert response.status_code == 501
        assert "cannot answer pauses" in response.json()["error"]


async def _answer_through_the_queue(
    store: Checkpointer, workflow_id: str, run_id: str, value: Any
) -> None:
    """What ``atomr-redis-state ui --allow-writes`` answers with: the store's work queue."""
    resume = queued_answer(store)
    assert resume is not None
    await resume(store, workflow_id, run_id, value)


@pytest.mark.skipif(
    not hasattr(InMemoryCheckpointer, "resume_run"), reason="the stores have no work queue"
)
def test_an_answer_through_the_queue_reaches_the_worker_that_claims_the_run(
    store_opener: Callable[[], AbstractAsyncContextManager[Checkpointer]],
) -> None:
    with inspector(
        store_opener, allow_writes=True, token=TOKEN, resume=_answer_through_the_queue
    ) as api:
        run = api.seeded.paused
        response = api.post("answer", {"workflow": WF, "run": run, "value": {"approved": True}})
        assert response.status_code == 200, response.text
        claim = api.client.portal.call(_claim, api)  # type: ignore[union-attr]
    assert (claim.lease.run_id, claim.has_answer, claim.answer) == (run, True, {"approved": True})


async def _claim(api: Api) -> Any:
    store: Any = api.store
    return await store.claim(WF, "worker-test", 30)


def test_a_fork_with_edits_is_a_new_run(writable: Api) -> None:
    s = writable.seeded
    body = {"workflow": WF, "run": s.completed, "step": 2, "edits": {"summary": "edited"}}
    response = writable.post("fork", body)
    assert response.status_code == 200, response.text
    made = response.json()["run_id"]
    assert made.startswith(s.completed + "~fork-")
    node = writable.get("state", workflow=WF, run=made, path='["summary"]')["node"]
    assert node["v"] == "edited"


def test_a_fork_editing_an_unknown_channel_is_refused(writable: Api) -> None:
    body = {"workflow": WF, "run": writable.seeded.completed, "step": 2, "edits": {"sumary": 1}}
    response = writable.post("fork", body)
    assert response.status_code == 400
    assert "sumary" in response.json()["error"]
    assert len(states(writable)) == 8


def test_delete_removes_the_run(writable: Api) -> None:
    response = writable.post("delete", {"workflow": WF, "run": writable.seeded.failed})
    assert response.json()["deleted"] is True
    assert writable.seeded.failed not in states(writable)


def test_writes_need_a_token() -> None:
    with pytest.raises(ValueError, match="token"):
        create_app(_never_opened, allow_writes=True)


def _never_opened() -> AbstractAsyncContextManager[Checkpointer]:
    raise AssertionError("not opened")
