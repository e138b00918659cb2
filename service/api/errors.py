"""One error envelope for every error: domain errors, validation errors, HTTP errors, bugs."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from service.api import openapi
from service.api.field_hints import hint_unknown_field
from service.api.responses import error_response
from service.errors import (
    ERROR_TABLE,
    ErrorKind,
    InferenceFailed,
    InvalidInput,
    MethodNotAllowed,
    Overloaded,
    ServiceError,
    kind_of,
    kind_of_status,
)

logger = logging.getLogger("lstm_serve.errors")
MAX_DETAILS = 20  # validation errors listed in `details`; the message says how many there were
MAX_SHOWN = 40  # characters of a value or a key shown in a message; longer ones are cut

# the field a domain error without one of its own is about, by status
_FIELD_OF = {401: "Authorization", 404: "model", 413: "body"}


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def _field(loc: tuple[Any, ...], error_type: str = "") -> str:
    if error_type == "json_invalid":
        return "body"  # the location pydantic gives is a character position in the JSON
    parts = [_shown_key(str(p)) for p in loc if p != "body"]
    path = ""
    for part in parts:
        path += f"[{part}]" if part.isdigit() else (f".{part}" if path else part)
    return path or "body"


def _shown_key(key: str) -> str:
    """A key as a field name: one sent at any length (an unknown key is echoed) is cut."""
    if len(key) <= MAX_SHOWN:
        return key
    return f"{key[:MAX_SHOWN]}... ({len(key):,} characters)"


def _describe(error: dict[str, Any]) -> str:
    """One readable line: the field, pydantic's message (which names the limit), and the value."""
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    value = error.get("input")
    shown = ""
    if isinstance(value, bool) or value is None:
        shown = f" (got {json.dumps(value)})"  # as JSON writes it: true, false, null
    elif isinstance(value, str):
        shown = (
            f" (got {len(value):,} characters)" if len(value) > MAX_SHOWN else f" (got {value!r})"
        )
    elif isinstance(value, list):
        shown = f" (got {len(value)} items)"
    elif isinstance(value, int | float):
        shown = f" (got {value!r})"
    field = _field(tuple(error.get("loc", ())), str(error.get("type", "")))
    return f"`{field}`: {message}{shown}"


def _http_error(
    request: Request, status: int, detail: str, headers: dict[str, str]
) -> tuple[ErrorKind, str, list[dict[str, str]]]:
    """The router's terse 404 and 405 details, said in full (without echoing the path), with the
    field at fault."""
    if status == 404 and detail == "Not Found":
        message = "no route matches this path; the API is listed at /docs"
        return kind_of_status(404), message, [{"field": "path", "message": message}]
    if status == 405 and detail == "Method Not Allowed":
        allowed = headers.get("Allow") or headers.get("allow") or "another method"
        message = f"{request.method} is not allowed on this route; use {allowed}"
        return ERROR_TABLE[MethodNotAllowed], message, [{"field": "method", "message": message}]
    return kind_of_status(status), detail, []


def service_error_response(error: ServiceError, request_id: str) -> JSONResponse:
    """The answer to a domain error: its status and type from the table, the field at fault,
    Retry-After when overloaded, the Bearer challenge with a 401."""
    kind = kind_of(error)
    headers = {"Retry-After": str(error.retry_after)} if isinstance(error, Overloaded) else None
    if kind.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    field = error.field if isinstance(error, InvalidInput) else _FIELD_OF.get(kind.status)
    details = [{"field": field, "message": error.message}] if field else []
    return error_response(kind, error.message, request_id, details, headers)


def unexpected_response(request_id: str) -> JSONResponse:
    """The answer to a bug, logged with its traceback (call it inside the `except`)."""
    logger.exception("unhandled error (request %s)", request_id)
    # Starlette answers unhandled errors from its outermost layer, outside RequestMiddleware;
    # the writer sets the x-request-id header that every other answer gets from there.
    message = "internal error; quote the request id when reporting it"
    return error_response(ERROR_TABLE[InferenceFailed], message, request_id)


def install(app: FastAPI) -> None:
    """The error handlers, and the OpenAPI document that describes the answers (its security
    and limits as configured: service.api.openapi)."""
    openapi.install(app)

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, error: ServiceError) -> JSONResponse:
        return service_error_response(error, request_id(request))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        errors = [hint_unknown_field(e, request) for e in error.errors()]  # did you mean ...?
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
        kind = ERROR_TABLE[InvalidInput]
        return error_response(kind, message, request_id(request), details)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        headers = dict(error.headers or {})
        kind, message, details = _http_error(request, error.status_code, str(error.detail), headers)
        return error_response(kind, message, request_id(request), details, headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        return unexpected_response(request_id(request))
