"""The inspector's web server: JSON over HTTP, server-sent events, and the static page.

Reads are open to whoever reaches the server (it listens on 127.0.0.1 by default). Writes
(answering a pause, forking, deleting) exist only when the app is made with
``allow_writes=True``, and each one must carry the token in the ``X-Atomr-Token`` header,
compared in constant time. No cookie is ever set, so another site cannot borrow a session
(cross-site requests cannot set that header without a CORS pre-flight this server never
grants), and the ``Host`` header must name the server, which stops DNS rebinding.
"""

from __future__ import annotations

import hmac
import importlib.metadata
import importlib.resources
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import views
from ..errors import (
    AtomrStateError,
    CheckpointConflictError,
    LeaseHeldError,
    RunNotFoundError,
    RunNotPausedError,
    StoreUnavailableError,
    UnknownChannelError,
)
from ..fleet import Fleet
from ..store.checkpointer import Checkpointer
from ..store.types import JSON
from . import data
from .data import Resume
from .live import event_stream

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Atomr-Token"


@dataclass(frozen=True, slots=True)
class Settings:
    """What the app may do, and what it tells the page about where it looks."""

    allow_writes: bool = False
    token: str | None = None
    resume: Resume | None = None
    store_label: str = ""
    """Where the store is (URL without password, prefix), shown in the page header."""


async def fleet_answer(store: Checkpointer, workflow_id: str, run_id: str, value: JSON) -> None:
    """How the inspector answers a pause by default, as :meth:`Fleet.resume` does: the answer
    is stored with the run (it survives a failed attempt) and the run queued; the next fleet
    worker (``atomr-redis-state worker``) that claims it resumes it with that answer."""
    await Fleet(store).resume(workflow_id, run_id, value)


