"""runs, history, show, diff, fork and delete on fakeredis, in-process (output and exit codes)."""

from __future__ import annotations

import json

import pytest

from atomr_redis_state import Checkpointer, CheckpointKey, Snapshot
from tests.test_cli_support import BOX_DRAWING, WF, FakeStores, Seeded, flat, seed


@pytest.fixture
def fake() -> FakeStores:
    return FakeStores()


@pytest.fixture
def seeded(fake: FakeStores) -> Seeded:
    return fake.run(seed)


def test_runs_shows_each_runs_status_step_and_pause(fake: FakeStores, seeded: Seeded) -> None:
    done = fake.invoke("runs", WF)
    assert done.exit_code == 0, done.output
    out = flat(done.stdout)
    assert f"runs of workflow '{WF}'" in out
    assert "run-done completed 2 layer:1" in out
    assert "run-paused paused 2 interrupt:second" in out
    assert "paused at second (inside)" in out
    assert "run-failed failed 1 layer:0" in out
    assert "second failed: ToolDown after 1 attempt(s)" in out
    assert "(fork)" in out
    assert "more runs" not in out


def test_runs_json_is_machine_readable(fake: FakeStores, seeded: Seeded) -> None:
    done = fake.invoke("runs", WF, "--json")
    assert done.exit_code == 0
    document = json.loads(done.stdout)
    by_id = {row["run_id"]: row for row in document["runs"]}
    assert list(by_id) == sorted(by_id)
    assert by_id[seeded.done]["state"] == "completed"
    assert by_id[seeded.paused]["pause"]["step"] == "second"
    assert by_id[seeded.paused]["pause"]["payload"] == {"question": "book it?"}
    assert by_id[seeded.failed]["last_error"]["error_type"] == "ToolDown"
    assert by_id[seeded.fork]["fork"] is True
    assert by_id[seeded.done]["fork"] is False
    assert isinstance(by_id[seeded.done]["updated_at_ms"], int)
    assert document["next_after"] is None


def test_runs_pages_with_limit_and_after(fake: FakeStores, seeded: Seeded) -> None:
    first = json.loads(fake.invoke("runs", WF, "--json", "--limit", "3").stdout)
    assert len(first["runs"]) == 3
    assert first["next_after"] == first["runs"][-1]["run_id"]
    rest = json.loads(
        fake.invoke("runs", WF, "--json", "--limit", "3", "--after", first["next_after"]).stdout
    )
    assert [r["run_id"] for r in first["runs"] + rest["runs"]] == sorted(
        [seeded.done, seeded.paused, seeded.failed, seeded.fork]
    )
    assert rest["next_after"] is None
    table = fake.invoke("runs", WF, "--limit", "3")
    assert f"more runs: --after {first['next_after']}" in flat(table.stdout)


def test_runs_of_an_unknown_workflow_says_so(fake: FakeStores) -> None:
    done = fake.invoke("runs", "nobody")
    assert done.exit_code == 0
    assert "no runs of workflow 'nobody' under prefix 'atomr'" in done.stdout


def test_history_lists_checkpoints_and_marks_forks(fake: FakeStores, seeded: Seeded) -> None:
    done = fake.invoke("history", WF, seeded.done)
    assert done.exit_code == 0, done.output
    out = flat(done.stdout)
    assert "0 init" in out
    assert "1 layer:0" in out
    assert "2 layer:1" in out
    assert f"forked into {seeded.fork}" in out
    fork = flat(fake.invoke("history", WF, seeded.fork).stdout)
    assert f"forked from {seeded.done}" in fork


def test_history_json(fake: FakeStores, seeded: Seeded) -> None:
    document = json.loads(fake.invoke("history", WF, seeded.done, "--json").stdout)
    rows = document["checkpoints"]
    assert [(r["super_step"], r["label"]) for r in rows] == [
        (0, "init"),
        (1, "layer:0"),
        (2, "layer:1"),
    ]
    assert rows[1]["forked_into"] == [seeded.fork]
    assert rows[0]["forked_into"] == []
    assert rows[0]["fork_of"] is None
    fork = json.loads(fake.invoke("history", WF, seeded.fork, "--json").stdout)
    assert fork["checkpoints"][0]["fork_of"] == seeded.done
    paged = json.loads(fake.invoke("history", WF, seeded.done, "--json", "--limit", "1").stdout)
    assert [r["super_step"] for r in paged["checkpoints"]] == [2]
    before = fake.invoke("history", WF, seeded.done, "--json", "--before", "2", "--limit", "1")
    assert [r["super_step"] for r in json.loads(before.stdout)["checkpoints"]] == [1]


