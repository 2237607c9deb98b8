"""The SQL checkpointers: :class:`SqliteCheckpointer` (a file, no server) and
:class:`PostgresCheckpointer`, with the semantics of every other store.

Imported lazily: ``from atomr_redis_state.store.sql import PostgresCheckpointer`` needs the
``[postgres]`` extra (psycopg 3 and psycopg-pool); the SQLite store needs only the standard
library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .postgres import PostgresCheckpointer
    from .sqlite import SqliteCheckpointer

__all__ = ["PostgresCheckpointer", "SqliteCheckpointer"]


def __getattr__(name: str) -> Any:
    if name == "SqliteCheckpointer":
        from .sqlite import SqliteCheckpointer

        return SqliteCheckpointer
    if name == "PostgresCheckpointer":
        from .postgres import PostgresCheckpointer

        return PostgresCheckpointer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
