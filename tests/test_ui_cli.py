"""``atomr-redis-state ui``: its argument errors, as one line before anything is served."""

from __future__ import annotations

import socket

from click.testing import CliRunner

from atomr_redis_state.cli.app import cli


def test_a_port_in_use_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["ui", "--port", str(port)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: the inspector cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_a_short_token_is_refused() -> None:
    result = CliRunner().invoke(cli, ["ui", "--allow-writes", "--token", "short"])
    assert result.exit_code == 2
    assert "a token has at least 16 characters" in result.output


def test_the_help_names_the_store_options() -> None:
    result = CliRunner().invoke(cli, ["ui", "--help"])
    assert result.exit_code == 0
    for option in ("--redis-url", "--prefix", "--cluster", "--host", "--port", "--allow-writes"):
        assert option in result.output
