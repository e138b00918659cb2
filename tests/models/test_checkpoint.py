"""Checkpoint format v1: save -> load is exact; every corruption raises its documented error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.architectures import LanguageModel, count_parameters
from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import LanguageModelConfig
from models.format import (
    CONFIG,
    MANIFEST,
    WEIGHTS,
    CheckpointConfig,
    InvalidConfigError,
    ManifestMismatchError,
    MissingFileError,
    UnsupportedFormatError,
    VocabMismatchError,
    read_info,
    sha256_file,
)
from models.tokenizers import CharTokenizer


def _rewrite(path: Path, name: str, text: str) -> None:
    """Change a file and re-sign the manifest, so only the content check can catch it."""
    (path / name).write_text(text)
    lines = (path / MANIFEST).read_text().splitlines()
    fixed = [
        f"{sha256_file(path / name)}  {name}" if line.endswith(f"  {name}") else line
        for line in lines
    ]
    (path / MANIFEST).write_text("\n".join(fixed) + "\n")


def test_save_load_gives_identical_outputs(classifier_dir: Path) -> None:
    first = load_checkpoint(classifier_dir)
    second = load_checkpoint(classifier_dir)
    tokens = torch.tensor([first.tokenizer.encode("a great film").ids])
    out1, _ = first.model(tokens, torch.tensor([3]))
    out2, _ = second.model(tokens, torch.tensor([3]))
    assert torch.equal(out1, out2)
    assert first.config.labels == ("negative", "positive")
    assert not first.model.training


def test_float16_storage_round_trips_tied_weights(char_lm_dir: Path, tmp_path: Path) -> None:
    loaded = load_checkpoint(char_lm_dir)
    model = loaded.model
    assert isinstance(model, LanguageModel)
    assert model.head[1].weight is model.embedding.weight
    assert model.embedding.weight.dtype == torch.float32
    # saving the loaded model again in float16 reproduces the same weights bit for bit
    again = save_checkpoint(tmp_path / "again", model, loaded.config, loaded.tokenizer, loaded.card)
    assert sha256_file(again / WEIGHTS) == sha256_file(char_lm_dir / WEIGHTS)


def test_missing_file(classifier_dir: Path) -> None:
    (classifier_dir / "tokenizer.json").unlink()
    with pytest.raises(MissingFileError, match=r"tokenizer\.json: missing"):
        load_checkpoint(classifier_dir)


def test_wrong_hash(classifier_dir: Path) -> None:
    with (classifier_dir / WEIGHTS).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ManifestMismatchError, match=r"model\.safetensors: sha256 does not match"):
        load_checkpoint(classifier_dir)


def test_wrong_format_version(classifier_dir: Path) -> None:
    config = json.loads((classifier_dir / CONFIG).read_text())
    config["format_version"] = 2
    _rewrite(classifier_dir, CONFIG, json.dumps(config))
    with pytest.raises(UnsupportedFormatError, match="format_version is 2"):
        load_checkpoint(classifier_dir)


def test_vocab_mismatch(classifier_dir: Path) -> None:
    _rewrite(classifier_dir, "tokenizer.json", CharTokenizer.fit("abc").to_json())
    with pytest.raises(VocabMismatchError, match="vocabulary has 4 tokens"):
        load_checkpoint(classifier_dir)


def test_config_that_lies_about_shapes(classifier_dir: Path) -> None:
    config = json.loads((classifier_dir / CONFIG).read_text())
    config["model"]["hidden_dim"] = 7
    _rewrite(classifier_dir, CONFIG, json.dumps(config))
    with pytest.raises(
        InvalidConfigError, match=r"model\.safetensors: does not match config\.json"
    ):
        load_checkpoint(classifier_dir)


def test_unknown_config_field(classifier_dir: Path) -> None:
    config = json.loads((classifier_dir / CONFIG).read_text())
    config["model"]["attention"] = True
    _rewrite(classifier_dir, CONFIG, json.dumps(config))
    with pytest.raises(InvalidConfigError, match="unknown ClassifierConfig fields"):
        load_checkpoint(classifier_dir)


def test_save_refuses_vocab_mismatch(tmp_path: Path) -> None:
    model = LanguageModel(LanguageModelConfig(vocab_size=10, embed_dim=4, hidden_dim=4))
    config = CheckpointConfig(task="generate", model=model.config, tokenizer="char", max_length=8)
    with pytest.raises(VocabMismatchError):
        save_checkpoint(tmp_path / "x", model, config, CharTokenizer.fit("ab"), {})


def test_a_planted_pickle_is_never_loaded(classifier_dir: Path) -> None:
    (classifier_dir / "pytorch_model.bin").write_bytes(b"\x80\x04not-loaded")
    (classifier_dir / WEIGHTS).write_bytes(b"\x80\x04 pickle instead of safetensors")
    with pytest.raises(ManifestMismatchError):
        load_checkpoint(classifier_dir)


def test_version_is_the_start_of_the_weights_sha256(classifier_dir: Path, tmp_path: Path) -> None:
    loaded = load_checkpoint(classifier_dir)
    assert loaded.version == sha256_file(classifier_dir / WEIGHTS)[:12]
    # other weights, other version; the same weights saved again, the same version
    again = save_checkpoint(
        tmp_path / "again", loaded.model, loaded.config, loaded.tokenizer, loaded.card
    )
    assert load_checkpoint(again).version == loaded.version
    with torch.no_grad():
        next(loaded.model.parameters()).add_(1.0)
    changed = save_checkpoint(
        tmp_path / "changed", loaded.model, loaded.config, loaded.tokenizer, loaded.card
    )
    assert load_checkpoint(changed).version != loaded.version


@pytest.mark.parametrize("value", [-5, 0, 10**7, 2.5, "512", True])
def test_an_absurd_size_in_config_json_is_named(tmp_path: Path, value: object) -> None:
    """hidden_dim -5 raised a bare ValueError from torch, 10**7 an allocation error."""
    model = LanguageModel(LanguageModelConfig(vocab_size=5, embed_dim=4, hidden_dim=4))
    config = CheckpointConfig(task="generate", model=model.config, tokenizer="char", max_length=8)
    path = save_checkpoint(tmp_path / "lm", model, config, CharTokenizer.fit("abcd"), {})
    data = json.loads((path / CONFIG).read_text())
    data["model"]["hidden_dim"] = value
    _rewrite(path, CONFIG, json.dumps(data))
    with pytest.raises(InvalidConfigError, match=r"config.json: model.hidden_dim is .*16,384"):
        load_checkpoint(path)


def test_what_a_checkpoint_is_reads_without_torch(char_lm_dir: Path, classifier_dir: Path) -> None:
    """models.format reads config, tokenizer, card, version and the parameter count (from the
    safetensors header) in a process that never imports torch; the count is the model's own,
    tied weights once."""
    script = (
        "import sys; from models.format import read_info; "
        "print([read_info(p).parameters for p in sys.argv[1:]]); "
        "assert 'torch' not in sys.modules"
    )
    root = Path(__file__).resolve().parents[2]
    paths = [str(char_lm_dir), str(classifier_dir)]
    out = subprocess.run(
        [sys.executable, "-c", script, *paths], cwd=root, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    loaded = [load_checkpoint(p) for p in paths]
    assert out.stdout.strip() == str([count_parameters(c.model) for c in loaded])
    for path, checkpoint in zip(paths, loaded, strict=True):
        info = read_info(path)
        assert (info.version, info.config, info.card) == (
            checkpoint.version,
            checkpoint.config,
            checkpoint.card,
        )
