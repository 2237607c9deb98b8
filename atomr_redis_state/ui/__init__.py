"""The inspector: a web page over the store, served by ``atomr-redis-state ui``.

Installed with ``pip install 'atomr-redis-state[ui]'`` (Starlette and uvicorn). The page is
plain HTML, CSS and JavaScript modules shipped in the package: nothing is built or fetched.
This module imports only the standard library, so a missing dependency becomes a hint.
"""

from __future__ import annotations

import importlib.util

UI_DEPENDENCIES = ("starlette", "uvicorn")
"""What the ``ui`` extra installs."""


def missing_dependencies() -> list[str]:
    """The inspector's dependencies that are not installed."""
    return [name for name in UI_DEPENDENCIES if importlib.util.find_spec(name) is None]


def require() -> None:
    """Raise ImportError naming the extra when the inspector cannot run."""
    missing = missing_dependencies()
    if missing:
        raise ImportError(
            f"the inspector needs {', '.join(missing)}: pip install 'atomr-redis-state[ui]'"
        )
