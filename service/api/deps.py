"""Dependencies shared by the routes: the service state and the optional API key."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.engine import Engine
from service.errors import Unauthorized
from service.metrics import Metrics
from service.registry import Registry
from service.settings import Settings


@dataclass
class ServiceState:
    settings: Settings
    engine: Engine
    registry: Registry
    metrics: Metrics
    failed: str | None = None  # why startup failed, when it did


async def service_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


State = Annotated[ServiceState, Depends(service_state)]
_bearer = HTTPBearer(auto_error=False, description="Needed when LSTM_SERVE_API_KEY is set.")


async def require_api_key(
    state: State, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    """Constant-time comparison with the configured key; no key configured means open access.
    (Dependencies are `async def` on purpose: FastAPI runs a plain `def` one in its threadpool,
    two thread hops per request, which halved throughput under load on a 2-core machine.)"""
    expected = state.settings.api_key
    if expected is None:
        return
    given = credentials.credentials if credentials else ""
    if not hmac.compare_digest(given.encode(), expected.get_secret_value().encode()):
        raise Unauthorized("missing or wrong API key: send `Authorization: Bearer <key>`")