def test_show_pretty_prints_the_latest_snapshot_and_folds_long_values(
    fake: FakeStores, seeded: Seeded
) -> None:
    done = fake.invoke("show", WF, seeded.done)
    assert done.exit_code == 0, done.output
    out = flat(done.stdout)
    assert f"run '{seeded.done}', super-step 2 (layer:1)" in out
    assert '"goal": "trip",' in out
    assert "more characters of" in out
    assert "--full shows all" in out
    assert "runner" not in out  # the metadata only with --metadata
    full = flat(fake.invoke("show", WF, seeded.done, "--full").stdout)
    assert "more characters" not in full
    assert "x" * 600 in full.replace(" ", "")
    with_meta = flat(fake.invoke("show", WF, seeded.done, "--metadata").stdout)
    assert "(metadata) runner" in with_meta


def test_show_a_given_step_as_json(fake: FakeStores, seeded: Seeded) -> None:
    document = json.loads(fake.invoke("show", WF, seeded.done, "1", "--json").stdout)
    assert document["super_step"] == 1
    assert document["label"] == "layer:0"
    assert document["values"] == {
        "approval": None,
        "messages": ["planned"],
        "plan": {"goal": "trip", "days": 3, "stops": ["Lisbon"]},
    }
    assert document["metadata"]["runner"]["done"] == ["plan"]


def test_show_does_not_interpret_markup_in_values(fake: FakeStores) -> None:
    async def save(store: Checkpointer) -> None:
        await store.save(Snapshot(CheckpointKey(WF, "r", 0), {"[bold]": "[red]x[/red]"}))

    fake.run(save)
    out = fake.invoke("show", WF, "r").stdout
    assert "[bold]" in out
    assert "[red]x[/red]" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", WF, "run-nope"), "run 'run-nope' of workflow 'wf-cli' has no checkpoint"),
        (("show", WF, "run-done", "9"), "run 'run-done' of workflow 'wf-cli' has no super-step 9"),
        (("history", WF, "run-nope"), "run 'run-nope' of workflow 'wf-cli' has no checkpoint"),
        (("diff", WF, "run-done", "0", "7"), "has no super-step 7 (it has 0, 1, 2)"),
        (("fork", WF, "run-done", "9"), "no checkpoint for workflow 'wf-cli', run 'run-done'"),
        (("delete", WF, "run-nope", "--yes"), "run 'run-nope' of workflow 'wf-cli'"),
        (("export", WF, "run-nope"), "run 'run-nope' of workflow 'wf-cli' has no checkpoint"),
    ],
)
def test_a_missing_run_or_step_is_a_one_line_error(
    fake: FakeStores, seeded: Seeded, args: tuple[str, ...], message: str
) -> None:
    done = fake.invoke(*args)
    assert done.exit_code == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("Error: ")
    assert message in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("show", WF, "r", "-1"),
        ("show", WF, "r", "two"),
        ("diff", WF, "r", "1"),
        ("diff", WF, "r", "1", "r2", "x"),
        ("diff", WF, "r", "1", "a", "b", "2"),
        ("fork", WF, "r", "0", "--set", "plan"),
        ("fork", WF, "r", "0", "--set", "plan=not json"),
        ("runs", WF, "--limit", "0"),
        ("runs", WF, "--prefix", "a{b}"),
    ],
)
def test_bad_arguments_are_usage_errors(fake: FakeStores, args: tuple[str, ...]) -> None:
    done = fake.invoke(*args)
    assert done.exit_code == 2
    assert "Traceback" not in done.output


def test_diff_within_a_run(fake: FakeStores, seeded: Seeded) -> None:
    done = fake.invoke("diff", WF, seeded.done, "0", "2")
    assert done.exit_code == 0, done.output
    out = flat(done.stdout)
    assert "run-done@0 (init) -> run-done@2 (layer:1): 3 change(s)" in out
    assert '~ changed plan: null -> {"goal":"trip","days":3,"stops":["Lisbon"]}' in out
    assert '+ appended messages[0]: "planned"' in out
    assert '+ appended messages[1]: {"role":"tool","content":"flights found xxx' in out


def test_diff_across_a_run_and_its_fork_as_json(fake: FakeStores, seeded: Seeded) -> None:
    done = fake.invoke("diff", WF, seeded.done, "1", seeded.fork, "1", "--json")
    assert done.exit_code == 0, done.output
    document = json.loads(done.stdout)
    assert document["format_version"] == 1
    assert document["kind"] == "diff"
    assert {k: document["from"][k] for k in ("run_id", "super_step", "label")} == {
        "run_id": seeded.done,
        "super_step": 1,
        "label": "layer:0",
    }
    assert isinstance(document["from"]["timestamp_ms"], int)
    assert document["to"]["run_id"] == seeded.fork
    assert document["changes"] == [
        {"kind": "changed", "path": ["plan", "days"], "old": 3, "new": 5},
        {"kind": "removed", "path": ["plan", "stops"], "old": ["Lisbon"]},
    ]


