"""The application factory: settings in, a FastAPI app out. Its lifespan starts the inference
thread and loads every checkpoint in the background; readiness turns true once all are warm."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api import errors, generate, health, playground, predict
from service.api.cors import EnvelopeCORSMiddleware
from service.api.deps import ServiceState
from service.api.middleware import RequestMiddleware
from service.api.shedding import LoadShedding
from service.engine import Engine
from service.metrics import Metrics
from service.registry import Registry, StartupError, public_reason
from service.settings import Settings

logger = logging.getLogger("lstm_serve")

DESCRIPTION = """Sentiment, next-word suggestions and text generation from recurrent (LSTM, GRU,
RNN) models. Every error uses one envelope: `{"error", "error_type", "request_id", "details"}`."""


async def _load(state: ServiceState, on_fatal: Callable[[str], None] | None) -> None:
    try:
        await state.engine.call(state.registry.load_all)
        state.metrics.models_loaded.set(len(state.registry.models))
        logger.info(
            "ready: %d models in %.2f s", len(state.registry.models), state.registry.load_seconds
        )
    except StartupError as error:
        state.failed = str(error)
        logger.error("startup failed: %s", error)
    except Exception as error:  # an unexpected error outside any one checkpoint: fail, never hang
        # clients read this (503 bodies); directories of this machine and the traceback go to the
        # log only
        state.failed = f"startup failed: {public_reason(error, state.settings.artifacts_dir)}"
        logger.exception("startup failed")
    state.registry.startup_error = state.failed
    if state.failed and on_fatal is not None:
        on_fatal(state.failed)


def create_app(
    settings: Settings | None = None, on_fatal: Callable[[str], None] | None = None
) -> FastAPI:
    """Build the app; `on_fatal` is called when a required checkpoint fails to load."""
    settings = settings or Settings()
    metrics = Metrics()
    engine = Engine(
        threads=settings.torch_threads,
        max_batch_size=settings.max_batch_size,
        max_wait_s=settings.max_wait_ms / 1000,
        max_queue=settings.max_queue,
        observer=metrics,
    )
    state = ServiceState(settings, engine, Registry(settings, engine), metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        loading = asyncio.create_task(_load(state, on_fatal))
        try:
            yield
        finally:
            loading.cancel()
            await asyncio.to_thread(engine.stop)

    app = FastAPI(  # /docs and /redoc are served from the package (service/api/playground.py)
        title="lstm-serve",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = state
    errors.install(app)
    for router in (health.router, predict.router, generate.router, playground.router):
        app.include_router(router)
    if settings.cors_origins:
        app.add_middleware(  # a refused preflight is the error envelope (400 bad_request)
            EnvelopeCORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
        )
    app.add_middleware(LoadShedding, engine=engine, metrics=metrics)  # inside RequestMiddleware
    app.add_middleware(RequestMiddleware, metrics=metrics, max_body_bytes=settings.max_body_bytes)
    return app
