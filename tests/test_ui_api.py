"""The inspector's HTTP API, called in process through httpx, on every store it supports."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, cast

import httpx
import orjson
import pytest

from atomr_redis_state import Checkpointer, InMemoryCheckpointer
from atomr_redis_state.cli import demo
from atomr_redis_state.ui.server import TOKEN_HEADER, create_app
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
    client: httpx.AsyncClient
    seeded: Seeded
    store: Checkpointer

    async def get(self, name: str, **params: Any) -> Any:
        response = await self.client.get(f"/api/{name}", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    async def post(
        self, name: str, body: Any, token: str | None = TOKEN, **headers: str
    ) -> httpx.Response:
        sent = {"Content-Type": "application/json", **headers}
        if token is not None:
            sent[TOKEN_HEADER] = token
        return await self.client.post(f"/api/{name}", content=orjson.dumps(body), headers=sent)


@contextlib.asynccontextmanager
async def inspector(
    store_opener: Callable[[], AbstractAsyncContextManager[Checkpointer]], **options: Any
) -> AsyncIterator[Api]:
    """The app on a seeded store, called in process through httpx's ASGI transport."""
    async with store_opener() as store:
        seeded = await seed(store)
        app = create_app(store, hosts=["testserver"], **options)
        transport = httpx.ASGITransport(app=cast(Any, app))  # httpx 0.27 types it narrower
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(client, seeded, store)


@pytest.fixture
async def api(
    store_opener: Callable[[], AbstractAsyncContextManager[Checkpointer]],
) -> AsyncIterator[Api]:
    async with inspector(store_opener) as opened:
        yield opened


@pytest.fixture
async def writable(
    store_opener: Callable[[], AbstractAsyncContextManager[Checkpointer]],
) -> AsyncIterator[Api]:
    async with inspector(
        store_opener, allow_writes=True, token=TOKEN, resume=resume_demo
    ) as opened:
        yield opened


async def states(api: Api, **params: Any) -> dict[str, str]:
    page = await api.get("runs", workflow=WF, **params)
    return {run["run_id"]: run["state"] for run in page["runs"]}


async def test_info_says_writes_are_off_by_default(api: Api) -> None:
    info = await api.get("info")
    assert (info["writes"], info["can_answer"]) == (False, False)
    assert info["tones"]["failed"] == "danger"


async def test_the_page_is_served_at_every_address(api: Api) -> None:
    for address in ("/", "/workflow?workflow=x", "/run?workflow=x&run=y"):
        response = await api.client.get(address)
        assert response.status_code == 200
        assert '<script type="module" src="/static/app.js">' in response.text
    assert (
        (await api.client.get("/static/app.js"))
        .headers["content-type"]
        .startswith("text/javascript")
    )


async def test_the_page_runs_only_its_own_scripts_and_cannot_be_framed(api: Api) -> None:
    headers = (await api.client.get("/")).headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"


async def test_workflows_are_those_with_runs(api: Api) -> None:
    names = [w["workflow_id"] for w in (await api.get("workflows"))["workflows"]]
    assert names == sorted([WF, BIG_WF])


async def test_workflows_come_in_pages(api: Api) -> None:
    first = await api.get("workflows", limit=1)
    second = await api.get("workflows", limit=1, after=first["next_after"])
    assert [first["workflows"], second["workflows"]] == [
        [{"workflow_id": name}] for name in sorted([WF, BIG_WF])
    ]
    assert second["next_after"] is None


async def test_runs_have_each_run_with_its_state(api: Api) -> None:
    s = api.seeded
    assert await states(api) == {
        s.completed: "completed",
        s.forks[0]: "paused",
        s.forks[1]: "forked",
        s.paused: "paused",
        s.failed: "failed",
        s.midway: "idle",
        s.stalled: "stalled",
        s.running: "running",
    }


async def test_runs_filtered_by_state_keep_only_those(api: Api) -> None:
    s = api.seeded
    assert await states(api, state="paused,failed") == {
        s.paused: "paused",
        s.forks[0]: "paused",
        s.failed: "failed",
    }


async def test_runs_filtered_by_id_keep_only_matching_ids(api: Api) -> None:
    assert set(await states(api, q="FORK")) == set(api.seeded.forks)


async def test_runs_filtered_by_state_and_id_keep_runs_matching_both(api: Api) -> None:
    assert await states(api, q="fork", state="paused") == {api.seeded.forks[0]: "paused"}


