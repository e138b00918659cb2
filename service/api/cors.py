"""Starlette's CORS middleware with its one plain-text answer, a refused preflight ("Disallowed
CORS origin"), given as the one error envelope instead: 400 `bad_request` with the request id,
naming the request header that was refused."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from service.api.errors import request_id
from service.api.responses import error_response
from service.errors import ERROR_TABLE, BadRequest


def _shown(value: str) -> str:
    return repr(value[:100])  # a header value, bounded as the 415 bounds a Content-Type


class RefusedPreflight(Response):
    """A 400 envelope whose body is written when it is sent: the request id is only known from the
    scope (RequestMiddleware puts it in scope["state"]), which preflight_response does not get."""

    def __init__(self, problems: list[tuple[str, str]], headers: dict[str, str]) -> None:
        super().__init__(status_code=400, headers=headers)
        self.problems = problems
        self.cors_headers = headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = "CORS preflight refused: " + "; ".join(text for _, text in self.problems)
        details = [{"field": field, "message": text} for field, text in self.problems]
        kind = ERROR_TABLE[BadRequest]
        response = error_response(
            kind, message, request_id(Request(scope)), details, self.cors_headers
        )
        await response(scope, receive, send)


class EnvelopeCORSMiddleware(CORSMiddleware):
    """CORSMiddleware whose refused preflights use the error envelope. What is allowed, and the
    CORS headers of every answer, are Starlette's own."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        headers = {
            name: value
            for name, value in response.headers.items()
            if name not in ("content-type", "content-length")
        }
        return RefusedPreflight(self._problems(request_headers, response), headers)

    def _problems(self, request_headers: Headers, refused: Response) -> list[tuple[str, str]]:
        """What was refused, by request header: the same checks as Starlette's."""
        problems: list[tuple[str, str]] = []
        origin = request_headers["origin"]
        if not self.is_allowed_origin(origin=origin):
            problems.append(("Origin", f"origin {_shown(origin)} is not allowed"))
        method = request_headers["access-control-request-method"]
        if method not in self.allow_methods:
            allowed = ", ".join(self.allow_methods)
            problems.append(
                (
                    "Access-Control-Request-Method",
                    f"method {_shown(method)} is not allowed (allowed: {allowed})",
                )
            )
        requested = request_headers.get("access-control-request-headers")
        if requested is not None and not self.allow_all_headers:
            names = [name.strip().lower() for name in requested.split(",")]
            refused_names = [name for name in names if name not in self.allow_headers]
            if refused_names:
                problems.append(
                    (
                        "Access-Control-Request-Headers",
                        f"headers {_shown(', '.join(refused_names))} are not allowed",
                    )
                )
        private = request_headers.get("access-control-request-private-network")
        if private is not None and not self.allow_private_network:
            problems.append(
                (
                    "Access-Control-Request-Private-Network",
                    "private network access is not allowed",
                )
            )
        if not problems:  # a check Starlette added since: its own words
            problems.append(("Origin", bytes(refused.body).decode("utf-8", "replace")))
        return problems
