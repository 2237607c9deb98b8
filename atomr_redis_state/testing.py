"""Throwaway Redis servers for tests: a standalone redis-server and a 3-master Redis Cluster.

The project's own test suite uses these, and so can yours. Each server gets a free loopback
port, a temporary directory and no persistence, and is stopped by pid: nothing here touches a
server it did not start, and nothing needs Docker (only ``redis-server`` and ``redis-cli`` on
``PATH``; Debian: ``apt-get install redis-server``).

As pytest fixtures (session-scoped), in your ``conftest.py``::

    pytest_plugins = ["atomr_redis_state.testing"]

    async def test_something(redis_server):  # or redis_cluster
        store = RedisCheckpointer.from_url(redis_server.url)

Without the binaries the fixtures skip the test with the reason, or fail it when the environment
variable ``ATOMR_REQUIRE_REDIS=1`` is set (as CI should). Without pytest, use the context
managers :func:`running_server` and :func:`running_cluster`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REQUIRE_REDIS_ENV = "ATOMR_REQUIRE_REDIS"


def redis_required() -> bool:
    """True in CI: a missing redis-server must fail the tests, not skip them."""
    return os.environ.get(REQUIRE_REDIS_ENV, "") not in ("", "0")


def missing_binaries() -> list[str]:
    """The Redis binaries these helpers need that are not on ``PATH``."""
    return [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]


def free_port(below: int = 55_536) -> int:
    """A free loopback TCP port (below 55,536, so that port + 10,000 is a valid cluster bus)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port < below and _port_free(port + 10_000):
            return port
    raise RuntimeError("no free loopback port found")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisServer:
    """One redis-server process on 127.0.0.1:port."""

    port: int
    directory: Path
    binary: str = "redis-server"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, extra: Sequence[str] = ()) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / f"redis-{self.port}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while not _ping(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log_text = (self.directory / f"redis-{self.port}.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log_text}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def start_server(directory: Path, binary: str = "redis-server") -> RedisServer:
    """Start a redis-server on a free loopback port, keeping its files in ``directory``."""
    return RedisServer(free_port(), directory, binary).start()


@dataclass
class RedisClusterServers:
    """A Redis Cluster of ``masters`` primaries (no replicas) on loopback."""

    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_cluster(directory: Path, masters: int = 3) -> RedisClusterServers:
    """Start the nodes, join them with ``redis-cli --cluster create``, wait for cluster_state:ok."""
    cluster = RedisClusterServers([])
    try:
        for _ in range(masters):
            port = free_port()
            node = RedisServer(port, directory / f"node-{port}")
            cluster.nodes.append(node)
            node.start(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(directory / f"nodes-{port}.conf"),
                    "--cluster-node-timeout",
                    "5000",
                ]
            )
        addresses = [f"127.0.0.1:{node.port}" for node in cluster.nodes]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while not all(_cluster_ok(node.port) for node in cluster.nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the test cluster did not reach cluster_state:ok")
            time.sleep(0.1)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _cluster_ok(port: int) -> bool:
    result = subprocess.run(
        ["redis-cli", "-p", str(port), "cluster", "info"], capture_output=True, timeout=10
    )
    return b"cluster_state:ok" in result.stdout


@contextmanager
def running_server(extra: Sequence[str] = ()) -> Iterator[RedisServer]:
    """A redis-server for the duration of a ``with`` block (``extra``: more server options)."""
    with tempfile.TemporaryDirectory(prefix="atomr-redis-") as directory:
        server = RedisServer(free_port(), Path(directory)).start(extra)
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def running_cluster(masters: int = 3) -> Iterator[RedisClusterServers]:
    """A Redis Cluster of ``masters`` primaries for the duration of a ``with`` block."""
    with tempfile.TemporaryDirectory(prefix="atomr-cluster-") as directory:
        cluster = start_cluster(Path(directory), masters)
        try:
            yield cluster
        finally:
            cluster.stop()


if importlib.util.find_spec("pytest") is not None:
    import pytest

    def require_binaries() -> None:
        """Skip the calling test when Redis is missing, or fail it under ATOMR_REQUIRE_REDIS."""
        missing = missing_binaries()
        if missing:
            reason = f"{', '.join(missing)} not on PATH: install Redis >= 7.0 to run these tests"
            if redis_required():
                pytest.fail(f"{reason} ({REQUIRE_REDIS_ENV} is set, so this is a failure)")
            pytest.skip(reason)

    @pytest.fixture(scope="session")
    def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
        """A redis-server of the test session's own (``.url`` to connect)."""
        require_binaries()
        server = start_server(tmp_path_factory.mktemp("redis"))
        yield server
        server.stop()

    @pytest.fixture(scope="session")
    def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
        """A 3-master Redis Cluster of the test session's own (``.url``: one of its nodes)."""
        require_binaries()
        cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
        yield cluster
        cluster.stop()
