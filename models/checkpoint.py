"""Checkpoint format v1: the only code that reads or writes a checkpoint directory.

    config.json  model.safetensors  tokenizer.json  card.json  MANIFEST.sha256

Weights are safetensors (loading never executes code); the manifest is verified before anything
else is parsed, and every failure raises a `CheckpointError` subclass naming the file and problem.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from models.architectures import (
    ARCHITECTURES,
    ModelConfig,
    architecture_name,
    build_model,
    config_from_dict,
    config_to_dict,
)
from models.tokenizers import Tokenizer, tokenizer_from_json

FORMAT_VERSION = 1
CONFIG, WEIGHTS, TOKENIZER, CARD, MANIFEST = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "card.json",
    "MANIFEST.sha256",
)
FILES = (CONFIG, WEIGHTS, TOKENIZER, CARD)
TASKS = ("sentiment", "next-word", "generate")
VERSION_DIGITS = 12  # of the weights' sha256: `Checkpoint.version`
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class CheckpointError(Exception):
    """A checkpoint directory that cannot be used; the message names the file and the problem."""


class MissingFileError(CheckpointError):
    """A required file is absent."""


class ManifestMismatchError(CheckpointError):
    """A file's sha256 differs from MANIFEST.sha256, or the manifest lists the wrong files."""


class UnsupportedFormatError(CheckpointError):
    """config.json declares a format_version this code does not read."""


class InvalidConfigError(CheckpointError):
    """config.json is malformed, or its shapes do not match the weights."""


class VocabMismatchError(CheckpointError):
    """The tokenizer's vocabulary size differs from the model's."""


@dataclass(frozen=True)
class CheckpointConfig:
    """What config.json holds besides the architecture's own hyperparameters."""

    task: str
    model: ModelConfig
    tokenizer: str
    max_length: int
    labels: tuple[str, ...] = ()
    dtype: str = "float32"
    # over-long input keeps its first head_tokens and its last max_length - head_tokens
    head_tokens: int = 0
    # classifiers: logits are divided by it before the softmax (fitted on validation data)
    temperature: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "task": self.task,
            "architecture": architecture_name(self.model),
            "model": config_to_dict(self.model),
            "tokenizer": self.tokenizer,
            "labels": list(self.labels),
            "max_length": self.max_length,
            "head_tokens": self.head_tokens,
            "temperature": self.temperature,
            "dtype": self.dtype,
        }


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model in eval mode on its device, its tokenizer and card."""

    name: str
    path: Path
    config: CheckpointConfig
    model: nn.Module
    tokenizer: Tokenizer
    card: dict[str, Any]
    # first 12 hex digits of the weights' sha256 (from MANIFEST.sha256): names these exact weights
    version: str = ""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    directory: str | os.PathLike[str],
    model: nn.Module,
    config: CheckpointConfig,
    tokenizer: Tokenizer,
    card: dict[str, Any],
) -> Path:
    """Write the five files; weights are stored in `config.dtype` (computed in float32 at load)."""
    if tokenizer.vocab_size != config.model.vocab_size:
        raise VocabMismatchError(
            f"{TOKENIZER}: vocabulary has {tokenizer.vocab_size} tokens; "
            f"the model expects {config.model.vocab_size}"
        )
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    # a copy: the caller's model keeps its device and float32 weights
    stored = copy.deepcopy(model).to(device="cpu", dtype=STORAGE_DTYPES[config.dtype])
    save_model(stored, str(path / WEIGHTS))  # drops tied duplicates; load_model restores them
    (path / WEIGHTS).chmod(0o644)  # safetensors writes 0600; a checkpoint is meant to be shared
    (path / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    (path / TOKENIZER).write_text(tokenizer.to_json())
    (path / CARD).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    # the manifest last, over the bytes as written: `sha256sum -c MANIFEST.sha256` checks it too
    lines = [f"{sha256_file(path / name)}  {name}\n" for name in FILES]
    (path / MANIFEST).write_text("".join(lines))
    return path


def verify_manifest(path: Path) -> dict[str, str]:
    """Check every file against MANIFEST.sha256; return its sha256 per file name."""
    for name in (*FILES, MANIFEST):
        if not (path / name).is_file():
            raise MissingFileError(f"{name}: missing from checkpoint {path.name!r}")
    expected: dict[str, str] = {}
    for line in (path / MANIFEST).read_text().splitlines():
        digest, _, name = line.partition("  ")  # sha256sum's "<digest>  <name>"
        expected[name.strip()] = digest.strip()
    if sorted(expected) != sorted(FILES):
        raise ManifestMismatchError(f"{MANIFEST}: lists {sorted(expected)}, expected {list(FILES)}")
    for name in FILES:
        if sha256_file(path / name) != expected[name]:
            raise ManifestMismatchError(
                f"{name}: sha256 does not match {MANIFEST}; the file was changed or corrupted"
            )
    return expected


def read_config(path: Path) -> CheckpointConfig:
    """Parse and validate config.json."""
    try:
        data = json.loads((path / CONFIG).read_text())
        version = data.get("format_version")
    except (ValueError, AttributeError) as error:
        raise InvalidConfigError(f"{CONFIG}: not a JSON object ({error})") from None
    if version != FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"{CONFIG}: format_version is {version!r}; this version reads {FORMAT_VERSION}"
        )
    try:
        config_cls = ARCHITECTURES[data["architecture"]][0]
        config = CheckpointConfig(
            task=data["task"],
            model=config_from_dict(config_cls, data["model"]),
            tokenizer=data["tokenizer"],
            max_length=int(data["max_length"]),
            labels=tuple(data.get("labels", ())),
            dtype=data.get("dtype", "float32"),
            head_tokens=int(data.get("head_tokens", 0)),
            temperature=float(data.get("temperature", 1.0)),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidConfigError(f"{CONFIG}: invalid ({type(error).__name__}: {error})") from None
    _check_sizes(config)
    if not config.temperature > 0:
        raise InvalidConfigError(f"{CONFIG}: temperature must be positive")
    if not 0 <= config.head_tokens <= config.max_length:
        raise InvalidConfigError(f"{CONFIG}: head_tokens must be within [0, max_length]")
    if config.task not in TASKS or config.dtype not in STORAGE_DTYPES:
        raise InvalidConfigError(
            f"{CONFIG}: task {config.task!r} / dtype {config.dtype!r} not among {TASKS} / "
            f"{tuple(STORAGE_DTYPES)}"
        )
    return config


# Bounds on the sizes config.json may declare: a checkpoint is read before its weights are, and
# an absurd size (hidden_dim -5, or 10**7: a 400 TB matrix) must be refused by name, not by an
# allocation error. Far above any model this project trains (hidden 512, vocabulary 33,278).
SIZE_LIMITS = {
    "vocab_size": 2_000_000,
    "embed_dim": 16_384,
    "hidden_dim": 16_384,
    "num_layers": 64,
    "num_classes": 10_000,
}


def _check_sizes(config: CheckpointConfig) -> None:
    for name, limit in SIZE_LIMITS.items():
        value = getattr(config.model, name, None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
            raise InvalidConfigError(
                f"{CONFIG}: model.{name} is {value!r}; it must be an integer from 1 to {limit:,}"
            )
    if not 1 <= config.max_length <= 1_000_000:
        raise InvalidConfigError(
            f"{CONFIG}: max_length is {config.max_length}; it must be from 1 to 1,000,000"
        )


_INITIALISERS = ("normal_", "uniform_", "kaiming_uniform_", "xavier_uniform_")
_initialisers_off = threading.Lock()


@contextmanager
def _random_init_off() -> Iterator[None]:
    """Modules built inside skip their random initialisation (`torch.nn.init`'s functions leave
    the tensor as it is): every weight is about to be overwritten by the checkpoint's. Building
    the next-word model drew 20M random numbers, 0.2 s of a service's start."""
    with _initialisers_off:
        saved = {name: getattr(nn.init, name) for name in _INITIALISERS}
        try:
            for name in _INITIALISERS:
                setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
            yield
        finally:
            for name, function in saved.items():
                setattr(nn.init, name, function)


