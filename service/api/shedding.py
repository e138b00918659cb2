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
from service.engine import EngineClient
from service.engine.operations import ROUTE_OPERATIONS
from service.errors import Overloaded, kind_of
from service.metrics import Metrics


class _Route:
    """What the request middleware reads to label a refused request's metrics."""

    def __init__(self, path: str) -> None:
        self.path = path


class LoadShedding:
    def __init__(self, app: ASGIApp, engine: EngineClient, metrics: Metrics) -> None:
        self.app, self.engine, self.metrics = app, engine, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        operation = ROUTE_OPERATIONS.get(scope.get("path", "")) if scope["type"] == "http" else None
        error = self.engine.refusal(operation) if operation and scope["method"] == "POST" else None
        if error is None:
            await self.app(scope, receive, send)
            return
        self.metrics.rejected.labels(operation).inc()
        scope["route"] = _Route(scope["path"])
        headers = {"Retry-After": str(error.retry_after)} if isinstance(error, Overloaded) else {}
        kind = kind_of(error)
        rejection = Rejection(kind.status, kind.error_type, error.message, headers=headers)
        request_id = scope.get("state", {}).get("request_id", "-")
        await send_rejection(send, rejection, request_id, scope["path"])
