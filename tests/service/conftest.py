"""Three tiny real checkpoints (random weights) written once per session, settings that point at
them with small limits, and one served app shared by the tests that do not change its state."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from models.architectures import LanguageModel, SequenceClassifier, count_parameters
from models.checkpoint import save_checkpoint
from models.config import CacheConfig, ClassifierConfig, LanguageModelConfig
from models.format import CheckpointConfig
from models.tokenizers import CharTokenizer, fit_word_tokenizer
from service.settings import Settings
from tests.service.support import serve

REVIEWS = [
    "A great film with a superb cast !",
    "An awful , boring film with a dull plot .",
    "The story was moving and the acting brilliant .",
    "A dull plot , a terrible ending and a cast that was boring .",
]
CORPUS = [
    "the history of the city",
    "the historical record of the war",
    "a history of art in the city",
    "the city of history",
]
SHAKESPEARE = "to be , or not to be : that is the question .\nwhether tis nobler in the mind\n"

SENTIMENT_MAX_LENGTH = 16
SENTIMENT_HEAD_TOKENS = 4
LM_MAX_LENGTH = 64
CHAR_MAX_LENGTH = 256


@dataclass(frozen=True)
class Checkpoints:
    root: Path
    parameters: dict[str, int]
    vocab_sizes: dict[str, int]
    cards: dict[str, dict[str, Any]]

    def path(self, name: str) -> Path:
        return self.root / name


def _card(accuracy: float) -> dict[str, Any]:
    return {"metrics": {"test": {"accuracy": accuracy}}, "dataset": {"name": "tiny"}}


@pytest.fixture(scope="session", autouse=True)
def _no_service_environment() -> Iterator[None]:
    """Settings read LSTM_SERVE_* variables; the tests must not depend on the caller's shell."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.upper().startswith("LSTM_SERVE_"):
                patch.delenv(name)
        yield


# as the shipped language models carry one: every next-word and generation test uses it
LM_CACHE = CacheConfig(window=64, theta=20.0, weight=0.1, floor=0.5)


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Checkpoints:
    root = tmp_path_factory.mktemp("artifacts")
    torch.manual_seed(0)
    parameters: dict[str, int] = {}
    vocab_sizes: dict[str, int] = {}
    cards: dict[str, dict[str, Any]] = {}

    words = fit_word_tokenizer(REVIEWS, "text")
    classifier = SequenceClassifier(
        ClassifierConfig(vocab_size=words.vocab_size, embed_dim=8, hidden_dim=8, cell="lstm")
    )
    config = CheckpointConfig(
        task="sentiment",
        model=classifier.config,
        tokenizer="word",
        max_length=SENTIMENT_MAX_LENGTH,
        labels=("negative", "positive"),
        head_tokens=SENTIMENT_HEAD_TOKENS,
    )
    cards["sentiment"] = _card(0.5)
    save_checkpoint(root / "sentiment", classifier, config, words, cards["sentiment"])
    parameters["sentiment"] = count_parameters(classifier)
    vocab_sizes["sentiment"] = words.vocab_size

    vocabulary = fit_word_tokenizer(CORPUS, "pretokenized", specials=("<unk>", "<eos>"))
    word_lm = LanguageModel(
        LanguageModelConfig(
            vocab_size=vocabulary.vocab_size, embed_dim=8, hidden_dim=16, num_layers=1, cell="gru"
        )
    )
    config = CheckpointConfig(
        task="next-word",
        model=word_lm.config,
        tokenizer="word",
        max_length=LM_MAX_LENGTH,
        cache=LM_CACHE,
    )
    cards["next-word"] = _card(0.25)
    save_checkpoint(root / "next-word", word_lm, config, vocabulary, cards["next-word"])
    parameters["next-word"] = count_parameters(word_lm)
    vocab_sizes["next-word"] = vocabulary.vocab_size

    chars = CharTokenizer.fit(SHAKESPEARE)
    char_lm = LanguageModel(
        LanguageModelConfig(
            vocab_size=chars.vocab_size, embed_dim=8, hidden_dim=16, num_layers=1, cell="lstm"
        )
    )
    config = CheckpointConfig(
        task="generate",
        model=char_lm.config,
        tokenizer="char",
        max_length=CHAR_MAX_LENGTH,
        cache=LM_CACHE,
    )
    cards["generate"] = _card(0.125)
    save_checkpoint(root / "generate", char_lm, config, chars, cards["generate"])
    parameters["generate"] = count_parameters(char_lm)
    vocab_sizes["generate"] = chars.vocab_size
    return Checkpoints(root, parameters, vocab_sizes, cards)


SettingsFactory = Callable[..., Settings]


@pytest.fixture(scope="session")
def make_settings(checkpoints: Checkpoints) -> SettingsFactory:
    """Settings for the three tiny checkpoints on the CPU, with small limits; keywords override."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "artifacts_dir": checkpoints.root,
            "models": ["sentiment", "next-word", "generate"],
            "allow_partial": False,
            "device": "cpu",
            "dtype": "float32",
            "torch_threads": 1,
            "engines": 0,  # one engine on a thread: no process start per app (test_engines.py
            # starts real engine processes)
            "max_text_chars": 500,
            "max_prompt_chars": 1000,
            "max_body_bytes": 4096,
            "max_batch_texts": 4,
            "max_batch_size": 32,
            "max_queue": 256,
            "max_active_generations": 64,
            "request_timeout_s": 20.0,
            "cache_mb": 16,
            "api_key": None,
            "cors_origins": [],
            "log_level": "warning",
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture(scope="session")
def client(make_settings: SettingsFactory) -> Iterator[TestClient]:
    """One ready app for the tests that only send requests (they must not change its state)."""
    with serve(make_settings()) as served:
        yield served


# The README's defaults for the limits that make_settings sets small.
DEFAULT_LIMITS = {
    "max_text_chars": 20_000,
    "max_prompt_chars": 8_000,
    "max_body_bytes": 1_000_000,
    "max_batch_texts": 64,
}


@pytest.fixture(scope="session")
def default_limits_client(make_settings: SettingsFactory) -> Iterator[TestClient]:
    """Like `client`, with the default limits: for inputs near 1 MB (must not change its state)."""
    with serve(make_settings(**DEFAULT_LIMITS)) as served:
        yield served
