"""ASGI middleware: request ids, the limits checked before the app sees a request (headers, body
size, encoding, content type, JSON shape), one JSON log line and metrics per request, and the
cancellation of a request whose client went away before its answer started."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from starlette.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.json_body import checked_json
from service.api.responses import (
    BODY_TIMEOUT_S,
    MAX_HEADER_BYTES,
    MAX_HEADERS,
    error_headers,
    error_response,
)
from service.errors import ErrorKind
from service.metrics import Metrics
from service.openai_schemas import PREFIX as OPENAI_PREFIX
from service.openai_schemas import openai_error_body

access_log = logging.getLogger("lstm_serve.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# the scope's state key under which a JSON body's parsed value travels to the inner layers
PARSED_BODY = "json_body"
CLIENT_CLOSED = 499  # logged (never sent) when the client disconnected before the answer
# Bodies over this size are checked on one thread of their own, not on the event loop: a 1 MB body
# costs up to tens of ms to check, and several at once kept /health/live waiting 300 ms. One
# thread, so that the event loop has a single rival for the GIL.
OFF_LOOP_BYTES = 64 * 1024
_BODY_CHECKS = ThreadPoolExecutor(1, thread_name_prefix="lstm-serve-body-checks")


class Rejection(Exception):
    """A request refused before the app sees it: the status, type, message, field and any
    headers of its own (Retry-After)."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        field: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message, self.field = status, error_type, message, field
        self.headers = headers or {}


class ClientGone(Exception):
    """The client disconnected while its body was being read."""


