"""The application factory: settings in, a FastAPI app out. Its lifespan reads every checkpoint's
config and starts the engines in the background; readiness turns true once every model is warm.
Nothing here imports torch: the engines do."""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from service.api import errors, generate, health, openai, playground, predict
from service.api.cors import EnvelopeCORSMiddleware
from service.api.deps import ServiceState
from service.api.fast import FastSentiment
from service.api.middleware import RequestMiddleware
from service.api.shedding import LoadShedding
from service.engine import EngineClient, EngineSettings, EngineSpec, ModelFiles
from service.engine.protocol import DeviceReport
from service.engine_launch import start_engine_server
from service.metrics import Metrics
from service.registry import Registry, StartupError, public_reason
from service.settings import Settings

logger = logging.getLogger("lstm_serve")

DESCRIPTION = """Sentiment, next-word suggestions and text generation from recurrent (LSTM, GRU,
RNN) models. Every error uses one envelope: `{"error", "error_type", "request_id", "details"}`."""


def engine_count(settings: Settings, device: DeviceReport) -> int:
    """LSTM_SERVE_ENGINES resolved: one engine per GPU on CUDA, one per usable core on the CPU."""
    if settings.engines != "auto":
        return int(settings.engines)
    if device.device.startswith("cuda"):
        return 1 if ":" in device.device else max(1, device.cuda_devices)
    return usable_cores()


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup v2 quota (a container
    limited to 2 CPUs on a 64-core host gets 2 engines, not 64)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores or 1, max(1, math.floor(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores or 1)


async def _load(state: ServiceState, on_fatal: Callable[[str], None] | None) -> None:
    """Read the checkpoints' configs and resolve the device, start the engines (each loads and
    warms every model up), then turn ready."""
    started = time.perf_counter()
    settings, registry = state.settings, state.registry
    try:
        in_process = settings.engines == 0
        if not in_process:  # unless it runs: then engines read the files (service.engine.preload)
            start_engine_server(settings.checkpoint_paths())
        device, infos = await asyncio.gather(
            state.engine.probe(settings.device, settings.dtype, in_process),
            asyncio.to_thread(registry.load_all),
        )
        if device.error is not None:
            raise StartupError(device.error)
        registry.device = device.device
        if not infos or (registry.failures and not settings.allow_partial):
            registry.finish({}, 0.0)  # raises StartupError
        count = engine_count(settings, device)
        spec = EngineSpec(
            index=0,
            models={name: ModelFiles(str(info.path), info.version) for name, info in infos.items()},
            device=device.device,
            dtype=settings.dtype,
            threads=settings.torch_threads,
            max_batch_size=settings.max_batch_size,
            max_wait_s=settings.max_wait_ms / 1000,
            max_active_generations=settings.max_active_generations,
            # the budget is the model's, shared out among the engines (with prefix affinity a
            # text's states live on one engine: more engines need no more cache in all)
            cache_bytes=settings.cache_mb * 2**20 // max(1, count),
            nice=settings.engine_nice,
            continuous_cache=settings.continuous_cache,
        )
        failures = await state.engine.start(spec, count)
        registry.finish(failures, time.perf_counter() - started)
        state.metrics.models_loaded.set(len(registry.models))
        logger.info(
            "ready: %d models on %d engine%s in %.2f s",
            len(registry.models),
            len(state.engine.engines),
            "" if len(state.engine.engines) == 1 else "s",
            registry.load_seconds,
        )
    except StartupError as error:
        state.failed = str(error)
        logger.error("startup failed: %s", error)
    except Exception as error:  # an unexpected error outside any one checkpoint: fail, never hang
        # clients read this (503 bodies); directories of this machine and the traceback go to the
        # log only
        state.failed = f"startup failed: {public_reason(error, settings.artifacts_dir)}"
        logger.exception("startup failed")
    registry.startup_error = state.failed
    if state.failed and on_fatal is not None:
        on_fatal(state.failed)


def _telemetry() -> dict[str, Any]:
    """FastAPI's own OpenTelemetry (FastAPI 0.165 and later) only when OpenTelemetry is set up
    (an `OTEL_*` variable): otherwise it records nothing, yet asks the global providers on every
    request, which cost 8% of the HTTP process's CPU at 64 connections (py-spy)."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    wanted = any(name.startswith("OTEL_") for name in os.environ)
    return {"telemetry": {"tracing": wanted, "metrics": wanted, "logs": wanted}}


def create_app(
    settings: Settings | None = None, on_fatal: Callable[[str], None] | None = None
) -> FastAPI:
    """Build the app; `on_fatal` is called when a required checkpoint fails to load."""
    settings = settings or Settings()
    metrics = Metrics()
    engine = EngineClient(
        EngineSettings(
            max_batch_size=settings.max_batch_size,
            max_queue=settings.max_queue,
            max_active_generations=settings.max_active_generations,
        ),
        observer=metrics,
    )
    state = ServiceState(settings, engine, Registry(settings), metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(_load(state, on_fatal))
        try:
            yield
        finally:
            loading.cancel()
            await engine.stop()

    app = FastAPI(  # /docs and /redoc are served from the package (service/api/playground.py)
        title="lstm-serve",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        **_telemetry(),
    )
    app.state.service = state
    errors.install(app)
    for router in (
        health.router,
        predict.router,
        generate.router,
        openai.router,
        playground.router,
    ):
        app.include_router(router)
    app.add_middleware(FastSentiment, state=state)  # innermost: inside CORS and shedding
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
