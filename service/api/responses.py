"""The one writer of error answers, and what the routes share about them: the envelope built from
the status table (`service.errors.ERROR_TABLE`), the error answers OpenAPI documents for a model
route, and the length check the routes apply with the configured limits."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi.responses import JSONResponse

from service.errors import ERROR_TABLE, ErrorKind, InvalidInput
from service.schemas import ErrorResponse

MAX_HEADERS = 100
MAX_HEADER_BYTES = 32 * 1024  # names and values of all headers together
BODY_TIMEOUT_S = 30.0  # a body not received in full by then is refused (408)
LIMITS = {
    "max_headers": MAX_HEADERS,
    "max_header_bytes": f"{MAX_HEADER_BYTES:,}",
    "body_timeout_s": f"{BODY_TIMEOUT_S:g}",
}
# the connection is closed after these: the rest of the request is not read
CLOSES_CONNECTION = frozenset({400, 408, 413, 431})


def _describe_status(status: int) -> str:
    kinds = [kind for kind in ERROR_TABLE.values() if kind.status == status and kind.description]
    if len(kinds) == 1:
        return kinds[0].description.format(**LIMITS)
    return " ".join(f"`{k.error_type}`: {k.description.format(**LIMITS)}" for k in kinds)


# The error answers of a model route, for /docs: every status of the table with a description.
# Not listed: 400 (malformed HTTP, or a refused CORS preflight, neither of them one of these
# operations), 404 for a path and 405 (no operation), and 500, which is a bug.
ERROR_DESCRIPTIONS = {
    status: _describe_status(status)
    for status in sorted({kind.status for kind in ERROR_TABLE.values() if kind.description})
}
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in ERROR_DESCRIPTIONS.items()
}


def check_length(field: str, text: str, limit: int) -> None:
    if len(text) > limit:
        raise InvalidInput(field, f"`{field}` has {len(text):,} characters; the limit is {limit:,}")


def envelope(
    kind: ErrorKind, message: str, request_id: str, details: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """The envelope, always with its four keys: `details` names the fields at fault (empty when
    no one field is)."""
    return {
        "error": message,
        "error_type": kind.error_type,
        "request_id": request_id,
        "details": details or [],
    }


def error_headers(
    kind: ErrorKind, request_id: str, headers: Mapping[str, str] | None = None
) -> dict[str, str]:
    extra = {name.lower(): value for name, value in (headers or {}).items()}
    if kind.status in CLOSES_CONNECTION:
        extra["connection"] = "close"
    return {**extra, "x-request-id": request_id}


def error_response(
    kind: ErrorKind,
    message: str,
    request_id: str,
    details: list[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An error answer, for the app and for the middleware (an ASGI response)."""
    return JSONResponse(
        envelope(kind, message, request_id, details),
        status_code=kind.status,
        headers=error_headers(kind, request_id, headers),
    )


def error_bytes(
    kind: ErrorKind, message: str, request_id: str, headers: Mapping[str, str] | None = None
) -> bytes:
    """The same answer as raw HTTP/1.1, for the server, which answers before any app runs."""
    body = error_response(kind, message, request_id, headers=headers)
    head = f"HTTP/1.1 {kind.status} {HTTPStatus(kind.status).phrase}\r\n"
    for name, value in body.raw_headers:
        head += f"{name.decode('latin-1')}: {value.decode('latin-1')}\r\n"
    return (head + "\r\n").encode("latin-1") + bytes(body.body)
