"""Every endpoint answers with its documented shape and exact behaviour (tiny random-weight models:
the tests assert what the service guarantees, not what a trained model would say)."""

from __future__ import annotations

import dataclasses
import math
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from models.checkpoint import load_checkpoint, save_checkpoint
from tests.service.conftest import (
    CORPUS,
    LM_MAX_LENGTH,
    SENTIMENT_HEAD_TOKENS,
    SENTIMENT_MAX_LENGTH,
    Checkpoints,
    SettingsFactory,
)
from tests.service.support import engine_blocked, serve, state_of, wait_until

# ---- sentiment ----


def _sentiment(client: TestClient, text: str, **extra: Any) -> dict[str, Any]:
    response = client.post("/sentiment", json={"text": text, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_sentiment_answers_a_label_with_its_probability(client: TestClient) -> None:
    body = _sentiment(client, "A great film with a superb cast!")
    assert body["label"] in ("negative", "positive")
    assert set(body["probabilities"]) == {"negative", "positive"}
    assert body["score"] == max(body["probabilities"].values())
    assert body["score"] == body["probabilities"][body["label"]]
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert body["truncated"] is False
    assert body["tokens"] == body["total_tokens"] == 8
    assert body["explanation"] is None
    assert body["model"] == "sentiment"
    assert len(body["model_version"]) == 12


def test_a_text_over_the_window_is_truncated_to_max_length(client: TestClient) -> None:
    words = [f"w{i}" for i in range(40)]  # out of vocabulary, one token each
    text = " ".join(words)
    body = _sentiment(client, text, explain=True)
    assert body["truncated"] is True
    assert body["tokens"] == SENTIMENT_MAX_LENGTH
    assert body["total_tokens"] == 40
    # the window keeps the first head_tokens and the end of the text
    kept = (
        words[:SENTIMENT_HEAD_TOKENS] + words[40 - (SENTIMENT_MAX_LENGTH - SENTIMENT_HEAD_TOKENS) :]
    )
    read = [text[entry["start"] : entry["end"]] for entry in body["explanation"]]
    assert read == kept


def test_explanation_gives_each_token_with_its_character_offsets(client: TestClient) -> None:
    text = "A GREAT film, with a superb zebra cast!"
    body = _sentiment(client, text, explain=True)
    explanation = body["explanation"]
    assert len(explanation) == body["tokens"] == 10
    tokens = [entry["token"] for entry in explanation]
    expected = ["a", "great", "film", ",", "with", "a", "superb", "<unk>", "cast", "!"]
    assert tokens == expected
    for entry in explanation:
        assert set(entry) == {"token", "start", "end", "contribution"}
        assert 0 <= entry["start"] < entry["end"] <= len(text)
        if entry["token"] != "<unk>":
            assert text[entry["start"] : entry["end"]].lower() == entry["token"]
    unknown = explanation[tokens.index("<unk>")]
    assert text[unknown["start"] : unknown["end"]] == "zebra"
    # the explanation changes nothing in the answer itself
    plain = _sentiment(client, text)
    assert plain["probabilities"] == body["probabilities"]


def test_batch_results_equal_single_answers_computed_in_one_forward_pass(
    client: TestClient,
) -> None:
    texts = [
        "A great film",
        "An awful, boring film with a dull plot and a terrible ending.",
        "The cast",
        "moving",
    ]
    singles = [_sentiment(client, text) for text in texts]
    state = state_of(client)
    registry = state.metrics.registry
    labels = {"operation": "sentiment:sentiment"}
    batches_before = registry.get_sample_value("lstm_serve_batch_size_count", labels) or 0.0
    items_before = registry.get_sample_value("lstm_serve_batch_size_sum", labels) or 0.0
    # hold the inference thread until all four texts wait in the queue: they become one batch
    with ThreadPoolExecutor(1) as pool, engine_blocked(state.engine):
        future = pool.submit(client.post, "/sentiment/batch", json={"texts": texts})
        wait_until(lambda: state.engine.pending("sentiment") == len(texts))
    response = future.result(timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "sentiment"
    assert registry.get_sample_value("lstm_serve_batch_size_count", labels) == batches_before + 1
    assert registry.get_sample_value("lstm_serve_batch_size_sum", labels) == items_before + 4
    assert len(body["results"]) == len(texts)
    for single, batched in zip(singles, body["results"], strict=True):
        assert batched["label"] == single["label"]
        for label, probability in single["probabilities"].items():
            assert batched["probabilities"][label] == pytest.approx(probability, abs=1e-5)
        assert batched["score"] == pytest.approx(single["score"], abs=1e-5)
        assert (batched["tokens"], batched["truncated"]) == (single["tokens"], single["truncated"])


# ---- next word ----


def _next_word(client: TestClient, text: str, **extra: Any) -> dict[str, Any]:
    response = client.post("/next-word", json={"text": text, **extra})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


VOCABULARY = sorted({word for line in CORPUS for word in line.split()})


def test_next_word_suggests_three_words_by_default(client: TestClient) -> None:
    body = _next_word(client, "the history of ")
    words = [s["word"] for s in body["suggestions"]]
    probabilities = [s["probability"] for s in body["suggestions"]]
    assert len(words) == 3 and len(set(words)) == 3
    assert set(words) <= set(VOCABULARY)
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0 < p <= 1 for p in probabilities)
    assert body["completing"] is False
    assert body["prefix"] is None
    assert body["context_tokens"] == 3
    assert body["truncated"] is False
    assert body["unknown_words"] == 0
    assert body["model"] == "next-word"


def test_a_text_over_the_window_reads_its_last_words_and_says_so(client: TestClient) -> None:
    """The model reads the last max_length words; the answer says the start was dropped, and is
    the answer to those last words alone. The word being typed is not context and never counts."""
    words = ("the history of the war " * LM_MAX_LENGTH).split()
    last = " ".join(words[-LM_MAX_LENGTH:]) + " "
    over = _next_word(client, "xyzzy " + last, top_k=20)
    assert over["truncated"] is True
    assert over["context_tokens"] == LM_MAX_LENGTH
    assert over["unknown_words"] == 0  # the dropped unknown word is not read
    alone = _next_word(client, last, top_k=20)
    assert alone["truncated"] is False
    assert alone["context_tokens"] == LM_MAX_LENGTH
    _same_suggestions(over, alone)
    typing = _next_word(client, last + "hist")
    assert typing["completing"] is True
    assert (typing["truncated"], typing["context_tokens"]) == (False, LM_MAX_LENGTH)


def test_next_word_honours_top_k(client: TestClient) -> None:
    five = _next_word(client, "the history of ", top_k=5)["suggestions"]
    assert len(five) == 5
    three = _next_word(client, "the history of ")["suggestions"]
    assert five[:3] == three
    # more than the vocabulary holds: every word once, never <unk> or <eos>
    every = _next_word(client, "the history of ", top_k=20)["suggestions"]
    assert sorted(s["word"] for s in every) == VOCABULARY


@pytest.mark.parametrize("text", ["the hist", "The Hist", "the HIST"])
def test_text_ending_inside_a_word_gets_completions_of_it(client: TestClient, text: str) -> None:
    body = _next_word(client, text)
    assert body["completing"] is True
    assert body["prefix"] == text.split()[-1]
    words = [s["word"] for s in body["suggestions"]]
    assert all(word.lower().startswith("hist") for word in words)
    assert sorted(words) == ["historical", "history"]  # every completion the vocabulary has
    assert body["context_tokens"] == 1


def test_text_of_unknown_words_still_gets_suggestions(client: TestClient) -> None:
    body = _next_word(client, "xyzzy plugh ")
    assert body["unknown_words"] == 2
    assert body["context_tokens"] == 2
    assert body["completing"] is False
    assert len(body["suggestions"]) == 3


def _same_suggestions(first: dict[str, Any], second: dict[str, Any]) -> None:
    assert [s["word"] for s in first["suggestions"]] == [s["word"] for s in second["suggestions"]]
    for a, b in zip(first["suggestions"], second["suggestions"], strict=True):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)


def test_next_word_answers_the_same_from_the_prefix_cache(
    client: TestClient, make_settings: SettingsFactory
) -> None:
    """A prefix cached by earlier typing, or by a generation's prompt, gives the same answer as
    a service without a cache."""
    engine = state_of(client).engine

    def hits() -> int:
        return engine.cache_figures("next-word")[0]

    for typed in ("the ", "the history ", "the history of "):
        typed_answer = _next_word(client, typed, top_k=20)
    _generate(client, prompt="the war of the city", model="next-word", max_new_tokens=1, seed=0)
    before = hits()
    after_generation = _next_word(client, "the war of the city ", top_k=20)
    assert hits() == before + 1  # the generation's prompt was cached
    with serve(make_settings(cache_mb=0)) as fresh:
        _same_suggestions(typed_answer, _next_word(fresh, "the history of ", top_k=20))
        _same_suggestions(after_generation, _next_word(fresh, "the war of the city ", top_k=20))


# ---- generate ----


def _generate(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/generate", json={"prompt": "to be", **body})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_same_seed_gives_the_same_text(client: TestClient) -> None:
    first = _generate(client, max_new_tokens=40, seed=1234)
    second = _generate(client, max_new_tokens=40, seed=1234)
    assert first == second
    assert first["seed"] == 1234
    assert first["model"] == "generate"
    assert first["prompt_tokens"] == len("to be")
    assert first["unknown_prompt_tokens"] == 0


def test_without_a_seed_the_drawn_seed_is_returned_and_reproduces(client: TestClient) -> None:
    drawn = _generate(client, max_new_tokens=40, temperature=1.5)
    assert isinstance(drawn["seed"], int) and 0 <= drawn["seed"] < 2**63
    again = _generate(client, max_new_tokens=40, temperature=1.5, seed=drawn["seed"])
    assert again["text"] == drawn["text"]


def test_length_finish_gives_exactly_max_new_tokens(client: TestClient) -> None:
    body = _generate(client, max_new_tokens=12, seed=5)
    assert body["finish_reason"] == "length"
    assert body["tokens"] == 12
    assert len(body["text"]) == 12  # a character model: one character per token


def test_stop_string_ends_generation_before_it(client: TestClient) -> None:
    full = _generate(client, max_new_tokens=60, seed=99)["text"]
    stop = full[20:22]
    at = full.find(stop)
    stopped = _generate(client, max_new_tokens=60, seed=99, stop=[stop, "never-seen"])
    assert stopped["finish_reason"] == "stop_sequence"
    assert stop not in stopped["text"]
    assert stopped["text"] == full[:at]
    assert stopped["tokens"] == at + len(stop)  # the tokens that completed the stop were made


def test_unknown_prompt_characters_are_counted(client: TestClient) -> None:
    body = _generate(client, prompt="to be QX", max_new_tokens=1, seed=0)
    assert body["prompt_tokens"] == 8
    assert body["unknown_prompt_tokens"] == 2


def test_a_word_language_model_can_generate_too(client: TestClient) -> None:
    body = _generate(client, prompt="the history of", model="next-word", max_new_tokens=4, seed=3)
    assert body["model"] == "next-word"
    assert body["tokens"] == 4
    # words are separated by spaces; the end-of-line token shows as a line break
    assert len(re.findall(r"\n|[^\s]+", body["text"])) == 4
    assert "<eos>" not in body["text"] and "<unk>" not in body["text"]
    assert body["prompt_tokens"] == 3  # the words, not the <eos> start marker


# ---- operations ----


def test_health_live_and_ready(client: TestClient) -> None:
    live = client.get("/health/live")
    assert (live.status_code, live.json()) == (200, {"status": "ok"})
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "ok",
        "models": {"sentiment": "ready", "next-word": "ready", "generate": "ready"},
        "engines": {"engines": 1, "alive": 1, "restarts": 0},
    }


def test_models_describes_every_loaded_model(client: TestClient, checkpoints: Checkpoints) -> None:
    response = client.get("/models")
    assert response.status_code == 200
    models = {m["name"]: m for m in response.json()["models"]}
    assert list(models) == ["sentiment", "next-word", "generate"]
    expected = {
        "sentiment": ("sentiment", "sequence-classifier", "lstm"),
        "next-word": ("next-word", "language-model", "gru"),
        "generate": ("generate", "language-model", "lstm"),
    }
    for name, (task, architecture, cell) in expected.items():
        info = models[name]
        assert info["status"] == "ready"
        assert info["task"] == task
        assert info["architecture"] == architecture
        assert info["cell"] == cell
        assert info["vocab_size"] == checkpoints.vocab_sizes[name]
        assert info["parameters"] == checkpoints.parameters[name]
        assert info["metrics"] == checkpoints.cards[name]["metrics"]["test"]
        assert info["dataset"] == "tiny"
        assert info["device"] == "cpu"
        assert info["dtype"] == "float32"
        assert info["error"] is None
    assert models["sentiment"]["labels"] == ["negative", "positive"]
    assert models["sentiment"]["max_length"] == SENTIMENT_MAX_LENGTH
    # a classifier has no speakers to read; these language models read none
    assert [models[n]["reads_speakers"] for n in expected] == [None, False, False]
    assert checkpoints.vocab_sizes["next-word"] == len(VOCABULARY) + 2  # with <unk> and <eos>


def _samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_count_requests_and_batch_sizes(client: TestClient) -> None:
    requests = (
        "lstm_serve_requests_total",
        (("method", "POST"), ("route", "/sentiment"), ("status", "200")),
    )
    batches = ("lstm_serve_batch_size_count", (("operation", "sentiment:sentiment"),))
    before = _samples(client)
    _sentiment(client, "a great film")
    _sentiment(client, "a dull film")
    after = _samples(client)
    assert after[requests] == before.get(requests, 0.0) + 2
    assert after[batches] == before.get(batches, 0.0) + 2
    bucket = ("lstm_serve_batch_size_bucket", (("le", "1.0"), ("operation", "sentiment:sentiment")))
    assert after[bucket] >= 2
    assert ("lstm_serve_models_loaded", ()) in after and after[
        ("lstm_serve_models_loaded", ())
    ] == 3


def test_docs_and_openapi_document_the_error_envelope(client: TestClient) -> None:
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]
    schema = client.get("/openapi.json")
    assert schema.status_code == 200
    document = schema.json()
    assert set(document["components"]["schemas"]["ErrorResponse"]["properties"]) == {
        "error",
        "error_type",
        "request_id",
        "details",
    }
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path in ("/sentiment", "/sentiment/batch", "/next-word", "/generate"):
        responses = document["paths"][path]["post"]["responses"]
        for status in ("401", "404", "408", "413", "415", "422", "431", "503", "504"):
            assert responses[status]["content"]["application/json"]["schema"] == error_ref
            assert responses[status]["description"]
        assert "400" not in responses  # only a CORS preflight (OPTIONS) is answered 400


def test_a_calibrated_checkpoint_softens_probabilities_not_labels(
    client: TestClient, make_settings: SettingsFactory, checkpoints: Checkpoints, tmp_path: Path
) -> None:
    original = load_checkpoint(checkpoints.root / "sentiment")
    hot = dataclasses.replace(original.config, temperature=4.0)
    save_checkpoint(tmp_path / "hot", original.model, hot, original.tokenizer, original.card)
    text = {"text": "a great film, truly wonderful"}
    plain = client.post("/sentiment", json=text).json()
    with serve(make_settings(models=[f"hot={tmp_path / 'hot'}"])) as other:
        scaled = other.post("/sentiment", json=text).json()
    assert scaled["label"] == plain["label"]

    def log_odds(body: dict[str, Any]) -> float:
        return math.log(body["probabilities"]["positive"] / body["probabilities"]["negative"])

    assert log_odds(scaled) == pytest.approx(log_odds(plain) / 4.0, rel=1e-3)
