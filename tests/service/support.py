"""Helpers shared by the service tests: a served app (in process, or under a real uvicorn server),
the error envelope, SSE frames, and a way to hold the engines so that queues,
deadlines and disconnects are deterministic."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import torch
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from models.architectures import LanguageModel
from models.config import LanguageModelConfig
from models.format import MANIFEST, sha256_file
from service.api.deps import ServiceState
from service.app import create_app
from service.engine import EngineClient
from service.engine.operations import Event, TokenEvent
from service.generation import GenerationRequest, GenerationScheduler
from service.settings import Settings

ENVELOPE_KEYS = {"error", "error_type", "request_id"}
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def service_process(
    artifacts: Path, log_path: Path, **env: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`python -m service` on a free port, serving the checkpoints in `artifacts` on the CPU, in
    a process of its own (the test's threads do not share its GIL); killed if still running
    after. Not waited for: callers wait for what they need (listening, ready)."""
    port = free_port()
    environment = {
        **os.environ,
        "LSTM_SERVE_ARTIFACTS_DIR": str(artifacts),
        "LSTM_SERVE_DEVICE": "cpu",
        "LSTM_SERVE_LOG_LEVEL": "warning",
        **env,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "--port", str(port)],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield process, port
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)


class Answer(Protocol):
    """An HTTP response, from the TestClient (httpx2) or from httpx against a real server."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def text(self) -> str: ...

    def json(self, **kwargs: Any) -> Any: ...


class Getter(Protocol):
    def get(self, url: str) -> Any: ...


def state_of(client: TestClient) -> ServiceState:
    state: ServiceState = client.app.state.service  # type: ignore[attr-defined]
    return state


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll `condition` every 10 ms; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or condition}")
        time.sleep(0.01)


def wait_ready(client: Getter, timeout: float = 15.0) -> None:
    """Poll /health/ready until it answers 200 (models load in the background)."""
    wait_until(
        lambda: client.get("/health/ready").status_code == 200, timeout, "GET /health/ready == 200"
    )


@contextmanager
def serve(settings: Settings, ready: bool = True) -> Iterator[TestClient]:
    """A TestClient over a fresh app (lifespan running); by default, once every model is ready."""
    with TestClient(create_app(settings)) as client:
        if ready:
            wait_ready(client)
        yield client


def assert_error(response: Answer, status: int, error_type: str) -> dict[str, Any]:
    """The one envelope, the status, the type, and the request id both in body and header."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert ENVELOPE_KEYS <= set(body) <= ENVELOPE_KEYS | {"details"}, body
    assert body["error_type"] == error_type
    assert isinstance(body["error"], str) and body["error"]
    assert body["request_id"] == response.headers["x-request-id"]
    if "details" in body:
        assert all(set(d) == {"field", "message"} for d in body["details"]), body["details"]
    return body


def detail_fields(body: dict[str, Any]) -> list[str]:
    return [detail["field"] for detail in body.get("details") or []]


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    """`event: name` / `data: json` frames separated by blank lines -> [(name, data)]."""
    events = []
    for frame in text.split("\n\n"):
        if not frame.strip():
            continue
        fields = dict(line.split(": ", 1) for line in frame.splitlines())
        assert set(fields) == {"event", "data"}, frame
        events.append((fields["event"], json.loads(fields["data"])))
    return events


@contextmanager
def engine_blocked(engine: EngineClient) -> Iterator[None]:
    """Hold every engine, so nothing is computed until exit (requests still queue there)."""
    engine.control("hold")
    try:
        yield
    finally:
        engine.control("release")


@contextmanager
def running_server(app: FastAPI, **options: Any) -> Iterator[str]:
    """uvicorn on a free 127.0.0.1 port in a background thread; yields its base URL. `options`
    are uvicorn.Config's (e.g. `http=` the protocol class, `log_level=`)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    defaults: dict[str, Any] = {"loop": "asyncio", "log_level": "warning", "access_log": False}
    config = uvicorn.Config(app, **(defaults | options))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 10, "uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def resign(checkpoint: Path, name: str) -> None:
    """Rewrite the manifest line of file `name` after changing it, so that only the checks on the
    content (not the sha256 check) can catch the change."""
    lines = (checkpoint / MANIFEST).read_text().splitlines()
    digest = sha256_file(checkpoint / name)
    fixed = [f"{digest}  {name}" if line.endswith(f"  {name}") else line for line in lines]
    (checkpoint / MANIFEST).write_text("\n".join(fixed) + "\n")


def tiny_language_model(vocab: int = 30) -> LanguageModel:
    """A 2-layer LSTM of 16 units, the same weights every time, in eval mode."""
    torch.manual_seed(0)
    config = LanguageModelConfig(vocab_size=vocab, embed_dim=8, hidden_dim=16, num_layers=2)
    return LanguageModel(config).eval()


def run_generations(scheduler: GenerationScheduler, requests: list[GenerationRequest]) -> None:
    """Submit the requests and step the scheduler, as an engine does, until all have finished."""
    for request in requests:
        scheduler.submit(request)
    while scheduler.active():
        scheduler.admit()
        scheduler.step()


def token_ids(events: list[Event]) -> list[int]:
    """The token ids a generation's events carried, in order."""
    return [e.token_id for e in events if isinstance(e, TokenEvent)]


def busy_and_cached(
    scheduler: GenerationScheduler,
    request: Callable[[list[int], int, list[Event]], GenerationRequest],
    prompt: list[int],
    prefix: int,
    others: tuple[list[int], list[int]],
    seed: int,
) -> tuple[list[int], list[int]]:
    """The token ids seed `seed` gives `prompt` in a busy batch (between `others`), once its
    first `prefix` tokens were read by another request, then again with the whole prompt read
    before: with a prefix cache, the second read starts from a cached state each time."""
    run_generations(scheduler, [request(prompt[:prefix], 1, [])])
    busy: list[Event] = []
    batch = [request(others[0], 1, []), request(prompt, seed, busy), request(others[1], 2, [])]
    run_generations(scheduler, batch)
    again: list[Event] = []
    run_generations(scheduler, [request(prompt, seed, again)])
    return token_ids(busy), token_ids(again)
