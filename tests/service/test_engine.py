"""The engine keeps serving after a model error: a failing batch fails only its own requests (500
with a request id over HTTP), and the next request is answered."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeVar

import pytest
from fastapi.testclient import TestClient

from service import inference
from service.app import create_app
from service.engine import Engine
from service.errors import DeadlineExceeded, InferenceFailed, InvalidInput, Overloaded
from tests.service.conftest import SettingsFactory
from tests.service.support import assert_error, serve, state_of, wait_ready

T = TypeVar("T")


class Recorder:
    """Observer: every batch the engine computed, as (operation, size)."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int]] = []

    def batch(self, key: str, size: int, queue_s: float, compute_s: float) -> None:
        self.batches.append((key, size))


def _upper(items: Sequence[Any]) -> list[Any]:
    """Upper-cases each item; 'boom' breaks the whole batch, 'reject' only its own item."""
    if "boom" in items:
        raise RuntimeError("the model broke")
    if "invalid" in items:
        raise InvalidInput("text", "`text` is invalid")
    return [
        InvalidInput("text", "rejected") if item == "reject" else item.upper() for item in items
    ]


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = Engine(max_batch_size=8, max_queue=8, observer=Recorder())
    engine.register("upper", _upper)
    engine.start()
    yield engine
    engine.stop()


async def _held(engine: Engine, work: Callable[[], Awaitable[T]]) -> T:
    """Await `work()` while the inference thread is held by a waiting call, then release it."""
    started, release = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(10)

    held = asyncio.ensure_future(engine.call(hold))
    assert await asyncio.to_thread(started.wait, 5)
    try:
        return await work()
    finally:
        release.set()
        await held


async def _submit(engine: Engine, *payloads: str) -> list[Any]:
    """Submit the payloads while the inference thread is held, so that they form one batch."""

    async def queue() -> list[asyncio.Task[Any]]:
        tasks = [asyncio.ensure_future(engine.submit("upper", p, 5.0)) for p in payloads]
        while engine.pending("upper") < len(payloads):
            await asyncio.sleep(0.001)
        return tasks

    tasks = await _held(engine, queue)
    return list(await asyncio.gather(*tasks, return_exceptions=True))


def test_a_failing_batch_fails_only_the_request_that_breaks_it(engine: Engine) -> None:
    # the batch fails, then each request is computed alone: only "boom" fails
    failed = asyncio.run(_submit(engine, "boom", "fine"))
    assert type(failed[0]) is InferenceFailed and failed[1] == "FINE"
    assert asyncio.run(_submit(engine, "next", "one")) == ["NEXT", "ONE"]
    assert isinstance(engine.observer, Recorder)
    assert engine.observer.batches == [("upper", 2)]  # failed batches are not recorded


def test_an_item_level_error_fails_only_that_item(engine: Engine) -> None:
    results = asyncio.run(_submit(engine, "a", "reject", "b"))
    assert results[0] == "A" and results[2] == "B"
    assert isinstance(results[1], InvalidInput) and results[1].message == "rejected"


def test_a_service_error_from_the_handler_keeps_its_type(engine: Engine) -> None:
    (result,) = asyncio.run(_submit(engine, "invalid"))
    assert isinstance(result, InvalidInput)
    assert result.message == "`text` is invalid"


def test_calls_run_on_the_inference_thread(engine: Engine) -> None:
    name = asyncio.run(engine.call(lambda: threading.current_thread().name))
    assert name == "inference"
    with pytest.raises(ZeroDivisionError):
        asyncio.run(engine.call(lambda: 1 / 0))
    assert asyncio.run(engine.call(lambda: 42)) == 42


def test_a_full_queue_refuses_at_once(engine: Engine) -> None:
    async def work() -> tuple[list[asyncio.Task[Any]], Overloaded]:
        queued = [asyncio.ensure_future(engine.submit("upper", "x", 5)) for _ in range(8)]
        while engine.pending("upper") < 8:
            await asyncio.sleep(0.001)
        with pytest.raises(Overloaded) as refused:
            await engine.submit("upper", "y", 5)
        return queued, refused.value

    async def scenario() -> tuple[list[Any], Overloaded]:
        queued, refused = await _held(engine, work)
        return list(await asyncio.gather(*queued)), refused

    results, refused = asyncio.run(scenario())
    assert refused.retry_after >= 1
    assert "8 requests waiting" in refused.message
    assert results == ["X"] * 8


def test_a_request_past_its_deadline_is_never_computed(engine: Engine) -> None:
    async def work() -> None:
        with pytest.raises(DeadlineExceeded):
            await engine.submit("upper", "late", 0.05)

    asyncio.run(_held(engine, work))
    assert asyncio.run(engine.submit("upper", "next", 5)) == "NEXT"
    assert isinstance(engine.observer, Recorder)
    assert engine.observer.batches == [("upper", 1)]  # only 'next' was computed


# ---- over HTTP ----


def test_a_model_error_is_a_500_with_a_request_id_and_the_next_request_succeeds(
    make_settings: SettingsFactory,
) -> None:
    with serve(make_settings()) as client:
        state = state_of(client)
        checkpoint = state.registry.models["sentiment"].checkpoint
        boring = checkpoint.tokenizer.token_to_id("boring")

        def breaks_on_boring(reviews: Sequence[Any]) -> list[Any]:
            if any(boring in review.ids for review in reviews):
                raise RuntimeError("a bug in the model code")
            return list(inference.classify(checkpoint, reviews))

        good = client.post("/sentiment", json={"text": "a great film"})
        assert good.status_code == 200
        state.engine.register("sentiment:sentiment", breaks_on_boring)

        failed = client.post(
            "/sentiment", json={"text": "a boring film"}, headers={"x-request-id": "bug-1"}
        )
        answer = assert_error(failed, 500, "internal_error")
        assert answer["request_id"] == "bug-1"
        assert answer["details"] == []  # no field is at fault
        again = client.post("/sentiment", json={"text": "a great film"})
        assert again.status_code == 200
        assert again.json() == good.json()
        assert client.post("/next-word", json={"text": "the "}).status_code == 200
        assert client.get("/health/ready").status_code == 200


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


def test_an_idle_engine_computes_at_once_and_a_wait_lets_a_batch_fill() -> None:
    async def two_requests(engine: Engine) -> list[Any]:
        first = asyncio.ensure_future(engine.submit("upper", "a", 5))
        await asyncio.sleep(0.02)
        second = asyncio.ensure_future(engine.submit("upper", "b", 5))
        return list(await asyncio.gather(first, second))

    sizes = {}
    for wait in (0.0, 0.2):
        recorder = Recorder()
        engine = Engine(max_batch_size=8, max_wait_s=wait, observer=recorder)
        engine.register("upper", _upper)
        engine.start()
        try:
            assert asyncio.run(two_requests(engine)) == ["A", "B"]
        finally:
            engine.stop()
        sizes[wait] = [size for _, size in recorder.batches]
    assert sizes == {0.0: [1, 1], 0.2: [2]}
