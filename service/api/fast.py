"""The fast path of `POST /sentiment`: a request the route would accept as it is (a JSON object
of known fields with valid values, the API key right when one is set) is answered here, without
FastAPI's routing, dependency and validation layers; every other request goes on to the route,
which answers it (errors included) exactly as before. The answer is the route's own: the same
function builds it (`predict.sentiment_answer`), the same writer answers a domain error.

Why: under load the HTTP process is the part of the CPU that engines do not get. Measured with
py-spy at 64 connections, FastAPI's layers above the route were about half of that process's
samples; this path skips them for the one request shape that a client under load sends."""

from __future__ import annotations

import hmac
from typing import Any

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.deps import ServiceState, key_digest
from service.api.errors import service_error_response, unexpected_response
from service.api.middleware import PARSED_BODY
from service.api.predict import sentiment_answer
from service.engine import operations
from service.errors import ServiceError
from service.registry import LoadedModel
from service.schemas import MODEL_MAX_LENGTH, visible

PATH = "/sentiment"
_FIELDS = frozenset({"text", "explain", "trajectory", "model"})


class _Route:
    """What the request middleware reads to label the request's metrics."""

    path = PATH


class FastSentiment:
    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app, self.state = app, state
        key = state.settings.api_key
        self._key = key_digest(key.get_secret_value()) if key is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        taken = self._query(scope)  # the body is not read: the route reads it if it answers
        if taken is None:
            await self.app(scope, receive, send)
            return
        name, loaded, query = taken
        scope["state"]["model"], scope["route"] = name, _Route()
        request_id = scope["state"]["request_id"]
        response: Response
        try:
            content = await sentiment_answer(self.state, name, loaded, query)
            response = Response(content, media_type="application/json")
        except ServiceError as error:
            response = service_error_response(error, request_id)
        except Exception:
            response = unexpected_response(request_id)
        await response(scope, receive, send)

    def _query(self, scope: Scope) -> tuple[str, LoadedModel, operations.SentimentQuery] | None:
        """The model and the query, when the route would accept the request as it is; None
        sends it to the route."""
        if self._key is not None and not self._authorized(scope):
            return None
        state = scope["state"]
        if PARSED_BODY not in state:  # not checked as JSON by the request middleware
            return None
        data: Any = state[PARSED_BODY]  # parsed there once, duplicate keys refused
        if type(data) is not dict or not data.keys() <= _FIELDS:
            return None
        text, model = data.get("text"), data.get("model")
        explain, trajectory = data.get("explain", False), data.get("trajectory", False)
        if type(text) is not str or type(explain) is not bool or type(trajectory) is not bool:
            return None
        if not (model is None or (type(model) is str and len(model) <= MODEL_MAX_LENGTH)):
            return None
        if len(text) > self.state.settings.max_text_chars or not visible(text):
            return None
        try:
            text.encode("utf-8")  # a lone surrogate ("\ud800" in the JSON) is the route's to judge
        except UnicodeEncodeError:
            return None
        try:
            name, loaded = self.state.registry.get(model, "sentiment")
        except ServiceError:  # not ready, unknown model: the route says so in its own words
            return None
        return name, loaded, operations.SentimentQuery(text, explain, trajectory)

    def _authorized(self, scope: Scope) -> bool:
        """`Authorization: Bearer <key>` with the configured key (compared as digests, as the
        route's dependency does); anything else is the route's to refuse."""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, given = value.decode("latin-1").partition(" ")
                assert self._key is not None
                return scheme.lower() == "bearer" and hmac.compare_digest(
                    key_digest(given), self._key
                )
        return False
