"""A generation that reaches its deadline ends with the text so far and finish_reason
"time_limit", streamed or not (a 2,000-token answer on a busy machine used to be a 504 that lost
everything generated)."""

from __future__ import annotations

import time

import pytest

from tests.service.conftest import SettingsFactory
from tests.service.support import parse_sse, serve, state_of


def _slow_steps(client: object, patch: pytest.MonkeyPatch) -> None:
    """Each generation step takes 20 ms more: a slow machine, whatever this one's speed."""
    scheduler = state_of(client).engine.local_worker().served["generate"].scheduler  # type: ignore[arg-type]
    assert scheduler is not None
    forward = scheduler.forward

    def slow_forward() -> None:
        time.sleep(0.02)
        forward()

    patch.setattr(scheduler, "forward", slow_forward)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_generation_past_its_deadline_keeps_its_text(
    make_settings: SettingsFactory, stream: bool
) -> None:
    settings = make_settings(request_timeout_s=0.5, stream_timeout_s=0.5)
    with serve(settings) as client, pytest.MonkeyPatch.context() as patch:
        _slow_steps(client, patch)
        body = {"prompt": "to be", "max_new_tokens": 2000, "seed": 1, "stream": stream}
        response = client.post("/generate", json=body)
        assert response.status_code == 200, response.text
        if stream:
            events = parse_sse(response.text)
            assert events[-1][0] == "done"
            answer = events[-1][1]
            assert answer["text"] == "".join(data["text"] for _, data in events[:-1])
        else:
            answer = response.json()
        assert answer["finish_reason"] == "time_limit"
        assert 0 < answer["tokens"] < 2000
        assert len(answer["text"]) == answer["tokens"]  # a character model: one per token
