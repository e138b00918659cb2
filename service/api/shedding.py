"""Load shedding before any work: when every queue a model route feeds is full, the request is
refused with 503 and Retry-After as soon as it arrives, before validation and tokenisation.

Under sustained overload the event loop is the scarce resource; a refusal that first parsed and
tokenised the request cost as much as an accepted one, so refusals queued up behind each other and
took seconds (bench/overload.py at 4x capacity: 1.4 s p50 before, 1.1 ms after).
A refused request is not validated: it gets the 503 whatever its body says.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.middleware import Rejection, send_rejection
from service.engine import Engine
from service.errors import kind_of
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
        headers = {"Retry-After": str(error.retry_after)}
        kind = kind_of(error)
        rejection = Rejection(kind.status, kind.error_type, error.message, headers=headers)
        await send_rejection(send, rejection, scope.get("state", {}).get("request_id", "-"))
