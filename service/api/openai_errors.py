"""Errors of the OpenAI-compatible routes in OpenAI's shape `{"error": {message, type, param,
code}}` instead of the service's envelope: its clients pick their exception type from the status
and read `param` and `code`."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from service.errors import (
    InvalidInput,
    ModelNotFound,
    Overloaded,
    ServiceError,
    Unauthorized,
    kind_of,
)
from service.openai_schemas import openai_error_body


class Unsupported(InvalidInput):
    """A parameter of OpenAI's API sent at a value this service cannot honour."""


def openai_error(
    status: int, message: str, param: str | None, code: str | None, headers: Any = None
) -> JSONResponse:
    body = openai_error_body(status, message, param, code)
    return JSONResponse(body, status_code=status, headers=headers)


CODES = {Unsupported: "unsupported", InvalidInput: "invalid_value", Unauthorized: "invalid_api_key"}


def _from_service_error(error: ServiceError) -> JSONResponse:
    kind = kind_of(error)
    status = 400 if kind.status == 422 else kind.status  # OpenAI answers bad values with 400
    headers = None
    if isinstance(error, Overloaded):
        headers = {"Retry-After": str(error.retry_after)}
    if isinstance(error, Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    param = error.field if isinstance(error, InvalidInput) else None
    if isinstance(error, ModelNotFound):
        param = "model"
    if param is not None:
        param = param.split("[")[0]  # OpenAI names the parameter, the message says the item
    code = CODES.get(type(error), kind.error_type)
    return openai_error(status, error.message, param, code, headers)


def _from_validation_error(error: RequestValidationError) -> JSONResponse:
    """The first error, named by its parameter. Of a union (`prompt`, `stop`: a text or a list)
    pydantic reports every branch; the one whose type was sent (its error is not about the type)
    says what was wrong."""
    errors = error.errors()
    first = next((e for e in errors if not str(e.get("type")).endswith("_type")), None)
    first = first or (errors[0] if errors else {})
    if first.get("type") == "json_invalid":
        return openai_error(400, "the body is not valid JSON", None, "invalid_json")
    loc = [part for part in first.get("loc", ()) if part != "body"]
    param = str(loc[0]) if loc else None
    path = "".join(f"[{p}]" for p in loc[1:] if isinstance(p, int))
    message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    if param:
        message = f"`{param}{path}`: {message}"
    return openai_error(400, message, param, "invalid_value")


class OpenAIRoute(APIRoute):
    """Errors raised while handling a request (the API key, validation, the engines) answered in
    OpenAI's shape instead of the service's envelope."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as error:
                return _from_service_error(error)
            except RequestValidationError as error:
                return _from_validation_error(error)

        return handle
