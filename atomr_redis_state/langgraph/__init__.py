"""LangGraph checkpoint savers on Redis: ``AsyncRedisStateSaver`` and ``RedisStateSaver``.

An optional extra: ``pip install 'atomr-redis-state[langgraph]'``. Both savers implement every
method of LangGraph's ``BaseCheckpointSaver`` (get/list/put/put_writes, delete_thread,
delete_for_runs, copy_thread, prune) on plain Redis >= 7.0 or Redis Cluster, with no module.
"""

from __future__ import annotations

try:
    import langgraph.checkpoint.base  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "atomr_redis_state.langgraph needs LangGraph: pip install 'atomr-redis-state[langgraph]'"
    ) from exc

from .aio import AsyncRedisStateSaver
from .sync import RedisStateSaver

AsyncRedisSaver = AsyncRedisStateSaver
"""langgraph-checkpoint-redis's name for the async saver: migrating code changes only its import."""
RedisSaver = RedisStateSaver
"""langgraph-checkpoint-redis's name for the sync saver: migrating code changes only its import."""

__all__ = ["AsyncRedisSaver", "AsyncRedisStateSaver", "RedisSaver", "RedisStateSaver"]
