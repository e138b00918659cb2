"""Security: checkpoints load without running code, the API key (refused without it, compared in
constant time, never logged), the size and time limits not covered elsewhere, CORS off unless
configured, and error bodies that never show a traceback or a path of the machine.

Covered elsewhere: a pickle in place of the weights is refused by the library
(tests/models/test_checkpoint.py::test_a_planted_pickle_is_never_loaded); the body-size limit
(tests/service/test_errors.py::test_body_over_max_body_bytes_is_413); header count and size,
keys per object and nesting depth (tests/service/test_bad_input.py: too-many-headers, huge-header,
too-many-keys/*, deep-nesting/*); the container's user is not root (scripts/test-docker.sh)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import pickle
import re
import select
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from models.format import WEIGHTS
from service.__main__ import main
from service.api.middleware import RequestMiddleware
from service.app import create_app
from service.engine import SENTIMENT
from service.engine.worker import COMPUTE
from service.server import MAX_HEAD_BYTES, BoundedHeadProtocol
from tests.service.conftest import Checkpoints, SettingsFactory
from tests.service.support import (
    assert_error,
    detail_fields,
    resign,
    running_server,
    serve,
    wait_ready,
)

ROOT = Path(__file__).resolve().parents[2]
KEY = "test-key-5f1c9e"
MODEL_ROUTES = [
    ("/sentiment", {"text": "a great film"}),
    ("/sentiment/batch", {"texts": ["a great film"]}),
    ("/next-word", {"text": "the "}),
    ("/generate", {"prompt": "to", "max_new_tokens": 2}),
    ("/generate/stream", {"prompt": "to", "max_new_tokens": 2}),
]

# ---- checkpoints never run code ----


class Payload:
    """Unpickling this touches `marker`: the proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_pickles_planted_in_a_checkpoint_never_run(
    make_settings: SettingsFactory, checkpoints: Checkpoints, tmp_path: Path
) -> None:
    marker = tmp_path / "the-pickle-ran"
    payload = pickle.dumps(Payload(marker))
    planted = shutil.copytree(checkpoints.path("sentiment"), tmp_path / "planted")
    for name in ("pytorch_model.bin", "model.pt", "training_args.bin", "optimizer.pkl"):
        (planted / name).write_bytes(payload)  # files other tools would torch.load
    swapped = shutil.copytree(checkpoints.path("sentiment"), tmp_path / "swapped")
    (swapped / WEIGHTS).write_bytes(payload)
    resign(swapped, WEIGHTS)  # the manifest agrees: only the format can refuse it
    models = ["sentiment", f"planted={planted}", f"swapped={swapped}"]
    with serve(make_settings(models=models, allow_partial=True)) as client:
        body = {"text": "a great film"}
        answer = client.post("/sentiment", json={**body, "model": "planted"})
        assert answer.status_code == 200
        same = client.post("/sentiment", json=body).json()
        assert answer.json()["probabilities"] == same["probabilities"]  # the same weights
        listed = {m["name"]: m for m in client.get("/models").json()["models"]}
        assert listed["swapped"]["error"].startswith(f"{WEIGHTS}: not a readable safetensors")
    assert not marker.exists()
    pickle.loads(payload)  # the payload does run when unpickled: the test can see it
    assert marker.exists()


def test_the_served_code_never_unpickles() -> None:
    """models/ and service/ call nothing that unpickles (torch.load, pickle, joblib, dill), but
    the engines' own wire: frames between the HTTP process and the engine processes it started,
    over a socket pair that no other process holds (nothing a client or a checkpoint holds is
    unpickled)."""
    loader = re.compile(r"torch\.load\(|\bimport (pickle|joblib|dill|cloudpickle)\b|pickle\.load")
    files = [*ROOT.glob("models/**/*.py"), *ROOT.glob("service/**/*.py")]
    assert len(files) > 10
    unpickling = [str(f.relative_to(ROOT)) for f in files if loader.search(f.read_text())]
    assert unpickling == ["service/engine/protocol.py"]
    client = (ROOT / "service/engine/client.py").read_text()
    assert "socket.socketpair()" in client and "listen(" not in client


# ---- the API key ----


