"""The one-line messages of the operator commands: what went wrong, and what to do."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError, ResponseError

from atomr_redis_state.cli.connection import StoreOptions, failure_message
from atomr_redis_state.errors import StoreUnavailableError

OPTIONS = StoreOptions(url="redis://127.0.0.1:6390/0")


def unavailable(cause: Exception) -> StoreUnavailableError:
    try:
        raise StoreUnavailableError("the outcome is unknown: call again") from cause
    except StoreUnavailableError as exc:
        return exc


def test_a_read_that_loses_redis_gives_no_write_advice() -> None:
    message = failure_message(unavailable(RedisConnectionError("Connection reset")), OPTIONS)
    assert message == "cannot reach Redis at redis://127.0.0.1:6390/0: Connection reset"


def test_a_write_that_loses_redis_says_the_change_may_have_been_made() -> None:
    lost = unavailable(RedisConnectionError("Connection closed by server."))
    message = failure_message(lost, OPTIONS, writes=True)
    assert message.endswith(
        "the change may or may not have been made: look before running it again"
    )


def test_a_write_that_never_connected_says_nothing_was_sent() -> None:
    refused = unavailable(RedisConnectionError("Error 111 connecting to 127.0.0.1:6390."))
    assert "may or may not" not in failure_message(refused, OPTIONS, writes=True)


@pytest.mark.parametrize(
    "reply", [MovedError("7186 127.0.0.1:45161"), ResponseError("MOVED 7186 127.0.0.1:45161")]
)
def test_a_moved_reply_says_the_server_is_a_cluster_node(reply: Exception) -> None:
    assert failure_message(reply, OPTIONS) == (
        "the server at redis://127.0.0.1:6390/0 is a Redis Cluster node: pass --cluster "
        "(or set ATOMR_CLUSTER=1)"
    )
