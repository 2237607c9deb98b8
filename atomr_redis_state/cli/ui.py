"""``ui``: the inspector in the browser (the ``ui`` extra: Starlette and uvicorn)."""

from __future__ import annotations

import socket

import click

from ..store.checkpointer import Checkpointer
from .connection import options_of, run_with_store, safe_url, store_options

UI_HOST = "127.0.0.1"
UI_PORT = 8765
"""Where the inspector listens by default."""


def announce(started: object, path: str = "") -> None:
    """Print where the inspector listens (``path``: the page to open), and the write token."""
    from ..ui.serve import Started

    assert isinstance(started, Started)
    click.echo(f"inspector: {started.url} (Ctrl-C to stop)", err=True)
    if path:
        click.echo(f"open {started.url.rstrip('/')}{path}", err=True)
    if started.token is not None:
        click.echo(f"writes are on; the token is {started.token}", err=True)
        click.echo(f"open {started.url_with_token} to act without typing it", err=True)


def bind(host: str, port: int) -> socket.socket:
    """The inspector's listening socket, or a one-line error (a port in use, say)."""
    from ..ui.serve import listen

    try:
        return listen(host, port)
    except OSError as exc:
        raise click.ClickException(
            f"the inspector cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None


def require_ui() -> None:
    """A one-line error when the ``ui`` extra is not installed."""
    from ..ui import missing_dependencies

    missing = missing_dependencies()
    if missing:
        raise click.ClickException(
            f"the inspector needs {', '.join(missing)}: pip install 'atomr-redis-state[ui]'"
        )


@click.command()
@click.option("--host", default=UI_HOST, show_default=True, help="The address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65_535),
    default=UI_PORT,
    show_default=True,
    help="The port to listen on (0: any free port).",
)
@click.option(
    "--allow-writes",
    is_flag=True,
    help="Allow answering pauses, forking and deleting runs, with the token printed at start.",
)
@click.option(
    "--token",
    envvar="ATOMR_UI_TOKEN",
    metavar="TOKEN",
    help="The write token (default: a random one, printed at start).",
)
@store_options
def ui(
    host: str,
    port: int,
    allow_writes: bool,
    token: str | None,
    url: str,
    prefix: str,
    cluster: bool,
) -> None:
    """Serve the inspector: workflows, runs, timelines, state, diffs, forks, live.

    Read-only by default. With --allow-writes, the page can answer pauses (the answer is
    stored with the run and the run queued for a fleet worker, as Fleet.resume does), fork
    with edits and delete runs; each write needs the token printed at start. It listens on
    127.0.0.1 unless --host says otherwise.
    """
    require_ui()
    if token is not None and len(token) < 16:
        raise click.BadParameter("a token has at least 16 characters", param_hint="--token")
    options = options_of(url, prefix, cluster)
    label = f"{safe_url(url)} prefix {prefix!r}" + (" (cluster)" if cluster else "")
    listener = bind(host, port)

    async def work(store: Checkpointer) -> None:
        from ..ui.serve import serve

        await serve(
            store,
            listener,
            allow_writes=allow_writes,
            token=token,
            store_label=label,
            on_started=announce,
        )

    try:
        run_with_store(options, work)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)


async def serve_demo(store: Checkpointer, prefix: str, listener: socket.socket) -> None:
    """``demo --ui``: the inspector (read-only) on the demo's store, at its workflow's runs."""
    from urllib.parse import urlencode

    from ..ui.serve import Started, serve
    from .demo import WORKFLOW_ID

    def started(where: Started) -> None:
        announce(where, "/workflow?" + urlencode({"workflow": WORKFLOW_ID}))

    label = f"the demo's store, prefix {prefix!r}"
    await serve(store, listener, store_label=label, on_started=started)
