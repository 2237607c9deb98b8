"""The saver's Lua scripts: ``lua/lg_<name>.lua``, each sent with ``lua/lg_common.lua`` in front.

They are found inside the wheel (``atomr_redis_state/lua/``, force-included by pyproject) or in a
source checkout's top-level ``lua/`` folder, and called through redis-py ``Script`` objects
(EVALSHA, reloaded on NOSCRIPT).
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

NAMES = ("put", "put_writes", "get", "list", "prune", "delete_runs", "copy", "export", "import")
"""Every script, as ``lua/lg_<name>.lua``."""

_PACKAGE = "atomr_redis_state"
_CHECKOUT_LUA = Path(__file__).resolve().parents[2] / "lua"


@cache
def source(name: str) -> str:
    """The full text sent to Redis for script ``name``: the shared helpers, then the script."""
    return _read("lg_common") + "\n" + _read(f"lg_{name}")


def _read(name: str) -> str:
    packaged = resources.files(_PACKAGE).joinpath("lua", f"{name}.lua")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (_CHECKOUT_LUA / f"{name}.lua").read_text(encoding="utf-8")
