"""One error envelope for every error: domain errors, validation errors, HTTP errors, bugs."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from service.errors import Overloaded, ServiceError, kind_of

logger = logging.getLogger("lstm_serve.errors")
MAX_DETAILS = 20  # validation errors listed in `details`; the message says how many there were

STATUS_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "overloaded",
    503: "unavailable",
}


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def envelope(
    request: Request,
    status: int,
    message: str,
    error_type: str,
    details: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "error": message,
        "error_type": error_type,
        "request_id": request_id(request),
    }
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def _field(loc: tuple[Any, ...], error_type: str = "") -> str:
    if error_type == "json_invalid":
        return "body"  # the location pydantic gives is a character position in the JSON
    parts = [str(p) for p in loc if p != "body"]
    path = ""
    for part in parts:
        path += f"[{part}]" if part.isdigit() else (f".{part}" if path else part)
    return path or "body"


def _describe(error: dict[str, Any]) -> str:
    """One readable line: the field, pydantic's message (which names the limit), and the value."""
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    value = error.get("input")
    shown = ""
    if isinstance(value, bool) or value is None:
        shown = f" (got {json.dumps(value)})"  # as JSON writes it: true, false, null
    elif isinstance(value, str):
        shown = f" (got {len(value):,} characters)" if len(value) > 40 else f" (got {value!r})"
    elif isinstance(value, list):
        shown = f" (got {len(value)} items)"
    elif isinstance(value, int | float):
        shown = f" (got {value!r})"
    field = _field(tuple(error.get("loc", ())), str(error.get("type", "")))
    return f"`{field}`: {message}{shown}"


def _http_message(request: Request, status: int, detail: str, headers: dict[str, str]) -> str:
    """The router's terse 404 and 405 details, said in full (without echoing the path)."""
    if status == 404 and detail == "Not Found":
        return "no route matches this path; the API is listed at /docs"
    if status == 405 and detail == "Method Not Allowed":
        allowed = headers.get("Allow") or headers.get("allow") or "another method"
        return f"{request.method} is not allowed on this route; use {allowed}"
    return detail


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, error: ServiceError) -> JSONResponse:
        kind = kind_of(error)
        headers = {"Retry-After": str(error.retry_after)} if isinstance(error, Overloaded) else None
        if kind.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        details = None
        field = getattr(error, "field", None)
        if field:
            details = [{"field": field, "message": error.message}]
        return envelope(request, kind.status, error.message, kind.error_type, details, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = list(error.errors())
        # bounded: a 1 MB body of wrong items would otherwise answer one detail per item (13 MB)
        details = [
            {
                "field": _field(tuple(e.get("loc", ())), str(e.get("type", ""))),
                "message": str(e.get("msg", "")).removeprefix("Value error, "),
            }
            for e in errors[:MAX_DETAILS]
        ]
        message = "; ".join(_describe(e) for e in errors[:5])
        if len(errors) > 5:
            message += f"; and {len(errors) - 5:,} more"
        if len(errors) > MAX_DETAILS:
            message += f" (details lists the first {MAX_DETAILS} of {len(errors):,})"
        return envelope(request, 422, message, "validation_error", details)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        headers = dict(error.headers or {})
        return envelope(
            request,
            error.status_code,
            _http_message(request, error.status_code, str(error.detail), headers),
            STATUS_TYPES.get(error.status_code, "http_error"),
            headers=headers,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unhandled error (request %s)", request_id(request))
        # Starlette answers unhandled errors from its outermost layer, outside RequestMiddleware,
        # so the header that middleware adds to every other response is set here.
        return envelope(
            request,
            500,
            "internal error; quote the request id when reporting it",
            "internal_error",
            headers={"x-request-id": request_id(request)},
        )
