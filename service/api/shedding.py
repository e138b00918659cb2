"""Load shedding before any work: when every queue a model route feeds is full, the request is
refused with 503 and Retry-After as soon as it arrives, before validation and tokenisation.

Under sustained overload the event loop is the scarce resource; a refusal that first parsed and
tokenised the request cost as much as an accepted one, so refusals queued up behind each other and
took seconds (bench/overload.py at 4x capacity: 1.4 s p50 before, about 10 ms after).
A refused request is not validated: it gets the 503 whatever its body says.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Receive, Scope, Send

from service.engine import Engine
from service.metrics import Metrics

# route -> the engine operation its requests are queued for
OPERATIONS = {"/sentiment": "sentiment", "/sentiment/batch": "sentiment", "/next-word": "next-word"}


class _Route:
    """What the request middleware reads to label a refused request's metrics."""

    def __init__(self, path: str) -> None:
        self.path = path


class LoadShedding:
    def __init__(self, app: ASGIApp, engine: Engine, metrics: Metrics) -> None:
        self.app, self.engine, self.metrics = app, engine, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        operation = OPERATIONS.get(scope.get("path", "")) if scope["type"] == "http" else None
        refusal = (
            self.engine.refusal(operation) if operation and scope["method"] == "POST" else None
        )
        if refusal is None:
            await self.app(scope, receive, send)
            return
        key, error = refusal
        self.metrics.rejected.labels(key).inc()
        scope["route"] = _Route(scope["path"])
        body = json.dumps(
            {
                "error": error.message,
                "error_type": "overloaded",
                "request_id": scope.get("state", {}).get("request_id", "-"),
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(error.retry_after).encode()),
        ]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
