"""Print a pip constraints file that pins every direct dependency to its declared floor.

Reads pyproject.toml: the project's dependencies and every optional extra's, each ``name>=X``
becoming ``name==X`` (extras in brackets dropped). CI installs the dev extra with these
constraints in a second virtual environment, so every lower bound declared is one the tests
pass on. A dependency without a ``>=`` floor is an error: every one must have a tested floor.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

PROJECT = "atomr-redis-state"


def floors(pyproject: Path) -> dict[str, str]:
    """Package name -> its declared lower bound, for every direct dependency and extra."""
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        lines += extra
    found: dict[str, str] = {}
    for line in lines:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        if name == PROJECT:  # the dev extra names the project's own extras
            continue
        lower = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if len(lower) != 1:
            raise SystemExit(f"{line!r} needs exactly one '>=' floor")
        if found.get(name, lower[0]) != lower[0]:
            raise SystemExit(f"{name} has two floors: {found[name]} and {lower[0]}")
        found[name] = lower[0]
    return found


def main() -> None:
    pyproject = Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")
    for name, version in sorted(floors(pyproject).items()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
