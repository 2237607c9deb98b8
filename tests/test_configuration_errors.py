"""Settings that no retry fixes fail with StoreConfigurationError, never StoreUnavailableError.

A TLS certificate that does not verify, credentials that Redis refuses, a database the server
does not have, a user without a permission the store needs: the error says what to fix, and
does not invite the caller to call again.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from atomr_redis_state import (
    CheckpointKey,
    RedisCheckpointer,
    StoreConfigurationError,
    StorePermissionError,
    StoreUnavailableError,
)
from atomr_redis_state.testing import (
    RedisServer,
    RedisTlsServer,
    require_binaries,
    run_as_admin,
    running_server,
)

WF = "wf-config"
PASSWORD = "the-right-password"
PIPELINING = [True, False]


@pytest.fixture(scope="module")
def password_server() -> Iterator[RedisServer]:
    """A redis-server that requires a password (``requirepass``)."""
    require_binaries()
    with running_server() as server:
        run_as_admin(server.port, ["CONFIG", "SET", "requirepass", PASSWORD])
        yield server


async def refusal(store: RedisCheckpointer) -> StoreConfigurationError:
    """The error of a first call on ``store``; it must not be a StoreUnavailableError."""
    async with store:
        with pytest.raises(StoreConfigurationError) as refused:
            await store.latest(WF, "r")
    assert not isinstance(refused.value, StoreUnavailableError)
    assert "call again" not in str(refused.value)
    return refused.value


@pytest.mark.parametrize("pipelining", PIPELINING)
async def test_a_certificate_that_does_not_verify_is_a_configuration_error(
    redis_tls_server: RedisTlsServer, pipelining: bool
) -> None:
    error = await refusal(
        RedisCheckpointer.from_url(redis_tls_server.url, pipelining=pipelining, socket_timeout=5)
    )
    assert "ssl_ca_certs" in str(error)


@pytest.mark.parametrize("pipelining", PIPELINING)
@pytest.mark.parametrize("password", ["a-wrong-password", None], ids=["wrong", "missing"])
async def test_refused_credentials_are_a_configuration_error(
    password_server: RedisServer, pipelining: bool, password: str | None
) -> None:
    error = await refusal(
        RedisCheckpointer.from_url(password_server.url, password=password, pipelining=pipelining)
    )
    assert isinstance(error, StorePermissionError)
    assert "credentials" in str(error)


async def test_the_right_password_works(password_server: RedisServer) -> None:
    async with RedisCheckpointer.from_url(password_server.url, password=PASSWORD) as store:
        assert await store.load(CheckpointKey(WF, "r", 0)) is None


@pytest.mark.parametrize("pipelining", PIPELINING)
async def test_a_database_the_server_does_not_have_is_a_configuration_error(
    redis_server: RedisServer, pipelining: bool
) -> None:
    error = await refusal(
        RedisCheckpointer.from_url(f"{redis_server.url}/99", pipelining=pipelining)
    )
    assert "database" in str(error)


def test_a_missing_permission_is_a_configuration_error() -> None:
    """NOPERM and a refused ACL (tests/test_acl.py) raise StorePermissionError: one of them."""
    assert issubclass(StorePermissionError, StoreConfigurationError)
    assert not issubclass(StoreConfigurationError, StoreUnavailableError)