async def test_runs_pages_cover_every_run_once(api: Api) -> None:
    seen: list[str] = []
    after = None
    while True:
        page = await api.get("runs", workflow=WF, limit=2, **({"after": after} if after else {}))
        seen += [run["run_id"] for run in page["runs"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == sorted(await states(api))


async def test_counts_count_every_run_by_state(api: Api) -> None:
    counts = await api.get("counts", workflow=WF)
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


async def test_a_paused_run_shows_its_payload(api: Api) -> None:
    run = await api.get("run", workflow=WF, run=api.seeded.paused)
    assert run["pause"]["step"] == "approve"
    assert run["pause"]["payload"]["question"] == "Book this trip?"


async def test_a_running_run_shows_the_worker_holding_it(api: Api) -> None:
    lease = (await api.get("run", workflow=WF, run=api.seeded.running))["lease"]
    assert lease["owner"] == "worker-7:4242"


async def test_a_failed_run_shows_its_error_and_attempts(api: Api) -> None:
    error = (await api.get("run", workflow=WF, run=api.seeded.failed))["last_error"]
    assert (error["step"], error["error_type"], error["attempts"]) == (
        "find_hotels",
        "ConnectionAbortedError",
        1,
    )


async def test_the_timeline_names_the_steps_each_layer_ran(api: Api) -> None:
    history = await api.get("history", workflow=WF, run=api.seeded.completed)
    ran = {cp["label"]: cp["steps"] for cp in history["checkpoints"]}
    assert ran["layer:0"] == ["plan"]
    assert sorted(ran["layer:1"]) == ["check_weather", "find_hotels", "search_flights"]


async def test_the_timeline_can_leave_out_the_steps_to_read_only_labels(api: Api) -> None:
    history = await api.get("history", workflow=WF, run=api.seeded.completed, steps=0)
    assert [cp["label"] for cp in history["checkpoints"]][:2] == ["init", "layer:0"]
    assert {cp["steps"] is None for cp in history["checkpoints"]} == {True}


async def test_a_state_with_megabyte_values_comes_folded(api: Api) -> None:
    response = await api.client.get("/api/state", params={"workflow": BIG_WF, "run": "run-big"})
    assert len(response.content) < 4 * BUDGET
    channels = dict(response.json()["node"]["items"])
    assert channels["document"]["len"] == len(BIG_TEXT)
    assert channels["document"]["cut"] == len(BIG_TEXT) - STRING_PREVIEW
    assert channels["items"]["n"] == 5_000


async def test_a_folded_subtree_is_fetched_by_its_path(api: Api) -> None:
    path = orjson.dumps(["nested", "level", "deeper", "deepest"]).decode()
    node = (await api.get("state", workflow=BIG_WF, run="run-big", step=0, path=path))["node"]
    assert [value["v"] for _index, value in node["items"]] == list(range(50))


async def test_a_long_list_comes_in_pages(api: Api) -> None:
    path = orjson.dumps(["items"]).decode()
    first = (await api.get("state", workflow=BIG_WF, run="run-big", path=path))["node"]
    second = await api.get("state", workflow=BIG_WF, run="run-big", path=path, offset=first["next"])
    assert first["items"][0][0] == 0
    assert second["node"]["items"][0][0] == first["next"]


async def test_a_cut_string_is_sent_whole_when_asked(api: Api) -> None:
    path = orjson.dumps(["document"]).decode()
    node = (await api.get("state", workflow=BIG_WF, run="run-big", step=1, path=path, full=1))[
        "node"
    ]
    assert (node["v"], node["cut"]) == (BIG_TEXT, 0)


async def test_a_path_that_leads_nowhere_is_not_found(api: Api) -> None:
    path = orjson.dumps(["nested", "nope"]).decode()
    response = await api.client.get(
        "/api/state", params={"workflow": BIG_WF, "run": "run-big", "path": path}
    )
    assert response.status_code == 404
    assert "'nope'" in response.json()["error"]


async def test_a_diff_of_a_megabyte_string_shows_the_last_character(api: Api) -> None:
    diff = await api.get(
        "diff", workflow=BIG_WF, a_run="run-big", a_step=0, b_run="run-big", b_step=1
    )
    (change,) = diff["changes"]
    assert change["path"] == ["document"]
    region = change["string"]
    assert (region["start"], region["old"], region["new"]) == (len(BIG_TEXT) - 1, "a", "b")


async def test_a_diff_across_a_run_and_its_fork_shows_the_edit(api: Api) -> None:
    s = api.seeded
    diff = await api.get(
        "diff", workflow=WF, a_run=s.completed, a_step=2, b_run=s.forks[0], b_step=2
    )
    paths = [change["path"] for change in diff["changes"]]
    assert ["tool_results", "find_hotels", "offer"] in paths


async def test_the_fork_tree_holds_the_fork_of_the_fork(api: Api) -> None:
    s = api.seeded
    tree = await api.get("lineage", workflow=WF, run=s.forks[1])
    nodes = {node["run_id"]: node for node in tree["nodes"]}
    assert tree["root"] == s.completed
    assert nodes[s.completed]["children"] == [s.forks[0]]
    assert (nodes[s.forks[1]]["parent"], nodes[s.forks[1]]["from_step"]) == (s.forks[0], 2)
    assert nodes[s.forks[1]]["current"] is True
    assert tree["states"][s.forks[0]]["state"] == "paused"


async def test_a_missing_run_is_not_found(api: Api) -> None:
    response = await api.client.get("/api/run", params={"workflow": WF, "run": "run-nope"})
    assert response.status_code == 404
    assert "run-nope" in response.json()["error"]


async def test_a_bad_step_is_a_bad_request(api: Api) -> None:
    response = await api.client.get(
        "/api/state", params={"workflow": WF, "run": "x", "step": "two"}
    )
    assert response.status_code == 400


async def test_export_writes_the_export_commands_lines(writable: Api) -> None:
    response = await writable.post("export", {"workflow": WF, "run": writable.seeded.paused})
    assert response.status_code == 200, response.text
    lines = [orjson.loads(line) for line in response.content.splitlines()]
    assert lines[0]["format"] == "atomr-redis-state/checkpoints"
    assert [line["super_step"] for line in lines[1:]] == [0, 1, 2, 3]


async def test_export_is_an_action_refused_when_writes_are_off(api: Api) -> None:
    response = await api.post("export", {"workflow": WF, "run": api.seeded.paused})
    assert response.status_code == 403
    assert (await api.client.get("/api/export", params={"workflow": WF})).status_code == 405


async def test_export_is_refused_with_a_wrong_token(writable: Api) -> None:
    response = await writable.post("export", {"workflow": WF, "run": "x"}, token="wrong")
    assert response.status_code == 401


async def test_another_host_name_is_refused(api: Api) -> None:
    response = await api.client.get("/api/info", headers={"Host": "attacker.example"})
    assert response.status_code == 400


async def test_writes_are_refused_when_off(api: Api) -> None:
    response = await api.post("delete", {"workflow": WF, "run": api.seeded.paused})
    assert response.status_code == 403
    assert (await api.get("run", workflow=WF, run=api.seeded.paused))["state"] == "paused"


async def test_a_wrong_token_is_refused(writable: Api) -> None:
    response = await writable.post(
        "delete", {"workflow": WF, "run": writable.seeded.paused}, "x" * 26
    )
    assert response.status_code == 401
    assert (await writable.get("run", workflow=WF, run=writable.seeded.paused))["state"] == "paused"


async def test_a_missing_token_is_refused(writable: Api) -> None:
    response = await writable.post("delete", {"workflow": WF, "run": writable.seeded.paused}, None)
    assert response.status_code == 401


async def test_a_write_that_is_not_json_is_refused(writable: Api) -> None:
    response = await writable.client.post(
        "/api/delete",
        content=b"workflow=x&run=y",
        headers={TOKEN_HEADER: TOKEN, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415


async def test_answering_a_pause_resumes_the_run(writable: Api) -> None:
    run = writable.seeded.paused
    response = await writable.post(
        "answer", {"workflow": WF, "run": run, "value": {"approved": True}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "completed"
    state = await writable.get("state", workflow=WF, run=run, path='["approval"]')
    assert state["node"]["items"] == [["approved", {"t": "bool", "v": True}]]


async def test_answering_a_run_that_is_not_paused_is_a_conflict(writable: Api) -> None:
    response = await writable.post("answer", {"workflow": WF, "run": writable.seeded.completed})
    assert response.status_code == 409


async def test_answering_without_a_resumer_says_why(
    store_opener: Callable[[], AbstractAsyncContextManager[Checkpointer]],
) -> None:
    async with inspector(store_opener, allow_writes=True, token=TOKEN, resume=None) as api:
        assert (await api.get("info"))["can_answer"] is False
        response = await api.post("answer", {"workflow": WF, "run": api.seeded.paused, "value": 1})
        assert response.status_code == 501
        assert "without a way to answer pauses" in response.json()["error"]


async def test_by_default_an_answer_is_stored_and_the_run_queued_for_a_worker(
    store_opener: Callable[[], AbstractAsyncContextManager[Checkpointer]],
) -> None:
    async with inspector(store_opener, allow_writes=True, token=TOKEN) as api:
        run = api.seeded.paused
        response = await api.post(
            "answer", {"workflow": WF, "run": run, "value": {"approved": True}}
        )
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "queued"
        record = await api.store.run_record(WF, run)
    assert record.answer is not None
    assert record.answer.value == {"approved": True}


async def test_a_fork_with_edits_is_a_new_run(writable: Api) -> None:
    s = writable.seeded
    body = {"workflow": WF, "run": s.completed, "step": 2, "edits": {"summary": "edited"}}
    response = await writable.post("fork", body)
    assert response.status_code == 200, response.text
    made = response.json()["run_id"]
    assert made.startswith(s.completed + "~fork-")
    node = (await writable.get("state", workflow=WF, run=made, path='["summary"]'))["node"]
    assert node["v"] == "edited"


async def test_a_fork_editing_an_unknown_channel_is_refused(writable: Api) -> None:
    body = {"workflow": WF, "run": writable.seeded.completed, "step": 2, "edits": {"sumary": 1}}
    response = await writable.post("fork", body)
    assert response.status_code == 400
    assert "sumary" in response.json()["error"]
    assert len(await states(writable)) == 8


async def test_delete_removes_the_run(writable: Api) -> None:
    response = await writable.post("delete", {"workflow": WF, "run": writable.seeded.failed})
    assert response.json()["deleted"] is True
    assert writable.seeded.failed not in await states(writable)


async def test_writes_need_a_token() -> None:
    with pytest.raises(ValueError, match="token"):
        create_app(InMemoryCheckpointer(), allow_writes=True)
