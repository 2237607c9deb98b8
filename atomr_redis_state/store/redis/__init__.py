"""The Redis store: snapshots as hashes, a sorted set of steps per run, one Lua script per call.

:mod:`.keys` builds every key, :mod:`.scripts` loads the ``lua/`` scripts, and
:mod:`.checkpointer` is :class:`RedisCheckpointer` itself.
"""

from __future__ import annotations

from .checkpointer import RedisCheckpointer

__all__ = ["RedisCheckpointer"]
