"""``python -m atomr_redis_state.cli``: the same as the ``atomr-redis-state`` command."""

from . import main

main()
