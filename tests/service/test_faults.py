"""Faults the service must survive without losing or corrupting anything: broken checkpoints at
startup (with and without allow_partial), a client that goes away while its request is queued
(a real uvicorn server), and SIGTERM under load (a real `python -m service` process).

Already covered elsewhere, not repeated here: a tampered weights file and a checkpoint that loads
but cannot run (tests/service/test_startup.py); every checkpoint corruption at the library level
(tests/models/test_checkpoint.py); the model raising inside a batch (tests/service/test_engine.py:
only the request that breaks fails, with a 500 and its request id, and the engine goes on)."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from models.format import CONFIG, MANIFEST, TOKENIZER, WEIGHTS
from service.app import create_app
from service.generation import concat_states
from tests.service.conftest import Checkpoints, SettingsFactory
from tests.service.support import (
    assert_error,
    engine_blocked,
    parse_sse,
    resign,
    running_server,
    serve,
    state_of,
    wait_ready,
    wait_until,
)
from tests.service.support import service_process as start_service

ALL = ["sentiment", "next-word", "generate"]
GRACE_S = 30  # service/__main__.py: uvicorn's timeout_graceful_shutdown


# ---- broken checkpoints, each a copy of a good one with one thing wrong ----


def _truncated(path: Path, checkpoints: Checkpoints) -> None:
    """The weights cut to half, as by an interrupted copy (the manifest catches it)."""
    weights = (path / WEIGHTS).read_bytes()
    (path / WEIGHTS).write_bytes(weights[: len(weights) // 2])


def _truncated_resigned(path: Path, checkpoints: Checkpoints) -> None:
    """Truncated, and the manifest regenerated after it: the weights themselves are unreadable."""
    _truncated(path, checkpoints)
    resign(path, WEIGHTS)


def _lying_config(path: Path, checkpoints: Checkpoints) -> None:
    """config.json says hidden_dim 9; the weights were trained with 8."""
    config = json.loads((path / CONFIG).read_text())
    config["model"]["hidden_dim"] = 9
    (path / CONFIG).write_text(json.dumps(config))
    resign(path, CONFIG)


def _foreign_tokenizer(path: Path, checkpoints: Checkpoints) -> None:
    """The next-word model's tokenizer in the sentiment checkpoint."""
    shutil.copy(checkpoints.path("next-word") / TOKENIZER, path / TOKENIZER)
    resign(path, TOKENIZER)


Breakage = Callable[[Path, Checkpoints], None]


def _faults(checkpoints: Checkpoints) -> dict[str, tuple[Breakage, str]]:
    """name -> (how the sentiment checkpoint is broken, what clients are told)."""
    words, sentiment_words = (
        checkpoints.vocab_sizes["next-word"],
        checkpoints.vocab_sizes["sentiment"],
    )
    return {
        "truncated": (
            _truncated,
            f"{WEIGHTS}: sha256 does not match {MANIFEST}; the file was changed or corrupted",
        ),
        "truncated-resigned": (
            _truncated_resigned,
            f"{WEIGHTS}: not a readable safetensors file (Error while deserializing header: "
            "incomplete metadata, file not fully covered)",
        ),
        "lying-config": (
            _lying_config,
            f"{WEIGHTS}: does not match {CONFIG} (size mismatch for layers.0.forward_rnn."
            "weight_ih_l0: copying a param with shape torch.Size([32, 8]) from checkpoint, the "
            "shape in current model is torch.Size([36, 8]).; and 8 more)",
        ),
        "foreign-tokenizer": (
            _foreign_tokenizer,
            f"{TOKENIZER}: vocabulary has {words} tokens; {CONFIG} says {sentiment_words}",
        ),
    }


FAULTS = ["truncated", "truncated-resigned", "lying-config", "foreign-tokenizer"]


def _break(checkpoints: Checkpoints, directory: Path, fault: str) -> Path:
    broken = shutil.copytree(checkpoints.path("sentiment"), directory / fault)
    _faults(checkpoints)[fault][0](broken, checkpoints)
    return broken


def _bodies(client: TestClient, *models: str) -> list[str]:
    """Every client-visible answer about the models: health, /models, and a request to each."""
    answers = [client.get(path) for path in ("/health/live", "/health/ready", "/models")]
    for model in models:
        answers.append(client.post("/sentiment", json={"text": "a film", "model": model}))
    return [answer.text for answer in answers]


def _no_paths(texts: list[str], *directories: Path) -> None:
    for text in texts:
        for directory in directories:
            assert str(directory) not in text and str(directory.resolve()) not in text, text
        assert "Traceback" not in text and 'File "' not in text, text


@pytest.mark.parametrize("fault", FAULTS)
def test_a_broken_checkpoint_fails_startup_naming_the_model_and_the_file(
    make_settings: SettingsFactory, checkpoints: Checkpoints, tmp_path: Path, fault: str
) -> None:
    broken = _break(checkpoints, tmp_path, fault)
    told = _faults(checkpoints)[fault][1]
    fatal: list[str] = []
    app = create_app(make_settings(models=[*ALL, f"{fault}={broken}"]), fatal.append)
    with TestClient(app) as client:
        wait_until(lambda: client.get("/health/ready").json()["status"] == "failed", 10)
        assert fatal == [f"checkpoints failed to load ({fault}: {told})"]
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["models"] == {**dict.fromkeys(ALL, "ready"), fault: "unavailable"}
        answer = assert_error(client.post("/sentiment", json={"text": "a"}), 503, "not_ready")
        assert f"{fault}: {told}" in answer["error"]
        _no_paths(_bodies(client, fault), tmp_path)


