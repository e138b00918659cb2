"""Overload: when a model's queue is full, requests are refused at once with 503 and Retry-After,
before any work is spent on them; every request gets an answer, health checks keep answering, and
the service serves normally as soon as the queue drains. (Throughput and latency under real
overload are measured by bench/overload.py, not here.)"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from service.app import create_app
from tests.service.conftest import SettingsFactory
from tests.service.support import (
    assert_error,
    engine_blocked,
    running_server,
    serve,
    state_of,
    wait_ready,
    wait_until,
)


def test_a_full_queue_refuses_before_reading_the_request(make_settings: SettingsFactory) -> None:
    with serve(make_settings(max_queue=1)) as client:
        engine = state_of(client).engine
        with ThreadPoolExecutor(2) as pool, engine_blocked(engine):
            queued = pool.submit(client.post, "/sentiment", json={"text": "a great film"})
            wait_until(lambda: engine.pending("sentiment") == 1)
            # not even validated: the answer is the same 503 whatever the body says
            for body in ({"text": "fine"}, {"txt": 5}, {"texts": ["one", "two"]}):
                path = "/sentiment/batch" if "texts" in body else "/sentiment"
                response = client.post(path, json=body)
                answer = assert_error(response, 503, "overloaded")
                assert response.headers["retry-after"] == "1"
                assert answer["error"] == (
                    "the sentiment queue is full (1 requests waiting on 1 engine); retry later"
                )
            # another operation, with room in its queue, is not refused
            other = pool.submit(client.post, "/next-word", json={"text": "the"})
            wait_until(lambda: engine.pending("next-word") == 1)
            assert client.get("/health/live").status_code == 200
        assert queued.result(timeout=10).status_code == 200
        assert other.result(timeout=10).status_code == 200
        metrics = state_of(client).metrics.registry
        assert (
            metrics.get_sample_value("lstm_serve_rejected_total", {"operation": "sentiment"}) == 3
        )
        assert (
            metrics.get_sample_value(
                "lstm_serve_requests_total",
                {"route": "/sentiment", "method": "POST", "status": "503"},
            )
            == 2
        )


def test_a_burst_over_capacity_is_answered_in_full(make_settings: SettingsFactory) -> None:
    """A real server, its inference held: of 60 concurrent requests the 4 that fit in the queue
    wait, every other one is refused at once with Retry-After, /health/live keeps answering, and
    once the model runs again the queued ones and new ones are answered normally."""
    app = create_app(make_settings(max_queue=4))
    with running_server(app) as base:
        with httpx.Client(base_url=base) as client:
            wait_ready(client)
        engine = app.state.service.engine

        async def burst() -> tuple[list[httpx.Response], list[float]]:
            limits = httpx.Limits(max_connections=100)
            async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
                with engine_blocked(engine):
                    tasks = [
                        asyncio.create_task(client.post("/sentiment", json={"text": f"film {i}"}))
                        for i in range(60)
                    ]
                    started = time.perf_counter()
                    while sum(t.done() for t in tasks) < 56:
                        await asyncio.sleep(0.01)
                        assert time.perf_counter() - started < 10, "refusals did not arrive"
                    live = []
                    for _ in range(5):
                        before = time.perf_counter()
                        assert (await client.get("/health/live")).status_code == 200
                        live.append(time.perf_counter() - before)
                    assert engine.pending("sentiment") == 4  # still held
                answers = await asyncio.gather(*tasks)
            return answers, live

        answers, live = asyncio.run(burst())
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [200] * 4 + [503] * 56
        for response in answers:
            if response.status_code == 503:
                assert_error(response, 503, "overloaded")
                assert int(response.headers["retry-after"]) >= 1
            else:
                assert response.json()["label"] in {"positive", "negative"}
        # generous bounds for a loaded CI machine; a refusal that waited for the model would
        # have taken until the engine was released
        assert max(live) < 1.0, live
        with httpx.Client(base_url=base) as client:
            assert client.post("/sentiment", json={"text": "after"}).status_code == 200


def test_a_short_soak_answers_every_request_and_stays_within_its_bounds(
    make_settings: SettingsFactory,
) -> None:
    """bench/soak.py scaled down: a mix of all three models from 16 concurrent clients on a real
    server. Every request is answered 200, and what grows with traffic stays within its bounds:
    the prefix caches by bytes, the queues and the active generations drain to zero."""
    app = create_app(make_settings())
    words = ["the", "history", "of", "a", "city", "and", "the", "war", "in", "art"]

    def body(i: int) -> tuple[str, dict[str, object]]:
        text = " ".join(words[(i * 7 + k) % len(words)] for k in range(3 + i % 9)) + " "
        if i % 10 == 0:
            return "/generate", {"prompt": f"to be {i}", "max_new_tokens": 12, "seed": i}
        if i % 3 == 0:
            return "/sentiment", {"text": f"a great film {text}"}
        return "/next-word", {"text": f"{text}{i} "}

    with running_server(app) as base:
        with httpx.Client(base_url=base) as client:
            wait_ready(client)
        state = app.state.service
        caches = [
            state.engine.local_worker().served[name].cache for name in ("next-word", "generate")
        ]
        for cache in caches:  # a budget the traffic below overflows many times
            cache.max_bytes = 2_000

        async def clients() -> list[int]:
            limits = httpx.Limits(max_connections=16)
            async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:

                async def one(worker: int) -> list[int]:
                    statuses = []
                    for i in range(worker, 600, 16):
                        path, json = body(i)
                        statuses.append((await client.post(path, json=json)).status_code)
                    return statuses

                return [s for batch in await asyncio.gather(*map(one, range(16))) for s in batch]

        statuses = asyncio.run(clients())
        assert statuses == [200] * 600
        # 60 prompts and 360 next-word texts, all different, were read: most entries were evicted
        for cache, distinct in zip(caches, (360, 60), strict=True):
            assert 0 < cache.bytes <= 2_000
            assert 0 < len(cache) < distinct / 3
        wait_until(lambda: state.engine.local_worker().served["generate"].scheduler.active() == 0)
        assert state.engine.pending("sentiment") == state.engine.pending("next-word") == 0
        assert state.engine.generating() == 0