def test_diff_of_identical_snapshots_has_no_changes(fake: FakeStores, seeded: Seeded) -> None:
    done = fake.invoke("diff", WF, seeded.done, "2", "2")
    assert done.exit_code == 0
    assert "0 change(s)" in done.stdout


def test_fork_with_edits_prints_the_new_run(fake: FakeStores, seeded: Seeded) -> None:
    done = fake.invoke(
        "fork", WF, seeded.done, "1", "--set", 'approval={"by": "bob"}', "--set", 'plan="short"'
    )
    assert done.exit_code == 0, done.output
    new_run = done.stdout.split()[-1]
    assert new_run.startswith(f"{seeded.done}~fork-")
    assert f"forked {seeded.done}@1 into {new_run}" in done.stdout

    async def load(store: Checkpointer) -> Snapshot | None:
        return await store.latest(WF, new_run)

    snapshot = fake.run(load)
    assert snapshot is not None
    assert snapshot.key.super_step == 1
    assert snapshot.values["approval"] == {"by": "bob"}
    assert snapshot.values["plan"] == "short"
    assert snapshot.label == f"fork-of:{seeded.done}"
    as_json = json.loads(fake.invoke("fork", WF, seeded.done, "0", "--json").stdout)
    assert as_json["run_id"].startswith(f"{seeded.done}~fork-")
    assert as_json["from"] == {"run_id": seeded.done, "super_step": 0}