def load_checkpoint(
    directory: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    name: str | None = None,
) -> Checkpoint:
    """Verify, then load a checkpoint; the model comes back in eval mode on `device` in `dtype`."""
    path = Path(directory)
    if not path.is_dir():
        raise MissingFileError(f"{path.name}: checkpoint directory not found")
    digests = verify_manifest(path)
    config = read_config(path)
    try:
        tokenizer = tokenizer_from_json((path / TOKENIZER).read_text())
    except Exception as error:  # the tokenizers library raises its own types
        raise InvalidConfigError(f"{TOKENIZER}: unreadable ({error})") from None
    if tokenizer.vocab_size != config.model.vocab_size:
        raise VocabMismatchError(
            f"{TOKENIZER}: vocabulary has {tokenizer.vocab_size} tokens; "
            f"{CONFIG} says {config.model.vocab_size}"
        )
    with _random_init_off():
        model = build_model(config.model)
    try:
        # strict: a missing or extra tensor is an error, never a silently random weight
        load_model(model, str(path / WEIGHTS), strict=True)
    except SafetensorError as error:  # truncated, or not safetensors at all (e.g. a pickle)
        summary = str(error).splitlines()[0][:300]
        message = f"{WEIGHTS}: not a readable safetensors file ({summary})"
        raise InvalidConfigError(message) from None
    except RuntimeError as error:  # shapes or names differ: torch lists each one on its own line
        problems = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        summary = (problems or [str(error)])[0][:300]
        more = f"; and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise InvalidConfigError(f"{WEIGHTS}: does not match {CONFIG} ({summary}{more})") from None
    try:
        card = json.loads((path / CARD).read_text())
    except ValueError as error:
        raise InvalidConfigError(f"{CARD}: not JSON ({error})") from None
    # stored half precision is computed in `dtype` (float32 by default); eval() turns dropout off
    model.to(device=device, dtype=dtype).eval()
    version = digests[WEIGHTS][:VERSION_DIGITS]
    return Checkpoint(name or path.name, path, config, model, tokenizer, card, version)