def new_token() -> str:
    """A fresh write token: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


def create_app(
    store: Checkpointer,
    *,
    allow_writes: bool = False,
    token: str | None = None,
    resume: Resume | None = fleet_answer,
    store_label: str = "",
    hosts: Sequence[str] = ("127.0.0.1", "localhost", "[::1]"),
) -> Starlette:
    """The inspector app on ``store`` (opened by the caller, and closed after).

    With ``allow_writes`` a ``token`` is required (see :func:`new_token`). ``resume`` answers
    pauses (by default through the fleet's queue, :func:`fleet_answer`; a function that runs
    the workflow inline works too); with None the page says that it cannot answer them.
    ``hosts`` are the names the ``Host`` header may carry (``"*"`` for any).
    """
    if allow_writes and not token:
        raise ValueError("allow_writes needs a token (see new_token())")
    settings = Settings(bool(allow_writes), token, resume, store_label)
    api = _Api(settings, store)
    page = _static_file("index.html")
    routes = [
        Route("/", page),
        Route("/workflow", page),
        Route("/run", page),
        Route("/api/info", api.info),
        Route("/api/workflows", api.workflows),
        Route("/api/runs", api.runs),
        Route("/api/counts", api.counts),
        Route("/api/run", api.run),
        Route("/api/history", api.history),
        Route("/api/state", api.state),
        Route("/api/diff", api.diff),
        Route("/api/lineage", api.lineage),
        Route("/api/events", api.events),
        Route("/api/export", api.export, methods=["POST"]),
        Route("/api/answer", api.answer, methods=["POST"]),
        Route("/api/fork", api.fork, methods=["POST"]),
        Route("/api/delete", api.delete, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("atomr_redis_state.ui", "static")])),
    ]
    allowed = list(hosts)
    return Starlette(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=allowed)],
        exception_handlers={
            HTTPException: _http_error,
            **{kind: _store_error for kind, _status in _STATUS_OF},
        },
    )


def _static_file(name: str) -> Callable[[Request], Awaitable[Response]]:
    path = importlib.resources.files("atomr_redis_state.ui") / "static" / name

    async def serve(request: Request) -> Response:
        return FileResponse(str(path), headers=_PAGE_HEADERS)

    return serve


_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    # Only the page's own files run, and no other site may frame it (clickjacking).
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class JSONResponse(Response):
    media_type = "application/json"

    def __init__(self, content: Any, status_code: int = 200) -> None:
        super().__init__(content, status_code, headers=_SECURITY)

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, exc.status_code)


_STATUS_OF: tuple[tuple[type[BaseException], int], ...] = (
    (UnknownChannelError, 400),
    (RunNotFoundError, 404),
    (LookupError, 404),
    (RunNotPausedError, 409),
    (LeaseHeldError, 409),
    (CheckpointConflictError, 409),
    (StoreUnavailableError, 503),
    (RedisConnectionError, 503),
    (RedisTimeoutError, 503),
    (AtomrStateError, 400),
    (ValueError, 400),
    (TypeError, 400),
    (RedisError, 502),
)


async def _store_error(request: Request, exc: Exception) -> Response:
    """A store failure as ``{"error": "..."}``, with a status that says whose fault it was."""
    for kind, status in _STATUS_OF:
        if isinstance(exc, kind):
            log.debug("inspector: %s %s: %s", request.method, request.url.path, exc)
            message = " ".join(str(exc).split()) or type(exc).__name__
            return JSONResponse({"error": message}, status)
    raise exc


def _text(request: Request, name: str, *, required: bool = True) -> str:
    value = request.query_params.get(name)
    if value is None or value == "":
        if required:
            raise HTTPException(400, f"missing query parameter {name!r}")
        return ""
    return value


def _int(request: Request, name: str, default: int | None = None, *, low: int = 0) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HTTPException(400, f"{name} must be an integer, got {raw!r}") from None
    if value < low:
        raise HTTPException(400, f"{name} must be >= {low}, got {value}")
    return value


def _path(request: Request) -> list[str | int]:
    raw = request.query_params.get("path")
    if not raw:
        return []
    try:
        path = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise HTTPException(400, "path must be a JSON list of keys and indexes") from None
    if not isinstance(path, list) or not all(
        isinstance(p, str) or (isinstance(p, int) and not isinstance(p, bool)) for p in path
    ):
        raise HTTPException(400, "path must be a JSON list of keys and indexes")
    return path


class _Api:
    """The request handlers, over one store."""

    def __init__(self, settings: Settings, store: Checkpointer) -> None:
        self.settings = settings
        self.store = store

    async def info(self, request: Request) -> Response:
        s = self.settings
        return JSONResponse(
            {
                "version": importlib.metadata.version("atomr-redis-state"),
                "store": s.store_label,
                "writes": s.allow_writes,
                "can_answer": s.allow_writes and s.resume is not None,
                "format_version": views.FORMAT_VERSION,
                "tones": views.BADGE_TONES,
            }
        )

    async def workflows(self, request: Request) -> Response:
        found = await views.workflows_view(
            self.store,
            after=_text(request, "after", required=False) or None,
            limit=_int(request, "limit", 100, low=1) or 100,
        )
        return JSONResponse(found)

    async def runs(self, request: Request) -> Response:
        states = [s for s in _text(request, "state", required=False).split(",") if s]
        found = await data.runs_page(
            self.store,
            _text(request, "workflow"),
            states=states,
            query=_text(request, "q", required=False),
            after=_text(request, "after", required=False) or None,
            limit=_int(request, "limit", 50, low=1) or 50,
        )
        return JSONResponse(found)

    async def counts(self, request: Request) -> Response:
        return JSONResponse(await data.counts(self.store, _text(request, "workflow")))

    async def run(self, request: Request) -> Response:
        workflow, run = _text(request, "workflow"), _text(request, "run")
        document = await views.run_view(self.store, workflow, run)
        if document["state"] == "not_found":
            raise RunNotFoundError(workflow, run)
        return JSONResponse(document)

    async def history(self, request: Request) -> Response:
        return JSONResponse(
            await data.history(
                self.store,
                _text(request, "workflow"),
                _text(request, "run"),
                before=_int(request, "before"),
                limit=_int(request, "limit", 200, low=1),
                steps=request.query_params.get("steps") != "0",
            )
        )

    async def state(self, request: Request) -> Response:
        return JSONResponse(
            await data.state(
                self.store,
                _text(request, "workflow"),
                _text(request, "run"),
                _int(request, "step"),
                part=_text(request, "part", required=False) or "values",
                path=_path(request),
                offset=_int(request, "offset", 0) or 0,
                full=request.query_params.get("full") == "1",
            )
        )

    async def diff(self, request: Request) -> Response:
        return JSONResponse(
            await views.diff_view(
                self.store,
                _text(request, "workflow"),
                _text(request, "a_run"),
                _int(request, "a_step"),
                _text(request, "b_run"),
                _int(request, "b_step"),
            )
        )

    async def lineage(self, request: Request) -> Response:
        return JSONResponse(
            await data.lineage(self.store, _text(request, "workflow"), _text(request, "run"))
        )

    async def events(self, request: Request) -> Response:
        workflow = _text(request, "workflow")
        run = _text(request, "run", required=False) or None
        stream = event_stream(self.store, workflow, run, views.event_json)
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={**_SECURITY, "X-Accel-Buffering": "no"},
        )

    async def export(self, request: Request) -> Response:
        """An action like the writes (they all need --allow-writes and the token): the whole
        run, its notes included, leaves the inspector as a file."""
        body = await self._write_body(request)
        workflow, run = _body_text(body, "workflow"), _body_text(body, "run")
        forks = body.get("forks") is True
        lines = await data.export_lines(self.store, workflow, run, forks=forks)
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in run)[:80]
        return Response(
            b"".join(lines),
            media_type="application/x-ndjson",
            headers={**_SECURITY, "Content-Disposition": f'attachment; filename="{name}.jsonl"'},
        )

    async def _write_body(self, request: Request) -> dict[str, Any]:
        """The JSON body of a write, once writes are on and the token matches."""
        s = self.settings
        if not s.allow_writes or s.token is None:
            raise HTTPException(403, "writes are off: start the inspector with --allow-writes")
        given = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(given.encode(), s.token.encode()):
            raise HTTPException(401, f"wrong or missing write token ({TOKEN_HEADER} header)")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise HTTPException(415, "a write takes a JSON body (Content-Type: application/json)")
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            raise HTTPException(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "the body must be a JSON object")
        return body

    async def answer(self, request: Request) -> Response:
        body = await self._write_body(request)
        if self.settings.resume is None:
            raise HTTPException(
                501,
                "this inspector was started without a way to answer pauses "
                "(see the README, 'Answering a pause')",
            )
        workflow, run = _body_text(body, "workflow"), _body_text(body, "run")
        status = await data.answer(
            self.store, self.settings.resume, workflow, run, body.get("value")
        )
        log.info("inspector: answered the pause of run %s of workflow %s", run, workflow)
        return JSONResponse(status)

    async def fork(self, request: Request) -> Response:
        body = await self._write_body(request)
        workflow, run = _body_text(body, "workflow"), _body_text(body, "run")
        step = body.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise HTTPException(400, "step must be an integer")
        edits = body.get("edits") or {}
        if not isinstance(edits, dict):
            raise HTTPException(400, "edits must be an object of channel -> JSON value")
        made = await data.fork(self.store, workflow, run, step, edits)
        log.info("inspector: forked %s@%d of workflow %s", run, step, workflow)
        return JSONResponse(made)

    async def delete(self, request: Request) -> Response:
        body = await self._write_body(request)
        workflow, run = _body_text(body, "workflow"), _body_text(body, "run")
        deleted = await self.store.delete_run(workflow, run)
        log.info("inspector: deleted run %s of workflow %s: %s", run, workflow, deleted)
        return JSONResponse({"workflow_id": workflow, "run_id": run, "deleted": deleted})


def _body_text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise HTTPException(400, f"{name} must be a non-empty string")
    return value