def test_with_allow_partial_broken_checkpoints_are_listed_and_the_others_serve(
    make_settings: SettingsFactory,
    checkpoints: Checkpoints,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = {fault: _break(checkpoints, tmp_path, fault) for fault in FAULTS}
    models = [*ALL, *(f"{fault}={path}" for fault, path in broken.items())]
    with (
        caplog.at_level(logging.INFO),
        serve(make_settings(models=models, allow_partial=True)) as client,
    ):
        ready = client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json()["models"] == {
            **dict.fromkeys(ALL, "ready"),
            **dict.fromkeys(FAULTS, "unavailable"),
        }
        listed = {m["name"]: m for m in client.get("/models").json()["models"]}
        for fault in FAULTS:
            assert listed[fault]["status"] == "unavailable"
            assert listed[fault]["error"] == _faults(checkpoints)[fault][1]
            answer = assert_error(
                client.post("/sentiment", json={"text": "a film", "model": fault}),
                503,
                "model_unavailable",
            )
            assert answer["error"] == f"model {fault!r} failed to load: {listed[fault]['error']}"
        assert client.post("/sentiment", json={"text": "a film"}).status_code == 200
        assert client.post("/next-word", json={"text": "the "}).status_code == 200
        assert client.post("/generate", json={"prompt": "to", "max_new_tokens": 2}).is_success
        # clients read the model, the file and the problem; the operator's log also has the path
        _no_paths(_bodies(client, *FAULTS), tmp_path)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for fault, path in broken.items():
        assert f"model {fault} failed to load from {path}" in logged


# ---- the model raising inside a generation step ----


def test_a_generation_step_that_raises_fails_its_sequences_and_the_engine_goes_on(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """test_engine.py covers a batch handler that raises; this is the generation step, where the
    sequences advanced together are that step's batch."""
    with serve(make_settings()) as client, ThreadPoolExecutor(3) as pool:
        state = state_of(client)
        scheduler = state.engine.local_worker().served["generate"].scheduler
        assert scheduler is not None
        calls = 0

        def breaks_once(states: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 3:  # the third step of the three sequences below
                raise RuntimeError("the model broke")
            return concat_states(states)

        body = {"prompt": "to be", "max_new_tokens": 50, "seed": 1}
        with engine_blocked(state.engine):
            plain = [
                pool.submit(client.post, "/generate", json=body, headers={"x-request-id": f"g{i}"})
                for i in range(2)
            ]
            streamed = pool.submit(client.post, "/generate/stream", json=body)
            wait_until(lambda: scheduler.active() == 3, 5)
            monkeypatch.setattr("service.generation.concat_states", breaks_once)
        for index, future in enumerate(plain):
            answer = assert_error(future.result(timeout=10), 500, "internal_error")
            assert answer["request_id"] == f"g{index}"
        events = parse_sse(streamed.result(timeout=10).text)
        assert [name for name, _ in events] == ["token"] * 3 + ["error"]
        assert events[-1][1] == {"error": "generation failed", "error_type": "internal_error"}
        assert scheduler.active() == 0  # nothing left running on stale state
        again = client.post("/generate", json=body)
        assert again.status_code == 200 and again.json()["tokens"] == 50


def test_a_language_model_whose_step_fails_fails_its_warm_up(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduler ends the sequences of a failed step instead of raising: the warm-up looks at
    how its generation ended, so such a model is not reported ready."""

    def broken(states: Any) -> Any:
        raise RuntimeError("the model broke")

    monkeypatch.setattr("service.generation.concat_states", broken)
    fatal: list[str] = []
    app = create_app(make_settings(models=["sentiment", "generate"]), fatal.append)
    with TestClient(app) as client:
        wait_until(lambda: client.get("/health/ready").json()["status"] == "failed", 10)
    reason = "RuntimeError('warm-up generation ended with error (RuntimeError)')"
    assert fatal == [f"checkpoints failed to load (generate: {reason})"]


# ---- a client that goes away while its request waits in the queue ----


def _batch_items(metrics: Any) -> float:
    value = metrics.get_sample_value(
        "lstm_serve_batch_size_sum", {"operation": "sentiment:sentiment"}
    )
    return float(value or 0)


def test_a_client_gone_while_queued_costs_no_work_and_the_others_are_answered(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_settings())
    state = app.state.service
    request = (
        b"POST /sentiment HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
        b'content-length: 18\r\n\r\n{"text": "a film"}'
    )
    with running_server(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        wait_ready(http)
        before = _batch_items(state.metrics.registry)
        port = int(url.rsplit(":", 1)[1])
        with caplog.at_level(logging.INFO, "lstm_serve.access"), ThreadPoolExecutor(2) as pool:
            with engine_blocked(state.engine):
                gone = socket.create_connection(("127.0.0.1", port))
                gone.sendall(request)
                staying = pool.submit(http.post, "/sentiment", json={"text": "a great film"})
                wait_until(lambda: state.engine.pending("sentiment") == 2, 5)
                gone.close()  # the client goes away while its request is queued
                wait_until(lambda: '"status": 499' in caplog.text, 5, "the disconnect to be seen")
            answer = staying.result(timeout=10)
        assert answer.status_code == 200 and answer.json()["label"] in ("negative", "positive")
        assert _batch_items(state.metrics.registry) == before + 1  # only the staying request
        labels = {"route": "/sentiment", "method": "POST", "status": "499"}
        assert state.metrics.registry.get_sample_value("lstm_serve_requests_total", labels) == 1
        # the engine goes on serving
        assert http.post("/sentiment", json={"text": "a dull plot"}).status_code == 200
        assert http.post("/generate", json={"prompt": "to", "max_new_tokens": 3}).is_success


# ---- SIGTERM under load, on a real `python -m service` process ----


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


class HeldRequest:
    """A request whose head and the start of whose body are sent; the rest waits for `finish`.
    Once its head is read, the server counts the request as in flight."""

    def __init__(self, port: int, path: str, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n\r\n"
        ).encode()
        # a whole answer may take up to the grace period on a busy machine (2,000 tokens of a
        # generation that sends nothing before its end)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=GRACE_S)
        self.sock.sendall(head + data[:5])
        self.rest = data[5:]

    def finish(self) -> tuple[int, str]:
        """Send the rest of the body; the status and the whole body of the answer."""
        self.sock.sendall(self.rest)
        received = b""
        while chunk := self.sock.recv(65536):
            received += chunk
        self.sock.close()
        head, _, body = received.partition(b"\r\n\r\n")
        if b"transfer-encoding: chunked" in head.lower():
            body = _dechunk(body)
        return int(head.split()[1]), body.decode()


def _dechunk(data: bytes) -> bytes:
    """An HTTP/1.1 chunked body, decoded (a complete one ends with a zero-size chunk)."""
    out = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out, data = out + data[:size], data[size + 2 :]


def _children(pid: int) -> list[int]:
    """A process's children (Linux /proc; each thread lists the children it started)."""
    tasks = Path(f"/proc/{pid}/task").iterdir()
    return [int(c) for task in tasks for c in (task / "children").read_text().split()]


def _engine_processes(pid: int) -> list[int]:
    """The engine processes of a service: the children of its fork server, its own child."""
    servers = [
        child
        for child in _children(pid)
        if b"multiprocessing.forkserver" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]
    return [engine for server in servers for engine in _children(server)]


@pytest.fixture
def service_process(
    checkpoints: Checkpoints, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    # real engine processes: they must drain and exit too
    with start_service(checkpoints.root, tmp_path / "service.log", LSTM_SERVE_ENGINES="2") as run:
        yield run


def test_sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_0(
    service_process: tuple[subprocess.Popen[bytes], int], tmp_path: Path
) -> None:
    process, port = service_process
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
        # generous: a busy machine takes long to start three processes that import torch
        wait_until(lambda: not _refused(port), 60, "the service to listen")
        wait_ready(http, 120)
        engines = _engine_processes(process.pid)
        assert len(engines) == 2
        long = {"prompt": "to be", "max_new_tokens": 2000}
        held = [
            HeldRequest(port, "/generate", {**long, "seed": 1}),
            HeldRequest(port, "/generate/stream", {**long, "seed": 2}),
            HeldRequest(port, "/generate", {**long, "stream": True, "seed": 3}),
            HeldRequest(port, "/sentiment", {"text": "a great film"}),
            HeldRequest(port, "/sentiment/batch", {"texts": ["a great film", "a dull plot"]}),
            HeldRequest(port, "/next-word", {"text": "the history of "}),
        ]
        assert http.get("/health/live").status_code == 200  # the heads above are read by now
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    wait_until(lambda: _refused(port), 5, "new connections to be refused")
    answers = [request.finish() for request in held]
    assert process.wait(GRACE_S) == 0, (tmp_path / "service.log").read_text()
    assert time.monotonic() - signalled < GRACE_S
    assert not [pid for pid in engines if Path(f"/proc/{pid}").exists()]  # no engine left
    assert [status for status, _ in answers] == [200] * len(held)
    generated = json.loads(answers[0][1])
    assert (generated["tokens"], generated["finish_reason"]) == (2000, "length")
    assert len(generated["text"]) == 2000  # a character model: one character per token
    for _, text in answers[1:3]:
        events = parse_sse(text)
        assert [name for name, _ in events] == ["token"] * 2000 + ["done"]
        assert events[-1][1]["text"] == "".join(data["text"] for _, data in events[:-1])
    assert json.loads(answers[3][1])["label"] in ("negative", "positive")
    assert len(json.loads(answers[4][1])["results"]) == 2
    assert len(json.loads(answers[5][1])["suggestions"]) == 3
