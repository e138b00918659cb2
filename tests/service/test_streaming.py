"""Server-Sent Events: token frames add up to the final frame's text; validation errors come back
before any stream starts; a client that disconnects (over a real socket) stops its generation."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.engine.operations import Event, FinishEvent, TokenEvent
from service.engine.worker import Worker
from service.generation import GenerationRequest, GenerationScheduler
from tests.service.conftest import SettingsFactory
from tests.service.support import (
    assert_error,
    parse_sse,
    running_server,
    wait_ready,
    wait_until,
)


def _check_stream(events: list[tuple[str, dict[str, Any]]], max_new_tokens: int) -> dict[str, Any]:
    """Tokens first, one `done` last; token texts concatenate to the final text."""
    names = [name for name, _ in events]
    assert names[-1] == "done"
    assert set(names[:-1]) <= {"token"}
    tokens = [data for name, data in events if name == "token"]
    assert [t["index"] for t in tokens] == sorted(t["index"] for t in tokens)
    done = events[-1][1]
    assert "".join(t["text"] for t in tokens) == done["text"]
    assert set(done) >= {"text", "tokens", "finish_reason", "seed"}
    assert done["tokens"] <= max_new_tokens
    return done


@pytest.mark.parametrize(
    ("path", "extra"), [("/generate/stream", {}), ("/generate", {"stream": True})]
)
def test_stream_frames_add_up_to_the_final_text(
    client: TestClient, path: str, extra: dict[str, Any]
) -> None:
    body = {"prompt": "to be", "max_new_tokens": 25, "seed": 11, **extra}
    response = client.post(path, json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert len(response.headers["x-request-id"]) == 32
    done = _check_stream(parse_sse(response.text), 25)
    assert done["tokens"] == 25
    assert done["finish_reason"] == "length"
    assert done["seed"] == 11
    # the same generation, answered as JSON
    plain = client.post("/generate", json={**body, "stream": False}).json()
    assert plain == done


def test_streamed_stop_sequence_is_never_sent(client: TestClient) -> None:
    full = client.post("/generate", json={"prompt": "to", "max_new_tokens": 60, "seed": 8})
    text = full.json()["text"]
    stop = text[30:33]
    body = {"prompt": "to", "max_new_tokens": 60, "seed": 8, "stop": [stop]}
    events = parse_sse(client.post("/generate/stream", json=body).text)
    done = _check_stream(events, 60)
    assert done["finish_reason"] == "stop_sequence"
    assert done["text"] == text[: text.find(stop)]
    assert all(stop not in data["text"] for _, data in events)


def test_stream_without_a_seed_reports_the_drawn_one(client: TestClient) -> None:
    body = {"prompt": "to be", "max_new_tokens": 10, "temperature": 1.2}
    first = _check_stream(parse_sse(client.post("/generate/stream", json=body).text), 10)
    again = client.post("/generate", json={**body, "seed": first["seed"]}).json()
    assert again["text"] == first["text"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/generate", {"prompt": "to", "stream": True, "max_new_tokens": 0}),
        ("/generate", {"prompt": "to", "stream": True, "stop": [""]}),
        ("/generate/stream", {"prompt": "", "max_new_tokens": 5}),
        ("/generate/stream", {"prompt": "t" * 1001}),  # over max_prompt_chars: a service check
    ],
)
def test_validation_error_with_stream_is_a_plain_422(
    client: TestClient, path: str, body: dict[str, Any]
) -> None:
    response = client.post(path, json=body)
    assert_error(response, 422, "validation_error")


# ---- a real server, so that the disconnect is a real one ----


@dataclass
class Spy:
    """The requests submitted to a scheduler and every event it emitted for them. Once token
    `pause_after` has been sent, the engine is held before its next step (it still reads its
    messages, a cancellation among them): the generation is frozen mid-way, whatever the speed
    of this machine, until the engine is released."""

    pause_after: int
    requests: list[GenerationRequest] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    paused: threading.Event = field(default_factory=threading.Event)
    skip_forward: bool = False  # the turn that paused samples nothing, so it advances nothing


def _spy_on(worker: Worker, scheduler: GenerationScheduler, patch: pytest.MonkeyPatch) -> Spy:
    spy, submit = Spy(pause_after=1), scheduler.submit
    sample, forward = scheduler.sample, scheduler.forward

    def recording_submit(request: GenerationRequest) -> None:
        emit = request.emit

        def recording_emit(event: Event) -> None:
            spy.events.append(event)
            emit(event)

        request.emit = recording_emit
        spy.requests.append(request)
        submit(request)

    def pausing_sample(joined_sent: Callable[[], None] | None = None) -> None:
        tokens = sum(1 for e in spy.events if isinstance(e, TokenEvent))
        if tokens > spy.pause_after and not spy.paused.is_set():
            worker.held = True  # as a "hold" message would: the next turn computes nothing
            spy.paused.set()
            spy.skip_forward = True
            return
        sample(joined_sent)

    def pausing_forward() -> None:
        if spy.skip_forward:
            spy.skip_forward = False
            return
        forward()

    patch.setattr(scheduler, "submit", recording_submit)
    patch.setattr(scheduler, "sample", pausing_sample)
    patch.setattr(scheduler, "forward", pausing_forward)
    return spy


def test_a_client_that_disconnects_stops_its_generation(make_settings: SettingsFactory) -> None:
    app = create_app(make_settings())
    state = app.state.service
    with running_server(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        wait_ready(http)
        worker = state.engine.local_worker()
        scheduler = worker.served["generate"].scheduler
        with pytest.MonkeyPatch.context() as patch:
            spy = _spy_on(worker, scheduler, patch)
            try:
                body = {"prompt": "to be", "max_new_tokens": 2000, "seed": 1}
                with http.stream("POST", "/generate/stream", json=body) as response:
                    assert response.status_code == 200
                    seen = 0
                    for line in response.iter_lines():
                        seen += line == "event: token"
                        if seen == 2:
                            break
                    assert seen == 2
                    wait_until(spy.paused.is_set, 5, "the engine to pause")
                # the response is closed mid-stream: the server must notice and cancel
                (request,) = spy.requests
                wait_until(request.cancelled.is_set, 5, "the server to notice the disconnect")
                assert scheduler.active() == 1  # frozen after its second token
            finally:
                state.engine.control("release")
            wait_until(lambda: scheduler.active() == 0, 5, "the generation to stop")
        finishes = [e for e in spy.events if isinstance(e, FinishEvent)]
        assert finishes == [FinishEvent(finishes[0].text, 2, "cancelled")]
        tokens = [e for e in spy.events if isinstance(e, TokenEvent)]
        assert [t.index for t in tokens] == [0, 1]
        assert finishes[0].text == tokens[0].text + tokens[1].text
        # the service goes on serving
        answer = http.post("/generate", json={"prompt": "to", "max_new_tokens": 3})
        assert answer.status_code == 200


def test_each_token_is_sent_before_the_next_cell_step(make_settings: SettingsFactory) -> None:
    """A sampled token leaves the engine before the step that reads it: with that step held,
    the client already has the token (time to first token is the prompt's read, not one more
    step of every running sequence)."""
    app = create_app(make_settings())
    state = app.state.service
    with running_server(app) as url, httpx.Client(base_url=url, timeout=3) as http:
        wait_ready(http)
        scheduler = state.engine.local_worker().served["generate"].scheduler
        release, forward = threading.Event(), scheduler.forward

        def held_forward() -> None:
            release.wait(10)
            forward()

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(scheduler, "forward", held_forward)
            try:
                body = {"prompt": "to be", "max_new_tokens": 3, "seed": 1}
                with http.stream("POST", "/generate/stream", json=body) as response:
                    events = (line for line in response.iter_lines() if line.startswith("event:"))
                    assert next(events) == "event: token"  # read within 3 s, the step held
            finally:
                release.set()
