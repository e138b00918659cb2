"""ASGI middleware: request ids, the body-size limit, one JSON log line and metrics per request."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics

access_log = logging.getLogger("lstm_serve.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestMiddleware:
    """Outermost layer: every response, errors included, carries x-request-id."""

    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes

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
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            replay = await self._read_body(scope, receive, headers)
            if replay is None:
                message = f"request body is over the limit of {self.max_body_bytes:,} bytes"
                await _reject(send_with_id, 413, message, "payload_too_large", request_id)
            elif isinstance(replay, UnicodeDecodeError):
                message = (
                    f"the body is not valid UTF-8 (byte 0x{replay.object[replay.start]:02x} "
                    f"at position {replay.start}); JSON must be UTF-8"
                )
                await _reject(send_with_id, 422, message, "validation_error", request_id, "body")
            else:
                await self.app(scope, replay, send_with_id)
        finally:
            self._record(scope, request_id, status, time.perf_counter() - started)

    async def _read_body(
        self, scope: Scope, receive: Receive, headers: dict[str, str]
    ) -> Receive | UnicodeDecodeError | None:
        """The whole body (bounded), replayed to the app; None when it is over the limit, the
        decoding error when a JSON body is not UTF-8."""
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return receive
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, delivered = b"".join(chunks), False
        if "json" in headers.get("content-type", ""):
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as error:
                return error

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the client to disconnect

        return replay

    def _record(self, scope: Scope, request_id: str, status: int, seconds: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        self.metrics.requests.labels(path, scope["method"], str(status)).inc()
        self.metrics.latency.labels(path).observe(seconds)
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


async def _reject(
    send: Send, status: int, message: str, error_type: str, request_id: str, field: str = ""
) -> None:
    """An error envelope sent before the app sees the request."""
    envelope: dict[str, Any] = {
        "error": message,
        "error_type": error_type,
        "request_id": request_id,
    }
    if field:
        envelope["details"] = [{"field": field, "message": message}]
    body = json.dumps(envelope).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))  # the rest of the body is not read
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
