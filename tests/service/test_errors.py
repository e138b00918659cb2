"""Every documented error status, each in the one envelope {error, error_type, request_id[,
details]} with the x-request-id header: invalid input, unknown models, oversized bodies, the API
key, readiness, overload and deadlines."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.service.conftest import CHAR_MAX_LENGTH, LM_MAX_LENGTH, SettingsFactory
from tests.service.support import (
    assert_error,
    detail_fields,
    engine_blocked,
    serve,
    state_of,
    wait_ready,
    wait_until,
)

# ---- 422 ----

INVALID_BODIES: list[tuple[str, Any, str]] = [
    ("/sentiment", {}, "text"),
    ("/sentiment", {"text": "a great film", "colour": "red"}, "colour"),
    ("/sentiment", {"text": 5}, "text"),
    ("/sentiment", {"text": ["a", "b"]}, "text"),
    ("/sentiment", {"text": "a great film", "explain": "maybe"}, "explain"),
    ("/sentiment", {"text": ""}, "text"),
    ("/sentiment", {"text": " \n\t "}, "text"),
    ("/sentiment", {"text": "film", "model": 7}, "model"),
    ("/sentiment", [1, 2], "body"),
    ("/sentiment/batch", {"texts": []}, "texts"),
    ("/sentiment/batch", {"texts": "a great film"}, "texts"),
    ("/sentiment/batch", {"texts": ["a great film", "   "]}, "texts"),
    ("/sentiment/batch", {"text": "a great film"}, "texts"),
    ("/next-word", {}, "text"),
    ("/next-word", {"text": "the", "top_k": 0}, "top_k"),
    ("/next-word", {"text": "the", "top_k": 21}, "top_k"),
    ("/next-word", {"text": "the", "top_k": "three"}, "top_k"),
    ("/next-word", {"text": "the", "stop": ["x"]}, "stop"),
    ("/generate", {}, "prompt"),
    ("/generate", {"prompt": ""}, "prompt"),
    ("/generate", {"prompt": "to", "max_new_tokens": 0}, "max_new_tokens"),
    ("/generate", {"prompt": "to", "max_new_tokens": 2001}, "max_new_tokens"),
    ("/generate", {"prompt": "to", "max_new_tokens": 2.5}, "max_new_tokens"),
    ("/generate", {"prompt": "to", "temperature": -0.1}, "temperature"),
    ("/generate", {"prompt": "to", "temperature": 5.5}, "temperature"),
    ("/generate", {"prompt": "to", "top_p": 0}, "top_p"),
    ("/generate", {"prompt": "to", "top_p": 1.5}, "top_p"),
    ("/generate", {"prompt": "to", "top_k": -1}, "top_k"),
    ("/generate", {"prompt": "to", "seed": -1}, "seed"),
    ("/generate", {"prompt": "to", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("/generate", {"prompt": "to", "stop": ["a", ""]}, "stop"),
    ("/generate", {"prompt": "to", "stop": ["x" * 65]}, "stop"),
    ("/generate", {"prompt": "to", "stop": "a"}, "stop"),
    ("/generate/stream", {"prompt": "to", "max_new_tokens": 0}, "max_new_tokens"),
]


@pytest.mark.parametrize(("path", "body", "field"), INVALID_BODIES)
def test_invalid_body_is_422_naming_the_field(
    client: TestClient, path: str, body: Any, field: str
) -> None:
    response = client.post(path, json=body)
    answer = assert_error(response, 422, "validation_error")
    assert field in detail_fields(answer)
    if field != "body":
        assert f"`{field}`" in answer["error"]


def test_nan_temperature_is_422(client: TestClient) -> None:
    response = client.post(
        "/generate",
        content=b'{"prompt":"a","temperature":NaN}',
        headers={"content-type": "application/json"},
    )
    answer = assert_error(response, 422, "validation_error")
    assert detail_fields(answer) == ["temperature"]
    assert "finite" in answer["error"]


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/sentiment", content=b'{"text": "a', headers={"content-type": "application/json"}
    )
    answer = assert_error(response, 422, "validation_error")
    assert "JSON" in answer["error"]


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/sentiment", {"text": "a" * 501}, "`text` has 501 characters; the limit is 500"),
        ("/next-word", {"text": "a" * 501}, "`text` has 501 characters; the limit is 500"),
        (
            "/sentiment/batch",
            {"texts": ["a great film", "b" * 501]},
            "`texts[1]` has 501 characters; the limit is 500",
        ),
        (
            "/sentiment/batch",
            {"texts": ["a", "b", "c", "d", "e"]},
            "`texts` has 5 items; the limit is 4",
        ),
        (
            "/generate",
            {"prompt": "t" * 1001},
            "`prompt` has 1,001 characters; the limit is 1,000",
        ),
        (
            "/generate",
            {"prompt": "t" * (CHAR_MAX_LENGTH + 1)},
            f"`prompt` has {CHAR_MAX_LENGTH + 1} tokens; the limit is {CHAR_MAX_LENGTH}",
        ),
        (
            "/generate",
            {"prompt": "the " * 100, "model": "next-word"},
            f"`prompt` has 100 tokens; the limit is {LM_MAX_LENGTH}",
        ),
    ],
)
def test_input_over_a_configured_limit_is_422_naming_the_limit(
    client: TestClient, path: str, body: dict[str, Any], message: str
) -> None:
    answer = assert_error(client.post(path, json=body), 422, "validation_error")
    assert answer["error"] == message
    field = message.split("`")[1]
    assert answer["details"] == [{"field": field, "message": message}]


def test_inputs_exactly_at_the_limits_are_accepted(client: TestClient) -> None:
    assert client.post("/sentiment", json={"text": "a" * 500}).status_code == 200
    assert client.post("/sentiment/batch", json={"texts": ["a"] * 4}).status_code == 200
    at_window = {"prompt": "t" * CHAR_MAX_LENGTH, "max_new_tokens": 1}
    assert client.post("/generate", json=at_window).status_code == 200
    words = {"prompt": "the " * LM_MAX_LENGTH, "model": "next-word", "max_new_tokens": 1}
    response = client.post("/generate", json=words)
    assert response.status_code == 200, response.text
    assert response.json()["prompt_tokens"] == LM_MAX_LENGTH


# ---- 404 ----


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/sentiment", {"text": "a film", "model": "nope"}, "'nope' is not loaded"),
        ("/sentiment/batch", {"texts": ["a film"], "model": "nope"}, "'nope' is not loaded"),
        ("/sentiment", {"text": "a film", "model": "next-word"}, "cannot serve sentiment"),
        ("/next-word", {"text": "the", "model": "generate"}, "cannot serve next-word"),
        ("/next-word", {"text": "the", "model": "sentiment"}, "cannot serve next-word"),
        ("/generate", {"prompt": "to", "model": "sentiment"}, "cannot serve generate"),
        ("/generate/stream", {"prompt": "to", "model": "nope"}, "'nope' is not loaded"),
    ],
)
def test_unknown_model_or_a_model_of_another_task_is_404(
    client: TestClient, path: str, body: dict[str, Any], words: str
) -> None:
    answer = assert_error(client.post(path, json=body), 404, "model_not_found")
    assert words in answer["error"]


def test_unknown_route_and_wrong_method_use_the_envelope(client: TestClient) -> None:
    assert_error(client.get("/no-such-route"), 404, "not_found")
    assert_error(client.get("/sentiment"), 405, "method_not_allowed")


# ---- 413 ----


def test_body_over_max_body_bytes_is_413(client: TestClient) -> None:
    declared = client.post("/sentiment", json={"text": "a " * 3000})
    answer = assert_error(declared, 413, "payload_too_large")
    assert answer["error"] == "request body is over the limit of 4,096 bytes"
    # no Content-Length (chunked): the limit is counted while the body is read
    streamed = client.post(
        "/sentiment",
        content=iter([b'{"text": "', b"a" * 3000, b"b" * 3000, b'"}']),
        headers={"content-type": "application/json"},
    )
    assert "content-length" not in streamed.request.headers
    assert_error(streamed, 413, "payload_too_large")


# ---- request ids ----


def test_a_valid_request_id_is_echoed_and_others_replaced(client: TestClient) -> None:
    ok = client.post("/sentiment", json={"text": "fine"}, headers={"x-request-id": "req-42.a:b"})
    assert ok.status_code == 200
    assert ok.headers["x-request-id"] == "req-42.a:b"
    failed = client.post("/sentiment", json={"text": ""}, headers={"x-request-id": "req-43"})
    assert assert_error(failed, 422, "validation_error")["request_id"] == "req-43"
    replaced = client.get("/health/live", headers={"x-request-id": "no spaces allowed"})
    generated = replaced.headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert client.get("/health/live").headers["x-request-id"] != generated


# ---- 401 ----


def test_api_key_guards_the_model_routes_only(make_settings: SettingsFactory) -> None:
    with serve(make_settings(api_key="s3cret")) as client:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}):
            response = client.post("/sentiment", json={"text": "a film"}, headers=headers)
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
        assert_error(client.post("/next-word", json={"text": "the"}), 401, "unauthorized")
        assert_error(client.post("/generate", json={"prompt": "to"}), 401, "unauthorized")
        good = {"authorization": "Bearer s3cret"}
        assert client.post("/sentiment", json={"text": "a film"}, headers=good).status_code == 200
        for path in ("/health/live", "/health/ready", "/metrics"):
            assert client.get(path).status_code == 200, path


# ---- 503 not ready, and the readiness transition ----


def test_not_ready_until_models_are_loaded(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings())
    registry = app.state.service.registry
    load_all, release = registry.load_all, threading.Event()

    def gated_load_all() -> Any:
        assert release.wait(30), "the test never released loading"
        return load_all()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "load_all", gated_load_all)
        with TestClient(app) as client:
            try:
                ready = client.get("/health/ready")
                assert ready.status_code == 503
                assert ready.json() == {"status": "loading", "models": {}}
                assert ready.headers["retry-after"] == "1"
                assert client.get("/health/live").status_code == 200
                for path, body in (
                    ("/sentiment", {"text": "a film"}),
                    ("/next-word", {"text": "the"}),
                    ("/generate", {"prompt": "to"}),
                ):
                    assert_error(client.post(path, json=body), 503, "not_ready")
            finally:
                release.set()
            wait_ready(client)
            assert client.post("/sentiment", json={"text": "a film"}).status_code == 200


# ---- 503 overloaded ----


def test_a_full_queue_answers_503_with_retry_after(make_settings: SettingsFactory) -> None:
    with serve(make_settings(max_queue=1)) as client:
        engine = state_of(client).engine
        body = {"text": "a great film"}
        with ThreadPoolExecutor(3) as pool, engine_blocked(engine):
            first = pool.submit(client.post, "/sentiment", json=body)
            wait_until(lambda: engine.pending("sentiment") == 1)
            # the queue holds one request: concurrent ones are turned away at once
            rejected = [pool.submit(client.post, "/sentiment", json=body) for _ in range(2)]
            for future in rejected:
                response = future.result(timeout=10)
                answer = assert_error(response, 503, "overloaded")
                assert response.headers["retry-after"] == "1"
                assert "queue is full" in answer["error"]
        assert first.result(timeout=10).status_code == 200
        metrics = state_of(client).metrics.registry
        labels = {"operation": "sentiment"}
        assert metrics.get_sample_value("lstm_serve_rejected_total", labels) == 2


def test_too_many_generations_answer_503_with_retry_after(make_settings: SettingsFactory) -> None:
    with serve(make_settings(max_active_generations=1, max_queue=1)) as client:
        state = state_of(client)
        scheduler = state.engine.local_worker().served["generate"].scheduler
        assert scheduler is not None
        body = {"prompt": "to", "max_new_tokens": 3, "seed": 1}
        with ThreadPoolExecutor(2) as pool, engine_blocked(state.engine):
            running = [pool.submit(client.post, "/generate", json=body) for _ in range(2)]
            wait_until(lambda: scheduler.active() == 2)
            response = client.post("/generate", json=body)
            assert_error(response, 503, "overloaded")
            assert response.headers["retry-after"] == "1"
        texts = {future.result(timeout=10).json()["text"] for future in running}
        assert len(texts) == 1  # same seed, same text


# ---- 504 ----


def test_past_the_deadline_is_504(make_settings: SettingsFactory) -> None:
    with serve(make_settings(request_timeout_s=0.2)) as client:
        engine = state_of(client).engine
        with engine_blocked(engine):
            for path, body in (
                ("/sentiment", {"text": "a film"}),
                ("/sentiment/batch", {"texts": ["a film", "a play"]}),
                ("/next-word", {"text": "the "}),
                ("/generate", {"prompt": "to"}),
            ):
                answer = assert_error(client.post(path, json=body), 504, "deadline_exceeded")
                assert "0.2 s" in answer["error"]
        # the engine kept nothing for the requests that gave up, and serves again
        wait_until(lambda: engine.pending("sentiment") == 0)
        assert client.post("/sentiment", json={"text": "a film"}).status_code == 200


def test_errors_never_leak_as_plain_text(client: TestClient) -> None:
    """A sample across routes: every non-2xx answer is the JSON envelope."""
    responses = [
        client.post("/sentiment", content=b"not json", headers={"content-type": "text/plain"}),
        client.put("/sentiment", json={"text": "x"}),
        client.post("/generate", json={"prompt": "to", "stream": True, "top_p": 0}),
    ]
    for response in responses:
        assert response.status_code >= 400
        assert_error(response, response.status_code, response.json()["error_type"])
