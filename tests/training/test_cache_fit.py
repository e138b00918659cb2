"""Fitting the continuous cache: it is chosen on validation only, lowers the loss of text that
repeats itself, and `fit-cache` rewrites a checkpoint (weights unchanged) so that `evaluate`
reproduces its card; a next-word run measures its top-k with it; a classifier takes none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.architectures import LanguageModel
from models.checkpoint import load_checkpoint
from models.config import LanguageModelConfig
from models.format import CONFIG, WEIGHTS, sha256_file
from training.__main__ import SettingError, evaluate, fit_checkpoint_cache, main
from training.cache_fit import fit_cache


def test_the_fit_chooses_a_cache_that_lowers_the_loss_of_repeating_text() -> None:
    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig(vocab_size=20, embed_dim=8, hidden_dim=16)).eval()
    phrase = torch.randint(0, 20, (37,), generator=torch.Generator().manual_seed(1))
    streams = phrase.repeat(8).view(2, -1)  # (2, 148): each stream reads the phrase again
    cache, report = fit_cache(model, streams, bptt=32)
    assert cache is not None and cache.weight > 0
    without, loss = report["validation_loss_without_cache"], report["validation_loss"]
    assert isinstance(without, float) and isinstance(loss, float)
    assert loss < without - 0.05  # a repeated phrase is copied
    assert report["validation_tokens"] == 2 * 147


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in metrics.items()}


def test_fit_cache_rewrites_a_generate_checkpoint_and_evaluate_reproduces_it(
    shakespeare_file: Path, tmp_path: Path
) -> None:
    export = tmp_path / "checkpoint"
    argv = ["generate", "--smoke", "--data", str(shakespeare_file), "--fit-cache", "false"]
    main([*argv, "--run-dir", str(tmp_path / "run"), "--export-dir", str(export)])
    assert "cache" not in json.loads((export / CONFIG).read_text())
    alone = load_checkpoint(export).card["metrics"]["test"]["loss"]
    weights = sha256_file(export / WEIGHTS)

    figures = fit_checkpoint_cache(str(export), str(shakespeare_file), threads=1)
    loaded = load_checkpoint(export)
    assert loaded.config.cache is not None
    assert figures["cache_window"] == loaded.config.cache.window
    assert sha256_file(export / WEIGHTS) == weights
    test = loaded.card["metrics"]["test"]
    assert test["loss_without_cache"] == pytest.approx(alone, abs=1e-6)
    assert test["loss"] < alone  # the smoke corpus repeats its lines: the cache copies them
    fitted = loaded.card["cache"]
    assert fitted["validation_loss"] < fitted["validation_loss_without_cache"]
    assert loaded.card["config"]["fit_cache"] is True
    measured = evaluate(str(export), str(shakespeare_file), threads=1, device="cpu")
    assert _rounded(measured) == _rounded(test)


def test_a_next_word_run_fits_one_with_its_top_k_and_a_classifier_takes_none(
    wikitext_dir: Path, sentiment_dir: Path, tmp_path: Path
) -> None:
    export = tmp_path / "next-word"
    argv = ["next-word", "--smoke", "--data", str(wikitext_dir), "--fit-cache", "true"]
    assert main([*argv, "--run-dir", str(tmp_path / "run"), "--export-dir", str(export)]) == 0
    loaded = load_checkpoint(export)
    test = loaded.card["metrics"]["test"]
    assert {"top3_accuracy", "word_top3_accuracy", "loss_without_cache"} <= set(test)
    if loaded.config.cache is not None:  # chosen on validation; the test split then reports it
        assert "window" in json.loads((export / CONFIG).read_text())["cache"]
    measured = evaluate(str(export), str(wikitext_dir), threads=1, device="cpu")
    assert _rounded(measured) == _rounded(test)

    sentiment = tmp_path / "sentiment"
    argv = ["sentiment", "--smoke", "--data", str(sentiment_dir), "--export-dir", str(sentiment)]
    main([*argv, "--run-dir", str(tmp_path / "run-sentiment")])
    with pytest.raises(SettingError, match="fitted to language models"):
        fit_checkpoint_cache(str(sentiment), str(sentiment_dir), threads=1)
