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


class ModelUnavailable(ServiceError):
    """The model is configured but failed to load."""


class NotReady(ServiceError):
    """Models are still loading."""


class Overloaded(ServiceError):
    """The queue is full; the client should retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(ServiceError):
    """The request waited longer than the configured deadline."""


class Unauthorized(ServiceError):
    """An API key is configured and the request did not carry it."""


class PayloadTooLarge(ServiceError):
    """The request body is over the configured size."""


class InferenceFailed(ServiceError):
    """The model raised while computing this request's batch (a bug, reported as 500)."""


@dataclass(frozen=True)
class ErrorKind:
    status: int
    error_type: str


ERROR_TABLE: dict[type[ServiceError], ErrorKind] = {
    InvalidInput: ErrorKind(422, "validation_error"),
    ModelNotFound: ErrorKind(404, "model_not_found"),
    ModelUnavailable: ErrorKind(503, "model_unavailable"),
    NotReady: ErrorKind(503, "not_ready"),
    Overloaded: ErrorKind(503, "overloaded"),
    DeadlineExceeded: ErrorKind(504, "deadline_exceeded"),
    Unauthorized: ErrorKind(401, "unauthorized"),
    PayloadTooLarge: ErrorKind(413, "payload_too_large"),
    InferenceFailed: ErrorKind(500, "internal_error"),
}


def kind_of(error: ServiceError) -> ErrorKind:
    for cls in type(error).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]
    return ErrorKind(500, "internal_error")
