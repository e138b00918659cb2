"""Checkpoints with their weights: writes the five files of format v1 and loads a checkpoint's
model (`models.format` reads and verifies everything else, without torch).

Weights are safetensors (loading never executes code); the manifest is verified before anything
else is parsed, and every failure raises a `CheckpointError` subclass naming the file and problem.
"""

from __future__ import annotations

import copy
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

from models.architectures import build_model
from models.format import (
    CARD,
    CONFIG,
    FILES,
    MANIFEST,
    TOKENIZER,
    WEIGHTS,
    CheckpointConfig,
    InvalidConfigError,
    VocabMismatchError,
    read_info,
    sha256_file,
)
from models.tokenizers import Tokenizer

STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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
    info = read_info(directory, name)
    path, config = info.path, info.config
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
    # stored half precision is computed in `dtype` (float32 by default); eval() turns dropout off
    model.to(device=device, dtype=dtype).eval()
    return Checkpoint(info.name, path, config, model, info.tokenizer, info.card, info.version)
