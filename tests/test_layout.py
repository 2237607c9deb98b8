"""The package's layout: three layers, every public name at the root, every exception in one
module, and the Lua scripts shipped with the package."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import atomr_redis_state
from atomr_redis_state import errors

NAMES_BEFORE_THE_SPLIT = [
    "JSON",
    "AppendList",
    "AppendMessages",
    "AtomrStateError",
    "BuiltinReducer",
    "Channel",
    "CheckpointConflictError",
    "CheckpointKey",
    "CheckpointMeta",
    "CheckpointNotFoundError",
    "Checkpointer",
    "Edits",
    "InMemoryCheckpointer",
    "Interrupt",
    "LastWriteWins",
    "MaxByTimestamp",
    "MergeMap",
    "Pause",
    "PauseKind",
    "RedisCheckpointer",
    "Reducer",
    "RunNotPausedError",
    "RunOutcome",
    "RunState",
    "Snapshot",
    "StateSchema",
    "StateSchemaBuilder",
    "StatefulRunner",
    "Step",
    "StepContext",
    "StepFn",
    "UnknownChannelError",
    "ValueEncodingError",
    "WorkflowGraphError",
    "Writes",
    "new_run_id",
    "new_workflow_id",
]


def modules() -> list[str]:
    """Every module of the package that imports without an optional extra."""
    names = []
    for info in pkgutil.walk_packages(atomr_redis_state.__path__, "atomr_redis_state."):
        if ".langgraph" in info.name or info.name.endswith((".otel", ".__main__")):
            continue  # optional extras (tested on their own) and entry points
        names.append(info.name)
    return names


@pytest.mark.parametrize("name", NAMES_BEFORE_THE_SPLIT)
def test_every_name_users_imported_from_the_root_still_imports(name: str) -> None:
    assert hasattr(atomr_redis_state, name)
    assert name in atomr_redis_state.__all__


def test_the_layers_are_subpackages() -> None:
    for layer in ("store", "store.redis", "graph", "cli"):
        module = importlib.import_module(f"atomr_redis_state.{layer}")
        assert module.__file__ is not None
        assert module.__file__.endswith("__init__.py")


def test_every_exception_is_defined_in_the_errors_module() -> None:
    for name in modules():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
            ):
                assert name == errors.__name__, f"{value.__name__} is defined in {name}"


def test_the_scripts_load_from_the_package() -> None:
    from atomr_redis_state.store.redis.scripts import script_source

    assert "redis.call" in script_source("save")


def test_the_views_import_no_click_rich_web_framework_nor_a_front_end() -> None:
    views = Path(atomr_redis_state.__file__).parent / "views"
    banned = {"click", "rich", "starlette", "fastapi", "aiohttp", "uvicorn", "jinja2"}
    for path in views.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
                names = [f"atomr_redis_state.{node.module}"]
            for name in names:
                assert name.split(".")[0] not in banned, f"{path.name} imports {name}"
                assert not name.startswith(("atomr_redis_state.cli", "atomr_redis_state.ui"))
