"""An unknown field in a request body is answered with the nearest field the endpoint has."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api import errors
from service.api.field_hints import nearest
from service.schemas import (
    GenerateRequest,
    NextWordRequest,
    SentimentBatchRequest,
    SentimentRequest,
)

NEXT_WORD = list(NextWordRequest.model_fields)
GENERATE = list(GenerateRequest.model_fields)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    """The service's request schemas and error handlers, on routes that answer nothing else."""
    app = FastAPI()
    errors.install(app)

    @app.post("/next-word")
    async def next_word(body: NextWordRequest) -> dict[str, str]:
        return {}

    @app.post("/generate")
    async def generate(body: GenerateRequest) -> dict[str, str]:
        return {}

    @app.post("/sentiment")
    async def sentiment(body: SentimentRequest) -> dict[str, str]:
        return {}

    @app.post("/sentiment/batch")
    async def batch(body: SentimentBatchRequest) -> dict[str, str]:
        return {}

    with TestClient(app) as client:
        yield client


@pytest.mark.parametrize(
    ("name", "known", "meant"),
    [
        ("k", NEXT_WORD, "top_k"),  # a part of the field's name
        ("top-k", NEXT_WORD, "top_k"),  # the same name spelled otherwise
        ("topK", GENERATE, "top_k"),
        ("p", GENERATE, "top_p"),
        ("temp", GENERATE, "temperature"),  # the start of it
        ("max_tokens", GENERATE, "max_new_tokens"),  # close in spelling
        ("tempreature", GENERATE, "temperature"),
        ("prompt", NEXT_WORD, "text"),  # the same meaning in another API
        ("text", GENERATE, "prompt"),
        ("texts", list(SentimentRequest.model_fields), "text"),
        ("text", list(SentimentBatchRequest.model_fields), "texts"),
        ("colour", NEXT_WORD, None),
        ("", NEXT_WORD, None),
        ("__", NEXT_WORD, None),
    ],
)
def test_the_nearest_known_field(name: str, known: list[str], meant: str | None) -> None:
    assert nearest(name, known) == meant


def test_k_for_top_k_gets_a_hint_naming_top_k(client: TestClient) -> None:
    response = client.post("/next-word", json={"text": "The history of the ", "k": 10})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "`k`: unknown field; did you mean `top_k`? (got 10)"
    assert body["details"] == [{"field": "k", "message": "unknown field; did you mean `top_k`?"}]


def test_a_field_near_none_lists_the_fields(client: TestClient) -> None:
    response = client.post("/generate", json={"prompt": "ROMEO:", "colour": "red"})
    assert response.status_code == 422
    fields = ", ".join(f"`{name}`" for name in GENERATE)
    assert response.json()["details"] == [
        {"field": "colour", "message": f"unknown field; the fields are {fields}"}
    ]


def test_every_unknown_field_is_named(client: TestClient) -> None:
    response = client.post("/sentiment", json={"txt": "Great.", "explian": True})
    assert response.status_code == 422
    assert [d["message"] for d in response.json()["details"]] == [
        "Field required",
        "unknown field; did you mean `text`?",
        "unknown field; did you mean `explain`?",
    ]


def test_other_validation_errors_keep_their_message(client: TestClient) -> None:
    response = client.post("/next-word", json={"text": "a", "top_k": 50})
    assert response.json()["details"] == [
        {"field": "top_k", "message": "Input should be less than or equal to 20"}
    ]
