"""The fast path of POST /sentiment answers exactly as the route does, and leaves every request it
does not take (an error to report, a key to check, a field it does not know) to the route."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.fast import FastSentiment
from tests.service.conftest import SettingsFactory
from tests.service.support import serve

ACCEPTED = [
    {"text": "A wonderful, moving film with a superb cast."},
    {"text": "Dull and far too long.", "explain": True},
    {"text": "It was fine, I suppose.", "trajectory": True, "model": "sentiment"},
    {"text": "zzqx qqq"},  # unknown words
    {"text": "great " * 80},  # cut to the model's window
]
LEFT_TO_THE_ROUTE = [
    {"text": "   "},  # blank
    {"text": "x" * 501},  # over max_text_chars
    {"text": "fine", "explain": 1},  # not a boolean
    {"text": "fine", "modle": "sentiment"},  # unknown field: the route suggests `model`
    {"text": "fine", "model": "nope"},  # unknown model
    {"text": 5},
    ["a list"],
]


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bool]]:
    """Whether the fast path took each request, in order."""
    record: list[bool] = []
    original = FastSentiment._query

    def spy(self: FastSentiment, scope: Any) -> Any:
        query = original(self, scope)
        record.append(query is not None)
        return query

    monkeypatch.setattr(FastSentiment, "_query", spy)
    yield record


def _answers(client: TestClient, bodies: list[Any]) -> list[tuple[int, Any, str]]:
    out = []
    for body in bodies:
        response = client.post("/sentiment", json=body, headers={"x-request-id": "same"})
        out.append((response.status_code, response.json(), response.headers["content-type"]))
    return out


def test_the_fast_path_answers_as_the_route(
    client: TestClient, taken: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _answers(client, ACCEPTED + LEFT_TO_THE_ROUTE)
    assert taken == [True] * len(ACCEPTED) + [False] * len(LEFT_TO_THE_ROUTE)
    monkeypatch.setattr(FastSentiment, "_query", lambda self, scope: None)
    assert _answers(client, ACCEPTED + LEFT_TO_THE_ROUTE) == fast
    statuses = [status for status, _, _ in fast]
    assert statuses == [200] * len(ACCEPTED) + [422, 422, 422, 422, 404, 422, 422]


def test_with_an_api_key_only_the_right_key_is_taken(
    make_settings: SettingsFactory, taken: list[bool]
) -> None:
    with serve(make_settings(api_key="s3cret")) as client:
        body = {"text": "A fine film."}
        right = client.post("/sentiment", json=body, headers={"Authorization": "Bearer s3cret"})
        wrong = client.post("/sentiment", json=body, headers={"Authorization": "Bearer nope"})
        missing = client.post("/sentiment", json=body)
    assert right.status_code == 200
    assert (wrong.status_code, missing.status_code) == (401, 401)
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert taken == [True, False, False]