def test_delete_asks_first_and_keeps_the_run_on_no(fake: FakeStores, seeded: Seeded) -> None:
    refused = fake.invoke("delete", WF, seeded.paused, input="n\n")
    assert refused.exit_code == 1
    assert "Delete run 'run-paused' of workflow 'wf-cli' (3 checkpoint(s))?" in refused.stderr
    assert fake.run(lambda store: store.latest(WF, seeded.paused)) is not None
    confirmed = fake.invoke("delete", WF, seeded.paused, input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert "deleted run run-paused of workflow wf-cli (3 checkpoint(s))" in confirmed.stdout
    assert fake.run(lambda store: store.latest(WF, seeded.paused)) is None


def test_delete_with_yes_does_not_ask_and_keeps_forks(fake: FakeStores, seeded: Seeded) -> None:
    done = fake.invoke("delete", WF, seeded.done, "--yes", "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout) == {
        "format_version": 1,
        "kind": "delete",
        "workflow_id": WF,
        "run_id": seeded.done,
        "deleted": True,
        "checkpoints": 3,
    }
    assert fake.run(lambda store: store.latest(WF, seeded.done)) is None
    assert fake.run(lambda store: store.latest(WF, seeded.fork)) is not None


def test_prefix_and_url_come_from_options_or_the_environment(
    fake: FakeStores, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.run(seed, prefix="elsewhere")
    assert "no runs" in fake.invoke("runs", WF).stdout
    assert "run-done" in fake.invoke("runs", WF, "--prefix", "elsewhere").stdout
    monkeypatch.setenv("ATOMR_PREFIX", "elsewhere")
    monkeypatch.setenv("ATOMR_REDIS_URL", "redis://example.invalid:1/3")
    monkeypatch.setenv("ATOMR_CLUSTER", "1")
    assert "run-done" in fake.invoke("runs", WF).stdout
    assert fake.opened[-1].prefix == "elsewhere"
    assert fake.opened[-1].url == "redis://example.invalid:1/3"
    assert fake.opened[-1].cluster is True


def test_every_command_has_help(fake: FakeStores) -> None:
    top = fake.invoke("--help")
    for name in ("runs", "history", "show", "diff", "fork", "delete", "export", "import", "watch"):
        assert f"  {name} " in top.stdout
        sub = fake.invoke(name, "--help")
        assert sub.exit_code == 0
        assert "--redis-url URL" in sub.stdout
        assert "ATOMR_REDIS_URL" in sub.stdout
    assert "STEP_A [RUN_B] STEP_B" in fake.invoke("diff", "--help").stdout


def test_workflows_lists_the_workflows_under_the_prefix(fake: FakeStores, seeded: Seeded) -> None:
    fake.run(lambda store: seed(store, "wf-other"))
    done = fake.invoke("workflows")
    assert done.exit_code == 0, done.output
    assert done.stdout.split() == ["wf-cli", "wf-other"]
    page = json.loads(fake.invoke("workflows", "--json", "--limit", "1").stdout)
    assert page["workflows"] == [{"workflow_id": "wf-cli"}]
    assert page["next_after"] == "wf-cli"
    assert "more workflows: --after wf-cli" in fake.invoke("workflows", "--limit", "1").stdout
    empty = fake.invoke("workflows", "--prefix", "elsewhere")
    assert "no workflows under prefix 'elsewhere'" in empty.stdout


def test_a_wide_terminal_gets_a_table_and_a_narrow_one_a_line_per_field(
    fake: FakeStores, seeded: Seeded
) -> None:
    wide = fake.invoke("runs", WF, columns=200).stdout
    assert BOX_DRAWING.search(wide)
    narrow = fake.invoke("runs", WF, columns=60).stdout
    assert not BOX_DRAWING.search(narrow)
    assert seeded.fork in narrow.splitlines()
    assert "run-done completed 2" in flat(narrow)
    assert "(fork) forked 1" in flat(narrow)
    assert "paused at second (inside)" in flat(narrow)


def test_a_diff_of_a_megabyte_string_shows_where_it_differs(fake: FakeStores) -> None:
    big = "x" * 1_000_000

    async def write(store: Checkpointer) -> None:
        await store.save(Snapshot(CheckpointKey(WF, "run-big", 0), {"text": big + "a"}))
        await store.save(Snapshot(CheckpointKey(WF, "run-big", 1), {"text": big + "b"}))

    fake.run(write)
    done = fake.invoke("diff", WF, "run-big", "0", "1")
    assert done.exit_code == 0, done.output
    out = flat(done.stdout)
    assert "~ changed text: string of 1000001 chars, differs at 1000000:" in out
    assert "…" + "x" * 40 + "[-a-]{+b+}" in out
    assert len(done.stdout) < 1000


def test_a_string_diff_in_the_middle_shows_the_text_around_it(fake: FakeStores) -> None:
    async def write(store: Checkpointer) -> None:
        await store.save(Snapshot(CheckpointKey(WF, "run-s", 0), {"note": "the cat sat"}))
        await store.save(Snapshot(CheckpointKey(WF, "run-s", 1), {"note": "the dog sat"}))

    fake.run(write)
    out = flat(fake.invoke("diff", WF, "run-s", "0", "1").stdout)
    assert "differs at 4: the [-cat-]{+dog+} sat" in out


def test_control_and_bidi_characters_from_the_store_are_printed_escaped(
    fake: FakeStores,
) -> None:
    evil = "run-\u202eevil\x1b[2J"

    async def write(store: Checkpointer) -> None:
        await store.save(
            Snapshot(CheckpointKey(WF, evil, 0), {"v\u2066": "a\u202eb"}, label="x\u200by")
        )

    fake.run(write)
    outputs = [
        fake.invoke("runs", WF).stdout,
        fake.invoke("runs", WF, columns=40).stdout,
        fake.invoke("history", WF, evil).stdout,
        fake.invoke("show", WF, evil).stdout,
        fake.invoke("show", WF, evil, "--json").stdout,
        fake.invoke("workflows").stdout,
        fake.invoke("show", WF, evil, "7").stderr,
    ]
    for out in outputs:
        for raw in ("\u202e", "\u2066", "\x1b", "\u200b"):
            assert raw not in out, (raw, out)
    assert "run-\\u202eevil\\x1b[2J" in outputs[0]
    assert "x\\u200by" in outputs[2]
    assert json.loads(outputs[4])["run_id"] == evil  # the JSON is the same value


def test_fork_refuses_a_channel_the_checkpoint_does_not_have(
    fake: FakeStores, seeded: Seeded
) -> None:
    done = fake.invoke("fork", WF, seeded.done, "1", "--set", 'plna="short"')
    assert done.exit_code == 1
    assert "unknown channel 'plna' (the checkpoint to fork has: " in done.stderr
    assert "'approval', 'messages', 'plan'" in done.stderr
    assert fake.run(lambda store: store.list_runs(WF)) == sorted(
        [seeded.done, seeded.paused, seeded.failed, seeded.fork]
    )


def test_fork_adds_a_channel_with_new_channel(fake: FakeStores, seeded: Seeded) -> None:
    done = fake.invoke("fork", WF, seeded.done, "1", "--set", "extra=1", "--new-channel", "--json")
    assert done.exit_code == 0, done.output
    new_run = json.loads(done.stdout)["run_id"]
    snapshot = fake.run(lambda store: store.latest(WF, new_run))
    assert snapshot is not None
    assert snapshot.values["extra"] == 1
