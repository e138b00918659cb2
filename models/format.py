"""Checkpoint format v1 on disk, read without torch: the files, the manifest, config.json, the
tokenizer and the card. `models.checkpoint` builds the model from them and loads its weights; a
process that only needs to know what a checkpoint is (the service's HTTP process) reads it here.

    config.json  model.safetensors  tokenizer.json  card.json  MANIFEST.sha256

The manifest is verified before anything else is parsed, and every failure raises a
`CheckpointError` subclass naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.config import (
    ARCHITECTURE_CONFIGS,
    CacheConfig,
    ModelConfig,
    architecture_name,
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
VERSION_DIGITS = 12  # of the weights' sha256: `CheckpointInfo.version`
# the dtypes weights may be stored in (models.checkpoint maps them to torch's)
STORAGE_DTYPE_NAMES = ("float32", "float16", "bfloat16")


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
    # language models: a continuous cache mixed into the next-token distribution (None: none)
    cache: CacheConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        cache = {"cache": self.cache.to_dict()} if self.cache is not None else {}
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
            **cache,
        }


@dataclass
class CheckpointInfo:
    """What a checkpoint is, without its weights in memory: config, tokenizer, card, and the
    weights' version and size (read from the safetensors header)."""

    name: str
    path: Path
    config: CheckpointConfig
    tokenizer: Tokenizer
    card: dict[str, Any]
    # first 12 hex digits of the weights' sha256 (from MANIFEST.sha256): names these exact weights
    version: str
    # the values stored (tied weights are stored once); None where the header is unreadable (the
    # weights' load names the problem)
    parameters: int | None


def read_info(directory: str | os.PathLike[str], name: str | None = None) -> CheckpointInfo:
    """Verify the manifest, then read everything but the weights' values."""
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
    try:
        card = json.loads((path / CARD).read_text())
    except ValueError as error:
        raise InvalidConfigError(f"{CARD}: not JSON ({error})") from None
    version = digests[WEIGHTS][:VERSION_DIGITS]
    parameters = stored_elements(path / WEIGHTS)
    return CheckpointInfo(name or path.name, path, config, tokenizer, card, version, parameters)


def stored_elements(weights: Path) -> int | None:
    """The number of values in a safetensors file, from its header (8 bytes of little-endian
    length, then JSON: each tensor's dtype, shape and offsets); None if that cannot be read."""
    with weights.open("rb") as handle:
        prefix = handle.read(8)
        size = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else -1
        if not 2 <= size <= min(100_000_000, weights.stat().st_size - 8):
            return None
        try:
            header = json.loads(handle.read(size))
            shapes = [entry["shape"] for key, entry in header.items() if key != "__metadata__"]
            return sum(math.prod(int(d) for d in shape) for shape in shapes)
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        config_cls = ARCHITECTURE_CONFIGS[data["architecture"]]
        config = CheckpointConfig(
            task=data["task"],
            model=config_from_dict(config_cls, data["model"]),
            tokenizer=data["tokenizer"],
            max_length=int(data["max_length"]),
            labels=tuple(data.get("labels", ())),
            dtype=data.get("dtype", "float32"),
            head_tokens=int(data.get("head_tokens", 0)),
            temperature=float(data.get("temperature", 1.0)),
            cache=_cache(data.get("cache")),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidConfigError(f"{CONFIG}: invalid ({type(error).__name__}: {error})") from None
    _check_sizes(config)
    if config.cache is not None and config.task == "sentiment":
        raise InvalidConfigError(f"{CONFIG}: a cache belongs to a language model, not sentiment")
    if not config.temperature > 0:
        raise InvalidConfigError(f"{CONFIG}: temperature must be positive")
    if not 0 <= config.head_tokens <= config.max_length:
        raise InvalidConfigError(f"{CONFIG}: head_tokens must be within [0, max_length]")
    if config.task not in TASKS or config.dtype not in STORAGE_DTYPE_NAMES:
        raise InvalidConfigError(
            f"{CONFIG}: task {config.task!r} / dtype {config.dtype!r} not among {TASKS} / "
            f"{STORAGE_DTYPE_NAMES}"
        )
    return config


def _cache(data: object) -> CacheConfig | None:
    """config.json's `cache` object, or None where there is none."""
    if data is None:
        return None
    keys = ["theta", "weight", "window"]
    if not isinstance(data, dict) or sorted(set(data) - {"floor"}) != keys:
        raise ValueError(
            f"cache must be an object of window, theta, weight and optionally floor, got {data!r}"
        )
    floor = data.get("floor")
    return CacheConfig(
        data["window"],
        float(data["theta"]),
        float(data["weight"]),
        float(floor) if floor is not None else None,
    )


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
