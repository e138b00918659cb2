"""Tiny real checkpoints built in tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.architectures import LanguageModel, SequenceClassifier
from models.checkpoint import save_checkpoint
from models.config import ClassifierConfig, LanguageModelConfig
from models.format import CheckpointConfig
from models.tokenizers import CharTokenizer, fit_word_tokenizer


@pytest.fixture
def classifier_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    tokenizer = fit_word_tokenizer(["a great film", "an awful film"], "text")
    model = SequenceClassifier(
        ClassifierConfig(vocab_size=tokenizer.vocab_size, embed_dim=8, hidden_dim=4)
    )
    config = CheckpointConfig(
        task="sentiment",
        model=model.config,
        tokenizer="word",
        max_length=64,
        labels=("negative", "positive"),
    )
    return save_checkpoint(tmp_path / "sentiment", model, config, tokenizer, {"metrics": {}})


@pytest.fixture
def char_lm_dir(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    tokenizer = CharTokenizer.fit("to be or not to be\n")
    model = LanguageModel(
        LanguageModelConfig(
            vocab_size=tokenizer.vocab_size, embed_dim=8, hidden_dim=16, tie_weights=True
        )
    )
    config = CheckpointConfig(
        task="generate", model=model.config, tokenizer="char", max_length=256, dtype="float16"
    )
    return save_checkpoint(tmp_path / "generate", model, config, tokenizer, {"metrics": {}})
