"""Run the inspector with uvicorn on an open store, until Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn

from ..store.checkpointer import Checkpointer
from .data import Resume
from .server import create_app, fleet_answer, new_token

log = logging.getLogger(__name__)

PROBE_WORKFLOW = "atomr-inspector-probe"
"""A workflow id read once at start (one round trip) so a store that cannot be reached fails
before the address is printed."""


@dataclass(frozen=True, slots=True)
class Started:
    """Where the inspector listens, and the token writes need (None when writes are off)."""

    url: str
    token: str | None

    @property
    def url_with_token(self) -> str:
        """The address to open: the token rides in the fragment, which is never sent to the
        server or written to its logs; the page keeps it for the tab's session."""
        return self.url if self.token is None else f"{self.url}#token={self.token}"


def listen(host: str = "127.0.0.1", port: int = 8765) -> socket.socket:
    """A socket bound to ``host:port`` (0: any free port), ready for :func:`serve`; binding
    first lets a caller report a port in use before doing anything else."""
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


async def serve(
    store: Checkpointer,
    listener: socket.socket | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    allow_writes: bool = False,
    token: str | None = None,
    resume: Resume | None = fleet_answer,
    store_label: str = "",
    on_started: Callable[[Started], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the inspector on ``store`` from ``listener`` (else a socket bound to ``host:port``)
    until Ctrl-C, or until ``stop`` is set."""
    sock = listen(host, port) if listener is None else listener
    bound_host = sock.getsockname()[0]
    await store.list_runs(PROBE_WORKFLOW, limit=1)
    if allow_writes and token is None:
        token = new_token()
    hosts = ["*"] if bound_host in ("0.0.0.0", "::") else [host, "127.0.0.1", "localhost", "[::1]"]
    app = create_app(
        store,
        allow_writes=allow_writes,
        token=token,
        resume=resume,
        store_label=store_label,
        hosts=hosts,
    )
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
        lifespan="on",
        ws="none",  # live updates are server-sent events: no WebSocket library is loaded
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():  # noqa: ASYNC110 (uvicorn has no event)
        await asyncio.sleep(0.02)
    if server.started and on_started is not None:
        bound = sock.getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        on_started(Started(f"http://{shown}:{bound[1]}/", token if allow_writes else None))
    if stop is not None:
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        server.should_exit = True
    await task
