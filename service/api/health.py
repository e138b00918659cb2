"""Liveness, readiness, model metadata and Prometheus metrics (always open, no API key)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api.deps import State
from service.schemas import HealthResponse, ModelInfo, ModelsResponse

router = APIRouter(tags=["operations"])


@router.get("/health/live", response_model=HealthResponse)
async def live(state: State) -> JSONResponse:
    """The process is up and its event loop answers (failed startup answers 503)."""
    if state.failed:
        return JSONResponse({"status": "failed"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get(
    "/health/ready",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "Still loading, or failed."}},
)
async def ready(state: State) -> JSONResponse:
    """Every required model is loaded and warmed up; 503 until then."""
    registry = state.registry
    models = {name: "ready" for name in registry.models}
    models.update({name: "unavailable" for name in registry.failures})
    engines = state.engine.status()
    figures = {key: engines[key] for key in ("engines", "alive", "restarts")}
    if registry.ready and not state.failed:
        # an engine restarting: the others serve, so the instance stays in rotation
        status = "ok" if engines["alive"] == engines["engines"] else "degraded"
        return JSONResponse({"status": status, "models": models, "engines": figures})
    status = "failed" if state.failed else "loading"
    return JSONResponse(
        {"status": status, "models": models}, status_code=503, headers={"Retry-After": "1"}
    )


@router.get("/models", response_model=ModelsResponse)
async def models(state: State) -> ModelsResponse:
    """Loaded models: task, architecture, size, card metrics, device and dtype."""
    return ModelsResponse(models=[ModelInfo(**m) for m in state.registry.describe()])


@router.get("/metrics", response_class=Response)
async def metrics(state: State) -> Response:
    """Prometheus metrics."""
    for name in state.registry.models:
        hits, misses, bytes_ = state.engine.cache_figures(name)
        if hits or misses:
            state.metrics.cache_hits.labels(name).set(hits)
            state.metrics.cache_misses.labels(name).set(misses)
            state.metrics.cache_bytes.labels(name).set(bytes_)
    state.metrics.models_loaded.set(len(state.registry.models))
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
