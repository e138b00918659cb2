"""Sentiment says how much of a text it could not read: `unknown_tokens`, and an answer pulled
toward even when most of the text is outside the vocabulary (a Japanese sentence used to be
"negative 0.81")."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


def test_known_text_has_no_unknown_tokens(client: TestClient) -> None:
    answer = client.post("/sentiment", json={"text": "a great film"}).json()
    assert answer["unknown_tokens"] == 0


def test_text_the_model_cannot_read_is_answered_even(client: TestClient) -> None:
    answer = client.post("/sentiment", json={"text": "素晴らしい 映画 でした"}).json()
    assert answer["unknown_tokens"] == answer["tokens"] == 3
    assert answer["probabilities"] == {"negative": 0.5, "positive": 0.5}


def test_mostly_unknown_text_is_pulled_toward_even_in_proportion(client: TestClient) -> None:
    known = client.post("/sentiment", json={"text": "boring"}).json()["probabilities"]
    mixed = client.post("/sentiment", json={"text": "boring zzq qqz xxq"}).json()
    assert mixed["unknown_tokens"] == 3
    # a recurrent model reads the unknown tokens too: only the size of the pull is checked
    assert abs(mixed["probabilities"]["positive"] - 0.5) <= 0.25 + 1e-6
    assert known["negative"] != pytest.approx(0.5)
