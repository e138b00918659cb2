"""Temperature scaling: the fit recovers a known temperature; calibrating a checkpoint changes its
probabilities and loss, never its predictions or weights, and `evaluate` reproduces the card."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models.checkpoint import load_checkpoint
from models.format import CONFIG, WEIGHTS, sha256_file
from training.__main__ import calibrate, evaluate, main
from training.sentiment import classification_metrics, fit_temperature


def test_the_fit_recovers_the_temperature_that_made_logits_over_confident() -> None:
    generator = torch.Generator().manual_seed(0)
    calibrated = torch.randn(20_000, 2, generator=generator) * 1.5
    labels = torch.multinomial(torch.softmax(calibrated, -1), 1, generator=generator).squeeze(1)
    temperature = fit_temperature(calibrated * 4.0, labels)
    assert abs(temperature - 4.0) < 0.2
    before = classification_metrics(calibrated * 4.0, labels)
    after = classification_metrics(calibrated * 4.0, labels, temperature)
    assert after["loss"] < before["loss"] and after["accuracy"] == before["accuracy"]


def test_calibrating_a_checkpoint_keeps_predictions_and_weights(
    sentiment_dir: Path, tmp_path: Path
) -> None:
    export = tmp_path / "checkpoint"
    main(
        [
            "sentiment",
            "--smoke",
            "--data",
            str(sentiment_dir),
            "--run-dir",
            str(tmp_path / "run"),
            "--export-dir",
            str(export),
        ]
    )
    card = json.loads((export / "card.json").read_text())
    trained = card["calibration"]["temperature"]
    assert json.loads((export / CONFIG).read_text())["temperature"] == trained > 0
    weights = sha256_file(export / WEIGHTS)

    figures = calibrate(str(export), str(sentiment_dir), threads=1)
    assert figures["temperature"] == trained  # the same validation split, the same fit
    assert sha256_file(export / WEIGHTS) == weights
    loaded = load_checkpoint(export)
    assert loaded.config.temperature == trained
    measured = evaluate(str(export), str(sentiment_dir), threads=1, device="cpu")
    rounded = lambda m: {k: round(v, 4) for k, v in m.items()}  # noqa: E731
    assert rounded(measured) == rounded(loaded.card["metrics"]["test"])
