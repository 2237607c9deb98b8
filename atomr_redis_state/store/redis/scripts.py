"""The Lua scripts, loaded from the package (or the checkout's top-level ``lua/``).

Each ``lua/<name>.lua`` is sent with ``lua/_common.lua`` (shared helpers) in front of it and
called through redis-py ``Script`` objects: EVALSHA, reloaded automatically on NOSCRIPT.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from redis.commands.core import AsyncScript

_PACKAGE = "atomr_redis_state"
_CHECKOUT_LUA = Path(__file__).resolve().parents[3] / "lua"


@cache
def script_source(name: str) -> str:
    """The full text sent to Redis for script ``name``: the common helpers, then the script."""
    return _read("_common") + "\n" + _read(name)


def _read(name: str) -> str:
    packaged = resources.files(_PACKAGE).joinpath("lua", f"{name}.lua")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    # A source checkout or editable install: the scripts live in the top-level lua/ folder.
    return (_CHECKOUT_LUA / f"{name}.lua").read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class Scripts:
    """The scripts, registered on one client."""

    save: AsyncScript
    fork: AsyncScript
    latest: AsyncScript
    list: AsyncScript
    delete_run: AsyncScript
    prune_runs: AsyncScript
    acquire_lease: AsyncScript
    renew_lease: AsyncScript
    release_lease: AsyncScript
    run_record: AsyncScript
    record_answer: AsyncScript
    submit: AsyncScript
    claim: AsyncScript
    finish: AsyncScript
    requeue: AsyncScript
    cancel: AsyncScript
    queue_depth: AsyncScript
    queue_peek: AsyncScript
    hint_touch: AsyncScript
    hint_due: AsyncScript
    hint_settle: AsyncScript
    heartbeat: AsyncScript
    workers: AsyncScript
    permit: AsyncScript

    @classmethod
    def register(cls, client: Any) -> Scripts:
        return cls(**{f.name: client.register_script(script_source(f.name)) for f in fields(cls)})
