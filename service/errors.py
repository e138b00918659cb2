"""Domain errors of the service and the one table that maps each to an HTTP status and type.

Raised by the inference layer and the engine (which know nothing of HTTP); translated into the
error envelope in one place (`service.api.errors`).
"""

from __future__ import annotations

from dataclasses import dataclass


class ServiceError(Exception):
    """Base class: `message` is safe to show to the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ServiceError):
    """A request field breaks a limit that depends on settings or on the model."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ModelNotFound(ServiceError):
    """No model of that name is configured."""


class Overloaded(ServiceError):
    """The queue is full; the client should retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelUnavailable(Overloaded):
    """The model is configured but failed to load (503 with Retry-After: a restart may fix it)."""

    def __init__(self, message: str, retry_after: int = 30) -> None:
        super().__init__(message, retry_after)


class NotReady(ServiceError):
    """Models are still loading."""


class EngineFailed(Overloaded):
    """The engine process computing the request stopped, or none is running while one restarts;
    retrying is safe (the model routes change nothing)."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, retry_after)


class DeadlineExceeded(ServiceError):
    """The request waited longer than the configured deadline."""


class Unauthorized(ServiceError):
    """An API key is configured and the request did not carry it."""


class PayloadTooLarge(ServiceError):
    """The request body is over the configured size."""


class InferenceFailed(ServiceError):
    """The model raised while computing this request's batch (a bug, reported as 500)."""


class BadRequest(ServiceError):
    """The request is not HTTP this service can read, or a CORS preflight it refuses."""


class RouteNotFound(ServiceError):
    """No route matches the path."""


class MethodNotAllowed(ServiceError):
    """The route exists; the method is not one of its own."""


class RequestTimeout(ServiceError):
    """The request (head or body) did not arrive in time."""


class UnsupportedMediaType(ServiceError):
    """The body is not JSON in UTF-8, or is compressed."""


class HeadersTooLarge(ServiceError):
    """Too many request headers, or too many bytes of them."""


@dataclass(frozen=True)
class ErrorKind:
    """One row of the status table: HTTP status, `error_type`, and what it means (for /docs;
    `{name}` fields are the limits, filled in by service.api.responses)."""

    status: int
    error_type: str
    description: str = ""


ERROR_TABLE: dict[type[ServiceError], ErrorKind] = {
    BadRequest: ErrorKind(400, "bad_request"),
    RouteNotFound: ErrorKind(404, "not_found"),
    MethodNotAllowed: ErrorKind(405, "method_not_allowed"),
    RequestTimeout: ErrorKind(
        408,
        "request_timeout",
        "The request head did not arrive within LSTM_SERVE_HEAD_TIMEOUT_S, or its body within "
        "{body_timeout_s} s (the connection is closed).",
    ),
    UnsupportedMediaType: ErrorKind(
        415,
        "unsupported_media_type",
        "The body is not sent as `Content-Type: application/json` (or another `+json` type) in "
        "UTF-8, or it is compressed (`Content-Encoding`).",
    ),
    HeadersTooLarge: ErrorKind(
        431,
        "headers_too_large",
        "More than {max_headers} request headers, or more than {max_header_bytes} bytes of them "
        "together (the connection is closed).",
    ),
    InvalidInput: ErrorKind(
        422,
        "validation_error",
        "Invalid input: the message names the field, the limit and what was sent.",
    ),
    ModelNotFound: ErrorKind(
        404, "model_not_found", "Unknown model name, or a model of another task."
    ),
    ModelUnavailable: ErrorKind(
        503, "model_unavailable", "The model failed to load (with Retry-After)."
    ),
    NotReady: ErrorKind(503, "not_ready", "The models are still loading."),
    Overloaded: ErrorKind(
        503,
        "overloaded",
        "The queue is full, or the server is at its connection limit (with Retry-After).",
    ),
    EngineFailed: ErrorKind(503, "engine_unavailable"),
    DeadlineExceeded: ErrorKind(
        504,
        "deadline_exceeded",
        "The request passed its deadline (LSTM_SERVE_REQUEST_TIMEOUT_S).",
    ),
    Unauthorized: ErrorKind(
        401,
        "unauthorized",
        "An API key is configured and the request lacks `Authorization: Bearer <key>`.",
    ),
    PayloadTooLarge: ErrorKind(
        413,
        "payload_too_large",
        "The body is larger than LSTM_SERVE_MAX_BODY_BYTES (the connection is closed).",
    ),
    InferenceFailed: ErrorKind(500, "internal_error"),
}


def kind_of(error: ServiceError) -> ErrorKind:
    for cls in type(error).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return ErrorKind(500, "internal_error")


def kind_of_status(status: int) -> ErrorKind:
    """The first row of the table with this status (an HTTP error raised by the router)."""
    for kind in ERROR_TABLE.values():
        if kind.status == status:
            return kind
    return ErrorKind(status, "http_error")
