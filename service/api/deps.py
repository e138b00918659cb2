"""Dependencies shared by the routes: the service state and the optional API key."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.engine import EngineClient
from service.errors import Unauthorized
from service.metrics import Metrics
from service.registry import Registry
from service.settings import Settings


@dataclass
class ServiceState:
    settings: Settings
    engine: EngineClient
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
    if not hmac.compare_digest(key_digest(given), key_digest(expected.get_secret_value())):
        raise Unauthorized("missing or wrong API key: send `Authorization: Bearer <key>`")


def key_digest(key: str) -> bytes:
    """Keys are compared as sha256 digests: equal lengths, so the time taken does not even tell
    the key's length (compare_digest's own time depends only on the length of its inputs)."""
    return hashlib.sha256(key.encode()).digest()