@pytest.fixture(scope="module")
def keyed(make_settings: SettingsFactory) -> Iterator[TestClient]:
    with serve(make_settings(api_key=KEY)) as client:
        yield client


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong", f"Bearer {KEY}x", f"Bearer {KEY[:-1]}", KEY, f"Basic {KEY}", "Bearer "],
    ids=["none", "wrong", "longer", "shorter", "no-scheme", "basic", "empty"],
)
def test_a_missing_or_wrong_key_is_401_on_every_model_route(
    keyed: TestClient, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization is not None else {}
    for path, body in MODEL_ROUTES:
        response = keyed.post(path, json=body, headers=headers)
        answer = assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
        assert answer["error"] == "missing or wrong API key: send `Authorization: Bearer <key>`"


def test_the_right_key_is_200_and_operations_stay_open(keyed: TestClient) -> None:
    for path, body in MODEL_ROUTES:
        response = keyed.post(path, json=body, headers={"authorization": f"Bearer {KEY}"})
        assert response.status_code == 200, (path, response.text)
    for path in ("/health/live", "/health/ready", "/models", "/metrics"):
        assert keyed.get(path).status_code == 200, path


def test_keys_are_compared_in_constant_time(
    keyed: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through hmac.compare_digest, on sha256 digests: the time depends on neither the key nor
    its length."""
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def recording(given: bytes, expected: bytes) -> bool:
        calls.append((given, expected))
        return compare(given, expected)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    body = {"text": "a film"}
    assert keyed.post(
        "/sentiment", json=body, headers={"authorization": f"Bearer {KEY}"}
    ).is_success
    assert (
        keyed.post("/sentiment", json=body, headers={"authorization": "Bearer no"}).status_code
        == 401
    )
    assert keyed.post("/sentiment", json=body).status_code == 401

    def digest(key: str) -> bytes:
        return hashlib.sha256(key.encode()).digest()

    # /sentiment's fast path compares first (service.api.fast); a key it refuses goes on to the
    # route, whose dependency compares again and answers 401
    assert calls == [
        (digest(KEY), digest(KEY)),
        (digest("no"), digest(KEY)),
        (digest("no"), digest(KEY)),
        (digest(""), digest(KEY)),
    ]


def test_no_key_in_logs_or_answers(
    make_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Requests with the right key, a wrong one, errors and the open routes, on a real server
    logging at debug level: neither key appears in any log line, answer or header."""
    wrong = "wrong-key-8d2a47"
    app = create_app(make_settings(api_key=KEY, log_level="debug"))
    right_header, wrong_header = (
        {"authorization": f"Bearer {KEY}"},
        {"authorization": f"Bearer {wrong}"},
    )
    with (
        caplog.at_level(logging.DEBUG),
        running_server(app, log_level="debug") as url,
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        wait_ready(http)
        answers = [
            http.post(path, json=body, headers=headers)
            for path, body in MODEL_ROUTES
            for headers in (right_header, wrong_header, {})
        ]
        answers += [
            http.post("/sentiment", json={"text": ""}, headers=right_header),
            http.post("/sentiment", json={"text": "a", "model": "nope"}, headers=right_header),
            http.post(
                "/sentiment",
                content=b"{",
                headers={**right_header, "content-type": "application/json"},
            ),
            http.get("/no-such-route", headers=right_header),
            *(
                http.get(path, headers=wrong_header)
                for path in ("/health/live", "/health/ready", "/models", "/metrics")
            ),
        ]
    assert {answer.status_code for answer in answers} == {200, 401, 404, 422}
    seen = [caplog.text, *capfd.readouterr()]
    seen += [answer.text + str(answer.headers) for answer in answers]
    assert "lstm_serve.access" in caplog.text or '"request_id"' in caplog.text  # logs were seen
    for text in seen:
        assert KEY not in text and wrong not in text


def test_a_log_level_that_would_log_headers_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """uvicorn's "trace" logs every request's headers, the API key with them."""
    monkeypatch.setenv("LSTM_SERVE_LOG_LEVEL", "trace")
    monkeypatch.setattr(sys, "argv", ["python -m service"])
    assert main() == 2
    message = "LSTM_SERVE_LOG_LEVEL='trace' is not one of debug, info, warning, error, critical"
    assert message in capsys.readouterr().err


# ---- size limits not covered elsewhere ----


def test_an_endless_request_head_is_cut_off(make_settings: SettingsFactory) -> None:
    """A header that never ends is refused once the head passes MAX_HEAD_BYTES (httptools alone
    buffered it without bound), and the server goes on serving."""
    app = create_app(make_settings())
    with running_server(app, http=BoundedHeadProtocol) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nhost: test\r\nx-endless: ")
            sent, answer = 0, b""
            while sent < 16 * MAX_HEAD_BYTES and not answer:
                sock.sendall(b"a" * 8192)
                sent += 8192
                if select.select([sock], [], [], 0.02)[0]:
                    answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
        assert b'"error_type":"headers_too_large"' in answer
        assert sent < 4 * MAX_HEAD_BYTES  # refused soon after the limit, not at the end
        with httpx.Client(base_url=url, timeout=10) as http:
            assert http.get("/health/live").status_code == 200


def test_a_body_that_trickles_in_is_refused_after_the_body_timeout(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client sending its body a byte now and then holds a connection and a buffer; after
    RequestMiddleware.body_timeout_s (30 s; 0.3 s here) it gets a 408 and the connection closes."""
    monkeypatch.setattr(RequestMiddleware, "body_timeout_s", 0.3)
    app = create_app(make_settings())
    with running_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /sentiment HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
                b'content-length: 30\r\n\r\n{"text": '
            )
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"the request body did not arrive within 0.3 s" in answer
        with httpx.Client(base_url=url, timeout=10) as http:
            assert http.post("/sentiment", json={"text": "a film"}).status_code == 200


def test_validation_details_are_bounded(default_limits_client: TestClient) -> None:
    """1,000 wrong items: one answer of a few kB (it was one detail per item). (100,000 are
    refused before validation: tests/service/test_hardening.py.)"""
    response = default_limits_client.post("/sentiment/batch", json={"texts": [1] * 1000})
    answer = assert_error(response, 422, "validation_error")
    assert len(answer["details"]) == 20
    assert answer["error"].endswith("; and 995 more (details lists the first 20 of 1,000)")
    assert len(response.content) < 5_000


# ---- CORS ----

ORIGIN, OTHER = "https://app.example", "https://evil.example"


def _preflight(
    client: TestClient, origin: str, method: str = "POST", headers: dict[str, str] | None = None
) -> Any:
    sent = {
        "origin": origin,
        "access-control-request-method": method,
        "access-control-request-headers": "content-type, authorization",
        **(headers or {}),
    }
    return client.options("/sentiment", headers=sent)


def test_cors_is_off_by_default(client: TestClient) -> None:
    simple = client.post("/sentiment", json={"text": "a film"}, headers={"origin": ORIGIN})
    assert simple.status_code == 200
    assert "access-control-allow-origin" not in simple.headers
    preflight = _preflight(client, ORIGIN)
    assert_error(preflight, 405, "method_not_allowed")
    assert not any(name.startswith("access-control-") for name in preflight.headers)


@pytest.fixture(scope="module")
def cors_client(make_settings: SettingsFactory) -> Iterator[TestClient]:
    with serve(make_settings(cors_origins=[ORIGIN])) as client:
        yield client


def test_cors_allows_the_configured_origins_only(cors_client: TestClient) -> None:
    preflight = _preflight(cors_client, ORIGIN)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    simple = cors_client.post("/sentiment", json={"text": "a film"}, headers={"origin": ORIGIN})
    assert simple.headers["access-control-allow-origin"] == ORIGIN
    other = cors_client.post("/sentiment", json={"text": "a film"}, headers={"origin": OTHER})
    assert "access-control-allow-origin" not in other.headers
    refused = _preflight(cors_client, OTHER)
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


def test_a_refused_preflight_is_the_error_envelope(cors_client: TestClient) -> None:
    refused = _preflight(cors_client, OTHER, headers={"x-request-id": "preflight-1"})
    body = assert_error(refused, 400, "bad_request")
    assert body["request_id"] == "preflight-1"
    assert body["error"] == f"CORS preflight refused: origin {OTHER!r} is not allowed"
    assert detail_fields(body) == ["Origin"]
    assert "access-control-allow-origin" not in refused.headers
    assert "Origin" in refused.headers["vary"]
    # an allowed origin asking for a method that is not allowed: that header is named
    wrong_method = _preflight(cors_client, ORIGIN, method="DELETE")
    body = assert_error(wrong_method, 400, "bad_request")
    assert "method 'DELETE' is not allowed (allowed: GET, POST)" in body["error"]
    assert detail_fields(body) == ["Access-Control-Request-Method"]
    # both at once, and a long origin is cut short in the message
    both = _preflight(cors_client, "https://" + "e" * 500, method="PUT")
    body = assert_error(both, 400, "bad_request")
    assert detail_fields(body) == ["Origin", "Access-Control-Request-Method"]
    assert len(body["error"]) < 300


# ---- error bodies ----


def test_error_bodies_never_show_a_traceback_or_a_path(
    make_settings: SettingsFactory,
    checkpoints: Checkpoints,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in a route and in the model (500s), a checkpoint that failed to load (/health/ready,
    /models, 503), a 404 on a path: no traceback, no file name of the code, no directory."""
    broken = shutil.copytree(checkpoints.path("sentiment"), tmp_path / "broken")
    with (broken / WEIGHTS).open("ab") as weights:
        weights.write(b"\0")
    settings = make_settings(models=["sentiment", f"broken={broken}"], allow_partial=True)
    app = create_app(settings)

    async def leaky() -> None:
        raise RuntimeError(f"cannot read {broken / WEIGHTS}")

    app.add_api_route("/leaky", leaky, methods=["GET"])
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)

        def model_bug(served: Any, items: Any) -> Any:
            raise OSError(2, "No such file or directory", str(checkpoints.root / WEIGHTS))

        monkeypatch.setitem(COMPUTE, SENTIMENT.name, model_bug)
        answers = [
            client.get("/leaky"),
            client.post("/sentiment", json={"text": "a film"}),
            client.get("/health/ready"),
            client.get("/models"),
            client.post("/sentiment", json={"text": "a film", "model": "broken"}),
            client.get(f"/{tmp_path}"),
            client.post(f"/{checkpoints.root}", json={}),
        ]
    assert [answer.status_code for answer in answers] == [500, 500, 200, 200, 503, 404, 404]
    for answer in answers:
        text = answer.text
        assert "Traceback" not in text and 'File "' not in text and ".py" not in text, text
        for directory in (tmp_path, checkpoints.root, ROOT):
            assert str(directory) not in text, text
