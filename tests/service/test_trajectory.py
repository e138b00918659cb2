"""`trajectory: true` on POST /sentiment: the probabilities after up to 64 evenly spaced prefixes,
each the model's own answer for that prefix, the last one the response's answer."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from models.architectures import SequenceClassifier
from models.checkpoint import save_checkpoint
from models.config import ClassifierConfig
from models.format import CheckpointConfig
from models.tokenizers import fit_word_tokenizer
from service.inference import TRAJECTORY_POINTS, prefix_lengths
from tests.service.conftest import REVIEWS, SENTIMENT_MAX_LENGTH, SettingsFactory
from tests.service.support import serve

SHORT = "A great film with a superb cast !"  # 8 tokens
LONG_MAX_LENGTH = 512


def _sentiment(client: TestClient, text: str, **fields: Any) -> dict[str, Any]:
    response = client.post("/sentiment", json={"text": text, "trajectory": True, **fields})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _close(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal up to the 6-digit rounding and the float noise of a different batch."""
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 2e-6 for k in a)


@pytest.fixture(scope="module")
def long_client(
    make_settings: SettingsFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """A service with a second sentiment model whose window (512 tokens) exceeds 64 points."""
    directory = tmp_path_factory.mktemp("long") / "long"
    torch.manual_seed(1)
    words = fit_word_tokenizer(REVIEWS, "text")
    model = SequenceClassifier(
        ClassifierConfig(vocab_size=words.vocab_size, embed_dim=8, hidden_dim=8, cell="gru")
    )
    config = CheckpointConfig(
        task="sentiment",
        model=model.config,
        tokenizer="word",
        max_length=LONG_MAX_LENGTH,
        labels=("negative", "positive"),
        head_tokens=64,
    )
    save_checkpoint(directory, model, config, words, {"metrics": {"test": {}}})
    with serve(make_settings(models=[f"long={directory}"], max_text_chars=5000)) as client:
        yield client


def test_off_by_default(client: TestClient) -> None:
    answer = client.post("/sentiment", json={"text": SHORT}).json()
    assert answer["trajectory"] is None


def test_a_short_text_has_a_point_after_every_token(client: TestClient) -> None:
    answer = _sentiment(client, SHORT)
    points = answer["trajectory"]
    assert [p["tokens"] for p in points] == list(range(1, answer["tokens"] + 1))
    assert answer["tokens"] == 8 < TRAJECTORY_POINTS
    assert [p["end"] for p in points] == [1, 7, 12, 17, 19, 26, 31, 33]
    for point in points:
        assert set(point["probabilities"]) == {"negative", "positive"}
        assert all(0 <= p <= 1 for p in point["probabilities"].values())
        assert abs(sum(point["probabilities"].values()) - 1) <= 2e-6


def test_the_last_point_is_the_answer(client: TestClient) -> None:
    answer = _sentiment(client, SHORT)
    last = answer["trajectory"][-1]
    assert last["probabilities"] == answer["probabilities"]
    assert (last["tokens"], last["end"]) == (answer["tokens"], len(SHORT))


def test_each_point_is_the_models_answer_for_that_prefix(client: TestClient) -> None:
    answer = _sentiment(client, SHORT)
    for point in answer["trajectory"]:
        alone = client.post("/sentiment", json={"text": SHORT[: point["end"]]}).json()
        assert alone["tokens"] == point["tokens"]
        assert _close(alone["probabilities"], point["probabilities"]), (point, alone)


def test_works_with_explain(client: TestClient) -> None:
    answer = _sentiment(client, SHORT, explain=True)
    assert len(answer["explanation"]) == len(answer["trajectory"]) == answer["tokens"]
    assert answer["trajectory"][-1]["probabilities"] == answer["probabilities"]


def test_a_truncated_text_follows_the_tokens_read(client: TestClient) -> None:
    text = " ".join(["great"] * 10 + ["dull"] * 20)  # 30 tokens; the window keeps 4 + the last 12
    answer = _sentiment(client, text)
    assert answer["truncated"] and answer["tokens"] == SENTIMENT_MAX_LENGTH
    points = answer["trajectory"]
    assert [p["tokens"] for p in points] == list(range(1, SENTIMENT_MAX_LENGTH + 1))
    ends = [p["end"] for p in points]
    assert ends[3] == len("great great great great")
    assert ends[4] == len(" ".join(["great"] * 10 + ["dull"] * 9))  # the first token of the end
    assert ends[-1] == len(text)
    assert points[-1]["probabilities"] == answer["probabilities"]


def test_a_long_text_has_64_evenly_spaced_points(long_client: TestClient) -> None:
    text = " ".join(REVIEWS * 6)  # about 200 tokens
    answer = _sentiment(long_client, text)
    tokens = [p["tokens"] for p in answer["trajectory"]]
    assert len(tokens) == TRAJECTORY_POINTS < answer["tokens"] <= LONG_MAX_LENGTH
    assert tokens[-1] == answer["tokens"]
    steps = {b - a for a, b in itertools.pairwise(tokens)}
    assert steps <= {answer["tokens"] // 64, answer["tokens"] // 64 + 1}
    assert answer["trajectory"][-1]["probabilities"] == answer["probabilities"]
    middle = answer["trajectory"][31]
    alone = long_client.post("/sentiment", json={"text": text[: middle["end"]]}).json()
    assert alone["tokens"] == middle["tokens"]
    assert _close(alone["probabilities"], middle["probabilities"])


@pytest.mark.parametrize("tokens", [1, 2, 63, 64, 65, 100, 128, 511, 512])
def test_prefix_lengths(tokens: int) -> None:
    lengths = prefix_lengths(tokens)
    assert len(lengths) == min(tokens, TRAJECTORY_POINTS)
    assert lengths[0] >= 1 and lengths[-1] == tokens
    assert all(a < b for a, b in itertools.pairwise(lengths))


def test_the_field_is_documented(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    request = schemas["SentimentRequest"]["properties"]["trajectory"]
    assert request["default"] is False and "64" in request["description"]
    response = schemas["SentimentResponse"]["properties"]["trajectory"]
    assert "equals `probabilities`" in response["description"]
    assert "trajectory" not in schemas["SentimentBatchRequest"]["properties"]
