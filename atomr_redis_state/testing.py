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

More setups, for operations testing:

- TLS: :func:`start_tls_server` / :func:`running_tls_server` (or the ``redis_tls_server``
  fixture) make a CA and a server certificate with ``openssl`` and start a TLS-only server
  (``.url`` is ``rediss://``, ``.ca_certs`` goes to ``ssl_ca_certs=``).
- Least privilege: :func:`store_acl` (and :func:`store_acl_line`) is the ``ACL SETUSER`` for a
  user that can run the store on one prefix and nothing else; :func:`run_as_admin` runs it.
- Sentinel: :func:`start_sentinels` / :func:`running_sentinels` start a primary, its replicas
  and three Sentinels (``.sentinel_addresses`` and ``.service_name`` for ``from_sentinel``).
- Resharding: :func:`reshard` moves slots between live cluster nodes with
  ``redis-cli --cluster reshard`` (node ids from :func:`cluster_node_ids`).
- Postgres, for the SQL store: :func:`start_postgres` / :func:`running_postgres` (or the
  ``postgres_server`` fixture) start a throwaway Postgres with Debian's ``initdb`` and
  ``postgres`` (``/usr/lib/postgresql/<major>/bin``), as the ``postgres`` user when run as root,
  on a free loopback port, ``fsync=off``; :func:`postgres_pool` opens a pool on it. Without the
  binaries the fixture skips, or fails under ``ATOMR_REQUIRE_POSTGRES=1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

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
        log_path = self.directory / f"redis-{self.port}.log"
        log = open(log_path, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [*self._command(), *extra], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + 10
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log_text = log_path.read_text(errors="replace")
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{log_text}")
            time.sleep(0.02)
        return self

    def _command(self) -> list[str]:
        """The command line (without ``extra``) that starts this server."""
        return [
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
        ]

    def _ready(self) -> bool:
        return _ping(self.port)

    def kill(self) -> None:
        """SIGKILL the server (a crash: no shutdown, no last words) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

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


# TLS: a throwaway certificate authority and a redis-server that speaks only TLS.


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed CA and a server certificate for 127.0.0.1 / localhost, signed by it."""

    ca_cert: Path
    cert: Path
    key: Path


def make_certificates(directory: Path, *, days: int = 2) -> TlsFiles:
    """Make a CA and a server certificate (SAN ``IP:127.0.0.1``, ``DNS:localhost``) with
    ``openssl`` in ``directory``; raise ``NotImplementedError`` without ``openssl``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise NotImplementedError("openssl not on PATH: cannot make test certificates")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    extensions = directory / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        [openssl, "req", "-x509", *ec, "-keyout", ca_key, "-out", ca_cert, "-days", str(days),
         "-subj", "/CN=atomr-redis-state test CA"],
        [openssl, "req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        [openssl, "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
         "-CAcreateserial", "-out", cert, "-days", str(days), "-extfile", extensions],
    ]  # fmt: skip
    for step in steps:
        subprocess.run([str(arg) for arg in step], check=True, capture_output=True, timeout=30)
    return TlsFiles(ca_cert, cert, key)


@dataclass
class RedisTlsServer(RedisServer):
    """A redis-server that listens only for TLS, on 127.0.0.1:port (``--port 0``)."""

    tls: TlsFiles | None = None

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    @property
    def ca_certs(self) -> str:
        """The CA file to pass as ``ssl_ca_certs=``."""
        assert self.tls is not None
        return str(self.tls.ca_cert)

    def _command(self) -> list[str]:
        assert self.tls is not None
        command = super()._command()
        command[command.index("--port") + 1] = "0"
        return [
            *command,
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(self.tls.cert),
            "--tls-key-file",
            str(self.tls.key),
            "--tls-ca-cert-file",
            str(self.tls.ca_cert),
            "--tls-auth-clients",
            "no",
        ]

    def _ready(self) -> bool:
        assert self.tls is not None
        context = ssl.create_default_context(cafile=str(self.tls.ca_cert))
        try:
            with (
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as raw,
                context.wrap_socket(raw, server_hostname="127.0.0.1") as s,
            ):
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False


def start_tls_server(directory: Path, binary: str = "redis-server") -> RedisTlsServer:
    """Make certificates in ``directory`` and start a TLS-only redis-server on a free port.

    Raises ``NotImplementedError`` (with the reason) when ``openssl`` is missing or the server
    cannot serve TLS (a build without it)."""
    tls = make_certificates(directory / "tls")
    server = RedisTlsServer(free_port(), directory, binary, tls=tls)
    try:
        return cast(RedisTlsServer, server.start())
    except RuntimeError as exc:
        # A build without TLS does not know the tls-* options at all.
        log = str(exc).lower()
        if "bad directive" in log and "tls-" in log:
            raise NotImplementedError(f"{binary} was built without TLS support: {exc}") from exc
        raise


@contextmanager
def running_tls_server() -> Iterator[RedisTlsServer]:
    """A TLS-only redis-server for the duration of a ``with`` block (``.url``, ``.ca_certs``)."""
    with tempfile.TemporaryDirectory(prefix="atomr-redis-tls-") as directory:
        server = start_tls_server(Path(directory))
        try:
            yield server
        finally:
            server.stop()


# ACL: the least privilege the store needs.

STORE_COMMANDS: tuple[str, ...] = (
    # scripts: called by SHA, loaded again after SCRIPT FLUSH or a failover (NOSCRIPT)
    "evalsha",
    "script|load",
    # inside the scripts (lua/*.lua); TIME is in neither @read nor @write
    "time",
    "exists",
    "get",
    "set",
    "del",
    "copy",
    "pexpireat",
    "pexpiretime",
    "persist",
    "hget",
    "hmget",
    "hgetall",
    "hset",
    "hdel",
    "zadd",
    "zrem",
    "zcard",
    "zscore",
    "zrange",
    "zrevrange",
    "zrevrangebyscore",
    "zremrangebyrank",
    "spublish",
    # outside the scripts: load (HGETALL), list_runs (ZRANGEBYLEX, EXISTS), watch
    "zrangebylex",
    "ssubscribe",
)
"""Every command the store sends, or that its scripts call (see ``lua/*.lua``). Not included:
``CLIENT SETINFO``, which redis-py sends on connect and whose refusal it ignores (Redis 7.0 does
not know it, and 7.0 refuses an ACL rule naming it)."""


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def store_acl(
    user: str,
    password: str,
    prefix: str,
    *,
    replicas: bool = False,
    server_clock: bool = True,
) -> list[str]:
    """The ``ACL SETUSER`` arguments for a user that can do everything the store does with
    ``prefix``, and nothing else: its keys (``~<prefix>:*``), its shard channels for events
    (``&<prefix>:*``), and exactly the commands in :data:`STORE_COMMANDS` (plus ``WAIT`` with
    ``replicas``). ``reset`` first, so it gives the same user the same rights however often it
    runs. ``server_clock=False`` leaves out ``+time`` (to test the refusal)."""
    pattern = _glob_escape(prefix) + ":*"
    commands = [c for c in STORE_COMMANDS if server_clock or c != "time"]
    if replicas:
        commands.append("wait")
    return [
        "ACL",
        "SETUSER",
        user,
        "reset",
        "on",
        f">{password}",
        f"~{pattern}",
        f"&{pattern}",
        *(f"+{command}" for command in commands),
    ]


def store_acl_line(user: str, password: str, prefix: str, *, replicas: bool = False) -> str:
    """:func:`store_acl` as one line for ``redis-cli`` or a config file (``user`` and ``prefix``
    without spaces)."""
    return " ".join(store_acl(user, password, prefix, replicas=replicas))


def grant_prefix(user: str, prefix: str) -> list[str]:
    """The ``ACL SETUSER`` arguments that give ``user`` (made by :func:`store_acl`) the keys and
    channels of one more prefix, and nothing else."""
    pattern = _glob_escape(prefix) + ":*"
    return ["ACL", "SETUSER", user, f"~{pattern}", f"&{pattern}"]


def run_as_admin(port: int, command: Sequence[str], **connection: Any) -> Any:
    """Run ``command`` (for example :func:`store_acl`'s) as the default user of the server on
    127.0.0.1:``port``; ``connection``: more redis-py options (``ssl=...``, ``password=...``)."""
    import redis

    with redis.Redis(host="127.0.0.1", port=port, **connection) as admin:
        return admin.execute_command(*command)


# Sentinel: a primary, its replica(s) and three Sentinels.


@dataclass
class SentinelServer(RedisServer):
    """A Redis Sentinel (``redis-server CONFIG --sentinel``) on 127.0.0.1:port."""

    monitor: str = ""
    """The ``sentinel ...`` lines of its configuration file."""

    def _command(self) -> list[str]:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / f"sentinel-{self.port}.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.directory}\n{self.monitor}\n"
        )
        return [self.binary, str(config), "--sentinel"]


@dataclass
class SentinelSetup:
    """A primary with replicas, watched by Sentinels under ``service_name``."""

    master: RedisServer
    replicas: list[RedisServer]
    sentinels: list[SentinelServer]
    service_name: str = "mymaster"

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", sentinel.port) for sentinel in self.sentinels]

    @property
    def servers(self) -> list[RedisServer]:
        return [self.master, *self.replicas]

    def master_port(self) -> int | None:
        """The primary's port as a majority of live Sentinels name it now (None: no majority)."""
        votes: dict[int, int] = {}
        for sentinel in self.sentinels:
            if sentinel.process is None:
                continue
            reply = _cli(sentinel.port, "SENTINEL", "get-master-addr-by-name", self.service_name)
            lines = reply.split()
            if len(lines) == 2:
                port = int(lines[1])
                votes[port] = votes.get(port, 0) + 1
        for port, count in votes.items():
            if count * 2 > len(self.sentinels):
                return port
        return None

    def wait_for_master(self, port: int, timeout: float = 30) -> None:
        """Wait until the Sentinels name the primary on ``port`` and it reports role master."""
        deadline = time.monotonic() + timeout
        while self.master_port() != port or "role:master" not in _cli(port, "INFO", "replication"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Sentinels did not name port {port} the primary in time")
            time.sleep(0.1)

    def wait_until_watched(self, timeout: float = 30) -> None:
        """Wait until every replica is in sync and every Sentinel knows every replica and the
        other Sentinels (which a failover needs)."""
        deadline = time.monotonic() + timeout
        while not self._watched():
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinels did not discover the replicas in time")
            time.sleep(0.1)

    def _watched(self) -> bool:
        for replica in self.replicas:
            if "master_link_status:up" not in _cli(replica.port, "INFO", "replication"):
                return False
        for sentinel in self.sentinels:
            info = _cli(sentinel.port, "SENTINEL", "REPLICAS", self.service_name)
            if sum(info.count(f"\n{r.port}\n") for r in self.replicas) < len(self.replicas):
                return False
            if "s_down" in info or "disconnected" in info:
                return False
            others = _cli(sentinel.port, "SENTINEL", "SENTINELS", self.service_name)
            if others.count("\nname\n") < len(self.sentinels) - 1:
                return False
        return True

    def restart_as_replica(self, server: RedisServer, master_port: int) -> RedisServer:
        """Start a (killed) server again, empty, on its port, as a replica of ``master_port``
        (as an operator brings a failed primary back); wait until it is in sync."""
        server.start([*REPLICATION_OPTIONS, "--replicaof", "127.0.0.1", str(master_port)])
        deadline = time.monotonic() + 30
        while "master_link_status:up" not in _cli(server.port, "INFO", "replication"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"port {server.port} did not sync with port {master_port}")
            time.sleep(0.05)
        return server

    def stop(self) -> None:
        for server in [*self.sentinels, *self.replicas, self.master]:
            server.stop()


def _cli(port: int, *command: str) -> str:
    """A command's reply through ``redis-cli`` (raw output, one item per line; '' if down)."""
    try:
        result = subprocess.run(
            ["redis-cli", "--raw", "-p", str(port), *command],
            capture_output=True,
            timeout=5,
        )
    except subprocess.TimeoutExpired:
        return ""
    return "\n" + result.stdout.decode(errors="replace")


REPLICATION_OPTIONS = ("--repl-diskless-sync-delay", "0")
"""Server options for a primary or replica: a new replica gets its first sync at once."""


def start_sentinels(
    directory: Path,
    *,
    replicas: int = 1,
    sentinels: int = 3,
    quorum: int = 2,
    down_after_ms: int = 1000,
    failover_timeout_ms: int = 5000,
    service_name: str = "mymaster",
) -> SentinelSetup:
    """Start a primary, ``replicas`` replicas of it (``--replicaof``) and ``sentinels``
    Sentinels monitoring it as ``service_name``; wait until the Sentinels see the replicas."""
    master = RedisServer(free_port(), directory / "master")
    setup = SentinelSetup(master, [], [], service_name)
    try:
        master.start(REPLICATION_OPTIONS)
        for _ in range(replicas):
            replica = RedisServer(free_port(), directory / f"replica-{len(setup.replicas)}")
            setup.replicas.append(replica)
            replica.start([*REPLICATION_OPTIONS, "--replicaof", "127.0.0.1", str(master.port)])
        monitor = (
            f"sentinel monitor {service_name} 127.0.0.1 {master.port} {quorum}\n"
            f"sentinel down-after-milliseconds {service_name} {down_after_ms}\n"
            f"sentinel failover-timeout {service_name} {failover_timeout_ms}\n"
            f"sentinel parallel-syncs {service_name} 1\n"
        )
        for index in range(sentinels):
            port = free_port()
            sentinel = SentinelServer(port, directory / f"sentinel-{index}", monitor=monitor)
            setup.sentinels.append(sentinel)
            sentinel.start()
        setup.wait_until_watched()
    except BaseException:
        setup.stop()
        raise
    return setup


@contextmanager
def running_sentinels(replicas: int = 1) -> Iterator[SentinelSetup]:
    """A primary, its replicas and three Sentinels for the duration of a ``with`` block."""
    with tempfile.TemporaryDirectory(prefix="atomr-sentinel-") as directory:
        setup = start_sentinels(Path(directory), replicas=replicas)
        try:
            yield setup
        finally:
            setup.stop()


# Cluster maintenance: live resharding.


def cluster_node_ids(cluster: RedisClusterServers) -> dict[int, str]:
    """Each node's cluster id, by port."""
    return {node.port: _cli(node.port, "CLUSTER", "MYID").strip() for node in cluster.nodes}


def cluster_slot_owner(cluster: RedisClusterServers, slot: int) -> int:
    """The port of the node that owns ``slot``, as the first node sees the slot map."""
    reply = subprocess.run(
        ["redis-cli", "-p", str(cluster.nodes[0].port), "CLUSTER", "SLOTS"],
        capture_output=True,
        timeout=10,
        check=True,
    ).stdout.decode()
    lines = reply.split()
    # Raw layout per range: start, end, then host, port, id for each node of the range.
    i = 0
    while i + 4 < len(lines):
        start, end, port = int(lines[i]), int(lines[i + 1]), int(lines[i + 3])
        if start <= slot <= end:
            return port
        i += 5
    raise LookupError(f"no node owns slot {slot}")


def reshard(
    cluster: RedisClusterServers,
    source: str,
    target: str,
    slots: int,
    *,
    timeout: float = 120,
) -> subprocess.CompletedProcess[bytes]:
    """Move ``slots`` slots (the lowest ones ``source`` owns) from node id ``source`` to node
    id ``target`` with ``redis-cli --cluster reshard``, keys and all, while the cluster serves;
    raise on failure (with redis-cli's output)."""
    command = [
        "redis-cli",
        "--cluster",
        "reshard",
        f"127.0.0.1:{cluster.nodes[0].port}",
        "--cluster-from",
        source,
        "--cluster-to",
        target,
        "--cluster-slots",
        str(slots),
        "--cluster-yes",
    ]
    result = subprocess.run(command, capture_output=True, timeout=timeout)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace")
        raise RuntimeError(f"redis-cli --cluster reshard failed:\n{output[-4000:]}")
    return result


REQUIRE_POSTGRES_ENV = "ATOMR_REQUIRE_POSTGRES"
POSTGRES_BINARIES = ("initdb", "postgres", "pg_isready")


def postgres_required() -> bool:
    """True in CI: missing Postgres binaries must fail the tests, not skip them."""
    return os.environ.get(REQUIRE_POSTGRES_ENV, "") not in ("", "0")


def postgres_bindir() -> Path | None:
    """Where ``initdb`` and ``postgres`` are: Debian's ``/usr/lib/postgresql/<major>/bin``
    (the newest major; not on ``PATH``), else ``PATH``; None when they are missing."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("initdb")
    if on_path is not None:
        candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if all((bindir / name).is_file() for name in POSTGRES_BINARIES):
            return bindir
    return None


@dataclass
class PostgresServer:
    """A throwaway Postgres (``initdb`` + ``postgres``) on 127.0.0.1:port, in a temporary
    directory, with ``fsync=off``, trust authentication for user ``postgres`` on loopback and no
    Unix socket. Run as the ``postgres`` user when started as root (``initdb`` refuses root);
    stopped by pid."""

    port: int
    directory: Path
    bindir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_server_user(self) -> dict[str, Any]:
        """Popen options that run a command as ``postgres`` when this process is root."""
        if os.geteuid() != 0:
            return {}
        return {"user": "postgres", "group": "postgres", "extra_groups": []}

    def start(self) -> PostgresServer:
        data = self.directory / "data"
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        initdb = subprocess.run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            capture_output=True,
            timeout=120,
            **self._as_server_user(),
        )
        if initdb.returncode != 0:
            output = (initdb.stdout + initdb.stderr).decode(errors="replace")
            raise RuntimeError(f"initdb failed:\n{output[-4000:]}")
        log_path = self.directory / "postgres.log"
        log = open(log_path, "wb")  # noqa: SIM115
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        options = [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]
        self.process = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(data), *options],
            stdout=log,
            stderr=subprocess.STDOUT,
            **self._as_server_user(),
        )
        log.close()
        deadline = time.monotonic() + 60
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log_text = log_path.read_text(errors="replace")
                raise RuntimeError(f"postgres on port {self.port} did not start:\n{log_text}")
            time.sleep(0.05)
        return self

    def _ready(self) -> bool:
        check = subprocess.run(
            [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
        )
        return check.returncode == 0

    def stop(self) -> None:
        """Stop the server by its pid (a fast shutdown), and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres(bindir: Path | None = None) -> PostgresServer:
    """Start a throwaway Postgres on a free loopback port (see :class:`PostgresServer`)."""
    bindir = bindir or postgres_bindir()
    if bindir is None:
        raise RuntimeError(
            "Postgres binaries (initdb, postgres) not found: apt-get install postgresql"
        )
    directory = Path(tempfile.mkdtemp(prefix="atomr-pg-"))
    return PostgresServer(free_port(), directory, bindir).start()


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """A throwaway Postgres for the ``with`` block (``.url`` to connect)."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


async def postgres_pool(url: str, *, max_size: int = 10) -> Any:
    """An open ``psycopg_pool.AsyncConnectionPool`` on ``url``, as the Postgres store wants it
    (autocommit connections); close it with ``await pool.close()``."""
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(
        url, min_size=1, max_size=max_size, kwargs={"autocommit": True}, open=False
    )
    await pool.open(wait=True)
    return pool


# Faults: a connection that dies while calls are in flight.


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client's and the server's stream, and replies held back."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    held: bytearray = field(default_factory=bytearray)
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for pump in self.pumps:
            pump.cancel()
        self.client.transport.abort()
        self.server.transport.abort()


class CuttingProxy:
    """A loopback TCP proxy in front of a Redis server, which a test drives to make connections
    die while calls are in flight: deterministically, whatever the client library's timing.

    :meth:`hold` keeps the server's replies back (the calls have reached the server and run
    there); :meth:`cut` then forwards a part of what each connection holds (``fraction``: 0 cuts
    before any reply, 0.5 in the middle of one) and kills every connection. New connections
    (a client's retries) pass freely. ``refuse = True`` closes each new connection at once.
    ``connections`` counts the connections accepted, ``replied`` the reply bytes forwarded.
    Use it as ``async with CuttingProxy(server.port) as proxy: ... proxy.url ...``.
    """

    def __init__(self, port: int) -> None:
        self.target_port = port
        self.port = 0
        self.connections = 0
        self.replied = 0
        self.refuse = False
        self._holding = False
        self._links: list[_Link] = []
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def held(self) -> int:
        """Reply bytes held back, over every connection."""
        return sum(len(link.held) for link in self._links)

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def hold(self) -> None:
        """From now on, keep every reply back until :meth:`cut`."""
        self._holding = True

    async def wait_held(self, size: int, within: float = 30.0) -> None:
        """Wait until ``size`` reply bytes are held back (the calls ran on the server)."""
        deadline = time.monotonic() + within
        while self.held < size:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {self.held} of {size} reply bytes came back")
            await asyncio.sleep(0.005)

    async def cut(self, fraction: float = 0.0) -> None:
        """Forward ``fraction`` of each connection's held replies, then kill every connection;
        stop holding."""
        self._holding = False
        links, self._links = self._links, []
        for link in links:
            part = bytes(link.held[: int(len(link.held) * fraction)])
            if part:
                link.client.write(part)
                self.replied += len(part)
                with contextlib.suppress(ConnectionError):
                    await link.client.drain()
            link.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.refuse:
            writer.transport.abort()
            return
        upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
        link = _Link(writer, upstream)
        self._links.append(link)
        link.pumps = [
            asyncio.create_task(self._pump(reader, upstream, None)),
            asyncio.create_task(self._pump(upstream_reader, writer, link)),
        ]

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, replies: _Link | None
    ) -> None:
        """Copy ``source`` to ``sink``; ``replies``: this is the server's side of that link."""
        try:
            while data := await source.read(65536):
                if replies is not None and (self._holding or replies.held):
                    replies.held += data
                    continue
                sink.write(data)
                if replies is not None:
                    self.replied += len(data)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.close()


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
    def postgres_server() -> Iterator[PostgresServer]:
        """A throwaway Postgres of the test session's own (``.url`` to connect). Skips the test
        without Debian's postgresql binaries, or fails it under ATOMR_REQUIRE_POSTGRES=1."""
        if postgres_bindir() is None:
            reason = "Postgres binaries (initdb, postgres) missing: apt-get install postgresql"
            if postgres_required():
                pytest.fail(f"{reason} ({REQUIRE_POSTGRES_ENV} is set, so this is a failure)")
            pytest.skip(reason)
        server = start_postgres()
        yield server
        server.stop()

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

    @pytest.fixture(scope="session")
    def redis_tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisTlsServer]:
        """A TLS-only redis-server with a CA made for the session (``.url``: ``rediss://``,
        ``.ca_certs``: the CA file for ``ssl_ca_certs=``)."""
        require_binaries()
        try:
            server = start_tls_server(tmp_path_factory.mktemp("redis-tls"))
        except NotImplementedError as exc:
            if redis_required():
                pytest.fail(f"{exc} ({REQUIRE_REDIS_ENV} is set, so this is a failure)")
            pytest.skip(str(exc))
        yield server
        server.stop()
