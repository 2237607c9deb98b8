"""The ``atomr-redis-state`` command line, installed with ``pip install 'atomr-redis-state[cli]'``.

This module imports only the standard library, so a missing dependency becomes a one-line hint
rather than an ImportError; the commands themselves live in :mod:`.app`.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

CLI_DEPENDENCIES = ("click", "rich", "fakeredis", "lupa")
"""What the ``cli`` extra installs (lupa runs fakeredis's Lua scripts)."""


def missing_dependencies() -> list[str]:
    """The CLI dependencies that are not installed."""
    return [name for name in CLI_DEPENDENCIES if importlib.util.find_spec(name) is None]


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line; exits with the command's status."""
    missing = missing_dependencies()
    if missing:
        print(
            f"atomr-redis-state: the command line needs {', '.join(missing)}: "
            "pip install 'atomr-redis-state[cli]'",
            file=sys.stderr,
        )
        raise SystemExit(1)
    from .app import cli

    cli.main(args=None if argv is None else list(argv), prog_name="atomr-redis-state")
