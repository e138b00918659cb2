"""--init-from: a run that starts from a trained checkpoint's weights, recorded in its card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.checkpoint import load_checkpoint
from training.__main__ import main


def _smoke(data: Path, out: Path, *flags: str) -> Path:
    main(
        [
            "generate",
            "--smoke",
            "--data",
            str(data),
            "--run-dir",
            str(out / "run"),
            "--export-dir",
            str(out / "checkpoint"),
            *flags,
        ]
    )
    return out / "checkpoint"


def test_a_run_starts_from_the_given_weights(shakespeare_file: Path, tmp_path: Path) -> None:
    first = _smoke(shakespeare_file, tmp_path / "first")
    # a learning rate of 0 keeps the weights: the export must equal the starting checkpoint
    second = _smoke(shakespeare_file, tmp_path / "second", "--init-from", str(first), "--lr", "0")
    before, after = load_checkpoint(first).model, load_checkpoint(second).model
    for (name, a), (_, b) in zip(
        before.state_dict().items(), after.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    card = json.loads((second / "card.json").read_text())
    first_card = json.loads((first / "card.json").read_text())
    assert card["init_from"] == {
        "path": str(first),
        "command": first_card["command"],
        "metrics": first_card["metrics"]["test"],
    }


def test_a_different_architecture_is_refused(shakespeare_file: Path, tmp_path: Path) -> None:
    first = _smoke(shakespeare_file, tmp_path / "first")
    with pytest.raises(ValueError, match="model config differs"):
        _smoke(shakespeare_file, tmp_path / "second", "--init-from", str(first), "--cell", "gru")


def test_a_character_model_may_start_one_that_reads_speakers(
    shakespeare_file: Path, tmp_path: Path
) -> None:
    first = _smoke(shakespeare_file, tmp_path / "first")
    # the speaker input starts with zero weights: at a learning rate of 0 the new model
    # predicts exactly as the checkpoint it started from, whoever is speaking
    flags = ("--init-from", str(first), "--lr", "0", "--speaker-dim", "4")
    second = _smoke(shakespeare_file, tmp_path / "second", *flags)
    before, after = load_checkpoint(first), load_checkpoint(second)
    assert after.config.model.speaker_dim == 4  # type: ignore[union-attr]
    shared = before.model.state_dict()
    for name, weights in after.model.state_dict().items():
        if name == "rnn.weight_ih_l0":
            width = shared[name].shape[1]
            assert torch.equal(weights[:, :width], shared[name])
            assert not weights[:, width:].any()
        elif not name.startswith("speaker_encoder."):
            assert torch.equal(weights, shared[name]), name
    card = json.loads((second / "card.json").read_text())
    first_card = json.loads((first / "card.json").read_text())
    for metric in ("loss", "loss_without_cache", "short_text_loss"):
        assert card["metrics"]["test"][metric] == pytest.approx(
            first_card["metrics"]["test"][metric], abs=1e-6
        )
    # a model reading speakers cannot start one that reads none, nor one of another width
    with pytest.raises(ValueError, match="model config differs"):
        _smoke(shakespeare_file, tmp_path / "third", "--init-from", str(second))
    with pytest.raises(ValueError, match="model config differs"):
        _smoke(
            shakespeare_file, tmp_path / "fourth", "--init-from", str(second), "--speaker-dim", "8"
        )