class RequestMiddleware:
    """Outermost layer: every response, errors included, carries x-request-id."""

    # A body not received in full by then is refused (408): a client that sends its body a few
    # bytes at a time would otherwise hold its connection and buffer for as long as it likes.
    body_timeout_s = BODY_TIMEOUT_S

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes
        self._json_routes: set[tuple[str, str]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        request_id = given if _VALID_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = _with_id(message.get("headers", []), request_id)
            await send(message)

        try:
            _check_headers(scope)
            if scope["method"] == "HEAD" and _matches(scope, "GET"):
                # the GET answer's head, without its body
                await self.app({**scope, "method": "GET"}, receive, _without_body(send_with_id))
                return
            if scope["method"] not in ("POST", "PUT", "PATCH"):
                await self.app(scope, receive, send_with_id)
                return
            body = await self._read_body(receive, headers)
            if len(body) > OFF_LOOP_BYTES:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(_BODY_CHECKS, self._check_body, scope, body, headers)
            else:
                self._check_body(scope, body, headers)
            if not await _serve(self.app, scope, body, receive, send_with_id):
                status = CLIENT_CLOSED
        except Rejection as rejection:
            await send_rejection(send_with_id, rejection, request_id, scope["path"])
        except ClientGone:
            status = CLIENT_CLOSED
        finally:
            self._record(scope, request_id, status, time.perf_counter() - started)

    def _check_body(self, scope: Scope, body: bytes, headers: dict[str, str]) -> None:
        if self._takes_json(scope):
            # the parsed body, for a layer that reads it (service.api.fast) without parsing again
            scope["state"][PARSED_BODY] = _check_json(body, headers)
        elif "json" in headers.get("content-type", ""):
            _check_utf8(body)

    async def _read_body(self, receive: Receive, headers: dict[str, str]) -> bytes:
        """The whole body, bounded by max_body_bytes and body_timeout_s."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large()
        try:
            async with asyncio.timeout(self.body_timeout_s):
                return await self._receive_body(receive)
        except TimeoutError:
            message = f"the request body did not arrive within {self.body_timeout_s:g} s"
            raise Rejection(408, "request_timeout", message, "body") from None

    async def _receive_body(self, receive: Receive) -> bytes:
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    def _too_large(self) -> Rejection:
        message = f"request body is over the limit of {self.max_body_bytes:,} bytes"
        return Rejection(413, "payload_too_large", message, "body")

    def _takes_json(self, scope: Scope) -> bool:
        """Whether a route accepts this method and path; every such route with a body reads
        JSON. Other requests are left to the router (404 for a path, 405 for a method)."""
        key = (scope["method"], scope["path"])
        if key in self._json_routes:
            return True
        if not _matches(scope, scope["method"]):
            return False
        if len(self._json_routes) < 1000:  # routes have no path parameters; a bound all the same
            self._json_routes.add(key)
        return True

    def _record(self, scope: Scope, request_id: str, status: int, seconds: float) -> None:
        path = getattr(scope.get("route"), "path", None) or _template(scope)
        self.metrics.requests.labels(path, scope["method"], str(status)).inc()
        self.metrics.latency.labels(path).observe(seconds)
        if not access_log.isEnabledFor(logging.INFO):
            return  # the line is not built for a log level that drops it
        state: dict[str, Any] = scope.get("state", {})
        access_log.info(
            json.dumps(
                {
                    "request_id": request_id,
                    "method": scope["method"],
                    "route": path,
                    "status": status,
                    "latency_ms": round(seconds * 1000, 2),
                    "model": state.get("model"),
                }
            )
        )


def _routes(scope: Scope) -> list[Any]:
    return list(getattr(getattr(scope.get("app"), "router", None), "routes", []))


def _flat(routes: list[Any]) -> Iterator[Any]:
    """Every route, those of included routers too (FastAPI wraps them; the wrapper has no path)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None and getattr(route, "path", None) is None:
            yield from _flat(list(included.routes))
        else:
            yield route


def _matches(scope: Scope, method: str) -> bool:
    """Whether a route takes this method on this path."""
    probe = {**scope, "method": method}
    return any(route.matches(probe)[0] is Match.FULL for route in _routes(scope))


def _template(scope: Scope) -> str:
    """The path template of the route for this path, whatever the method; "unmatched" when none
    is (any path at all would be a label of its own)."""
    for route in _flat(_routes(scope)):
        if route.matches(scope)[0] is not Match.NONE:
            return str(getattr(route, "path", "unmatched"))
    return "unmatched"


def _with_id(headers: list[tuple[bytes, bytes]], request_id: str) -> list[tuple[bytes, bytes]]:
    """The answer's headers with x-request-id (once), and a redirect's Location as a path only:
    an absolute one is built from the Host header, which the client chose."""
    fixed = []
    for name, value in headers:
        if name.lower() == b"location" and b"://" in value.split(b"?")[0]:
            value = b"/" + value.split(b"://", 1)[1].partition(b"/")[2]
        if name.lower() != b"x-request-id":
            fixed.append((name, value))
    return [*fixed, (b"x-request-id", request_id.encode())]


def _without_body(send: Send) -> Send:
    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_head


def _check_headers(scope: Scope) -> None:
    headers = scope["headers"]
    size = sum(len(name) + len(value) for name, value in headers)
    if len(headers) > MAX_HEADERS or size > MAX_HEADER_BYTES:
        message = (
            f"the request has {len(headers)} headers of {size:,} bytes; the limits are "
            f"{MAX_HEADERS} headers and {MAX_HEADER_BYTES:,} bytes"
        )
        raise Rejection(431, "headers_too_large", message, "headers")


def _check_utf8(body: bytes) -> None:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as error:
        message = (
            f"the body is not valid UTF-8 (byte 0x{error.object[error.start]:02x} "
            f"at position {error.start}); JSON must be UTF-8"
        )
        raise Rejection(422, "validation_error", message, "body") from None


def _check_json(body: bytes, headers: dict[str, str]) -> Any:
    """A route that reads JSON gets UTF-8 JSON that its schema can judge, or a clear refusal;
    returns the body's value."""
    content_type = headers.get("content-type")
    media_type, _, parameters = (content_type or "").partition(";")
    media_type = media_type.strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        got = repr(content_type[:100]) if content_type is not None else "no Content-Type header"
        message = f"`Content-Type` must be application/json (got {got})"
        raise Rejection(415, "unsupported_media_type", message, "Content-Type")
    charset = _charset(parameters)
    if charset not in (None, "utf-8", "utf8"):
        message = f"`Content-Type`: JSON is read as UTF-8 only (got charset={charset[:40]!r})"
        raise Rejection(415, "unsupported_media_type", message, "Content-Type")
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        message = (
            f"`Content-Encoding`: bodies are read uncompressed only (got {encoding[:40]!r}); "
            "send the JSON as it is"
        )
        raise Rejection(415, "unsupported_media_type", message, "Content-Encoding")
    _check_utf8(body)
    problem, value = checked_json(body)
    if problem is not None:
        raise Rejection(422, "validation_error", problem.message, problem.field)
    return value


def _charset(parameters: str) -> str | None:
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return None


async def _serve(app: ASGIApp, scope: Scope, body: bytes, receive: Receive, send: Send) -> bool:
    """Run the app on the body read. A client that disconnects before its answer starts gets the
    app cancelled, so that its queued work is skipped (the engine drops cancelled requests).
    Returns False when that happened."""
    answering, gone, delivered = False, asyncio.Event(), False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()  # later calls (a streaming response listening) wait for the disconnect
        return {"type": "http.disconnect"}

    async def send_tracking(message: Message) -> None:
        nonlocal answering
        answering = answering or message["type"] == "http.response.start"
        await send(message)

    task = asyncio.ensure_future(app(scope, replay, send_tracking))

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()
        if not answering:
            task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if gone.is_set() and not answering and current is not None and not current.cancelling():
            return False
        raise
    finally:
        watcher.cancel()
    return True


async def send_rejection(send: Send, rejection: Rejection, request_id: str, path: str = "") -> None:
    """A refusal before the app sees the request, written by the one writer (in OpenAI's shape
    on the OpenAI-compatible routes, whose clients read only that one)."""
    details = [{"field": rejection.field, "message": rejection.message}] if rejection.field else []
    response = error_response(
        ErrorKind(rejection.status, rejection.error_type),
        rejection.message,
        request_id,
        details,
        rejection.headers,
    )
    if path.startswith(OPENAI_PREFIX):
        status = 400 if rejection.status == 422 else rejection.status
        body = openai_error_body(
            status, rejection.message, rejection.field or None, rejection.error_type
        )
        kind = ErrorKind(status, rejection.error_type)
        response = JSONResponse(body, status, error_headers(kind, request_id, rejection.headers))
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": bytes(response.body)})
