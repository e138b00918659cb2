"""The engine keeps serving after a model error: a failing batch fails only its own requests (500
with the request id), the next batch is computed as usual. Batches form while the engine is busy
and, with max_wait_ms, while it waits for a short queue to fill. (One engine on a thread here;
tests/service/test_engines.py runs engine processes.)"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from service import inference
from service.app import create_app, engine_count, usable_cores
from service.engine import SENTIMENT
from service.engine.client import _device
from service.engine.operations import SentimentQuery, SentimentResult
from service.engine.protocol import DeviceReport
from service.engine.worker import COMPUTE, Served
from tests.service.conftest import SettingsFactory
from tests.service.support import (
    assert_error,
    engine_blocked,
    serve,
    state_of,
    wait_ready,
    wait_until,
)


def _breaks_on(
    word: str,
) -> Callable[[Served, Sequence[SentimentQuery]], list[SentimentResult]]:
    """The sentiment operation's compute with a bug: any batch holding `word` raises."""

    def compute(served: Served, queries: Sequence[SentimentQuery]) -> list[SentimentResult]:
        if any(word in query.text for query in queries):
            raise RuntimeError("a bug in the model code")
        return inference.classify_texts(served.checkpoint, queries)

    return compute


def _batch_sizes(client: TestClient) -> tuple[float, float]:
    labels = {"operation": "sentiment:sentiment"}
    registry = state_of(client).metrics.registry
    count = registry.get_sample_value("lstm_serve_batch_size_count", labels) or 0.0
    total = registry.get_sample_value("lstm_serve_batch_size_sum", labels) or 0.0
    return count, total


def test_a_model_error_is_a_500_with_a_request_id_and_the_next_request_succeeds(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve(make_settings()) as client:
        good = client.post("/sentiment", json={"text": "a great film"})
        assert good.status_code == 200
        monkeypatch.setitem(COMPUTE, SENTIMENT.name, _breaks_on("boring"))
        failed = client.post(
            "/sentiment", json={"text": "a boring film"}, headers={"x-request-id": "bug-1"}
        )
        answer = assert_error(failed, 500, "internal_error")
        assert answer["request_id"] == "bug-1"
        again = client.post("/sentiment", json={"text": "a great film"})
        assert again.status_code == 200
        assert again.json() == good.json()
        assert client.post("/next-word", json={"text": "the "}).status_code == 200
        assert client.get("/health/ready").status_code == 200


def test_a_failing_batch_fails_only_the_request_that_breaks_it(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch is computed again one request at a time: only the one that breaks fails."""
    with serve(make_settings()) as client:
        monkeypatch.setitem(COMPUTE, SENTIMENT.name, _breaks_on("boring"))
        state = state_of(client)
        texts = ["a great film", "a boring film", "a superb cast"]
        with ThreadPoolExecutor(3) as pool, engine_blocked(state.engine):
            futures = [pool.submit(client.post, "/sentiment", json={"text": t}) for t in texts]
            wait_until(lambda: state.engine.pending("sentiment") == 3)
        statuses = [future.result().status_code for future in futures]
        assert statuses == [200, 500, 200]


def test_a_request_past_its_deadline_is_never_computed(
    make_settings: SettingsFactory,
) -> None:
    """A request whose deadline passes while the engine is held is never computed: 504."""
    with serve(make_settings(request_timeout_s=0.3)) as client:
        state = state_of(client)
        before = _batch_sizes(client)
        with engine_blocked(state.engine):
            late = client.post("/sentiment", json={"text": "a great film"})
        assert_error(late, 504, "deadline_exceeded")
        wait_until(lambda: state.engine.pending("sentiment") == 0)
        assert client.post("/sentiment", json={"text": "a dull plot"}).status_code == 200
        count, total = _batch_sizes(client)
        assert (count - before[0], total - before[1]) == (1, 1)  # only the second was computed


def test_a_wait_lets_a_batch_fill(make_settings: SettingsFactory) -> None:
    """With max_wait_ms, an idle engine holds a short queue that long for more requests: a
    request 50 ms after the first joins its batch (the wait is long, so a busy machine still
    gets the second request there in time)."""
    with serve(make_settings(max_wait_ms=1000.0)) as client:
        before = _batch_sizes(client)
        answers: list[int] = []

        def send(text: str) -> None:
            answers.append(client.post("/sentiment", json={"text": text}).status_code)

        first = threading.Thread(target=send, args=("a great film",))
        first.start()
        threading.Event().wait(0.05)
        send("a dull plot")
        first.join()
        assert answers == [200, 200]
        count, total = _batch_sizes(client)
        assert (count - before[0], total - before[1]) == (1, 2)


def test_an_unexpected_error_is_a_500_envelope_with_the_request_id(
    make_settings: SettingsFactory,
) -> None:
    """A bug outside the engine (here a route that raises) still answers the envelope."""
    app = create_app(make_settings())

    async def broken() -> None:
        raise RuntimeError("a bug in a route")

    app.add_api_route("/broken", broken, methods=["GET"])
    with TestClient(app, raise_server_exceptions=False) as client:
        wait_ready(client)
        response = client.get("/broken", headers={"x-request-id": "bug-2"})
        answer = assert_error(response, 500, "internal_error")
        assert answer["request_id"] == "bug-2"
        assert client.get("/health/live").status_code == 200


def test_engine_count_follows_the_setting_the_cores_or_the_gpus(
    make_settings: SettingsFactory,
) -> None:
    cpu = DeviceReport("cpu", 0)
    assert engine_count(make_settings(engines=3), cpu) == 3
    assert engine_count(make_settings(engines=0), cpu) == 0
    assert engine_count(make_settings(engines="auto"), cpu) == usable_cores() >= 1
    assert engine_count(make_settings(engines="auto"), DeviceReport("cuda:1", 4)) == 1
    assert engine_count(make_settings(engines="auto"), DeviceReport("cuda", 4)) == 4
    assert [_device("cuda", i, 2) for i in range(2)] == ["cuda:0", "cuda:1"]
    assert _device("cuda:1", 0, 1) == "cuda:1" and _device("cpu", 1, 2) == "cpu"
