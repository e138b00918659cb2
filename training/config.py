"""Training configuration: dataclass defaults <- JSON file <- command-line flags, resolved once and
recorded in the checkpoint."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class TrainConfig:
    """Settings every task shares."""

    data: str | None = None  # local file or directory; None downloads the canonical corpus
    cache_dir: str = ".cache/lstm-serve"
    run_dir: str = "runs/{task}"
    export_dir: str | None = None  # where the checkpoint goes; default <run_dir>/checkpoint
    seed: int = 0
    threads: int = 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    cell: str = "lstm"
    embed_dim: int = 128
    hidden_dim: int = 256
    num_layers: int = 1
    dropout: float = 0.2
    epochs: int = 5
    batch_size: int = 32
    lr: float = 2e-3
    min_lr_ratio: float = 0.05  # cosine decay ends at lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    patience: int = 3  # evaluations without improvement before stopping early
    eval_every: int = 0  # steps between validations; 0 means once per epoch
    max_train_batches: int = 0  # 0 means all; smoke runs cap this
    max_eval_batches: int = 0
    storage_dtype: str = "float16"
    init_from: str | None = None  # a checkpoint to start from instead of random weights
    smoke: bool = False


@dataclass
class SentimentConfig(TrainConfig):
    max_vocab: int = 30000
    min_frequency: int = 2
    max_length: int = 512
    head_tokens: int = 128  # over-long reviews keep the first head_tokens and the rest from the end
    valid_fraction: float = 0.1
    bidirectional: bool = True
    pooling: tuple[str, ...] = ("max", "mean")
    pool_embeddings: bool = True
    embed_dropout: float = 0.3
    label_smoothing: float = 0.0


@dataclass
class LanguageModelTrainConfig(TrainConfig):
    bptt: int = 64
    eval_bptt: int = 256
    eval_batch_size: int = 16
    tie_weights: bool = False
    adaptive_cutoffs: tuple[int, ...] = field(default_factory=tuple)
    adaptive_div_value: float = 4.0
    max_length: int = 4096  # the longest prompt the service will read, in tokens
    valid_fraction: float = 0.05  # char corpus: every (1/valid_fraction)-th block of the text
    valid_block: int = 2048  # char corpus: characters per validation block
    test_fraction: float = 0.1
    sample_prompts: tuple[str, ...] = ()


TASK_CONFIGS: dict[str, type[TrainConfig]] = {
    "sentiment": SentimentConfig,
    "next-word": LanguageModelTrainConfig,
    "generate": LanguageModelTrainConfig,
}


def _parse_value(kind: Any, text: str) -> Any:
    """Turn a command-line string into the field's type."""
    origin = typing.get_origin(kind)
    if origin is tuple:
        item = typing.get_args(kind)[0]
        return tuple(_parse_value(item, part) for part in text.split(",") if part)
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"expected true or false, got {text!r}")
        return text.lower() in ("true", "1", "yes")
    if kind in (int, float, str):
        return kind(text)
    # Optional fields: "str | None" and friends
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if text.lower() in ("none", "null", ""):
        return None
    return _parse_value(args[0], text)


def _parser_for(kind: Any) -> Callable[[str], Any]:
    return lambda text: _parse_value(kind, text)


def add_config_flags(parser: argparse.ArgumentParser, cls: type[TrainConfig]) -> None:
    """One `--flag value` per field (dashes for underscores); unset flags stay None."""
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        flag = "--" + item.name.replace("_", "-")
        if item.name == "smoke":
            parser.add_argument(flag, "--dry-run", action="store_true", default=None)
            continue
        parser.add_argument(
            flag,
            dest=item.name,
            default=None,
            metavar=item.name.upper(),
            type=_parser_for(hints[item.name]),
        )


def _check_type(path: Path, name: str, value: Any, kind: Any) -> None:
    """A JSON setting must have its field's type ("epochs": "5" is refused, not kept a string)."""
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        ok = isinstance(value, list) and all(isinstance(v, item) for v in value)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind in (str, bool):
        ok = isinstance(value, kind)
    else:  # Optional[...]
        ok = value is None or any(
            isinstance(value, a) for a in typing.get_args(kind) if a is not type(None)
        )
    if not ok:
        raise ValueError(f"{path}: setting {name!r} must be {kind}, got {value!r}")


def resolve_config(task: str, config_file: str | None, flags: dict[str, Any]) -> TrainConfig:
    """Defaults <- training/configs/<task>.json (or --config) <- flags."""
    cls = TASK_CONFIGS[task]
    path = Path(config_file) if config_file else CONFIG_DIR / f"{task}.json"
    values: dict[str, Any] = {}
    if path.is_file():
        values.update(json.loads(path.read_text()))
    elif config_file:
        raise FileNotFoundError(f"config file {config_file} not found")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown settings {unknown}")
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        _check_type(path, name, value, hints[name])
    values.update({k: v for k, v in flags.items() if v is not None and k in known})
    for name in ("pooling", "adaptive_cutoffs", "sample_prompts"):
        if name in values:
            values[name] = tuple(values[name])
    config = cls(**values)
    config.run_dir = config.run_dir.format(task=task)
    return config


def smoke_overrides(config: TrainConfig) -> TrainConfig:
    """A tiny model on a few batches: seconds, for tests and dry runs."""
    small: dict[str, Any] = {
        "embed_dim": 16,
        "hidden_dim": 16,
        "num_layers": 1,
        "epochs": 1,
        "batch_size": 8,
        "max_train_batches": 4,
        "max_eval_batches": 2,
        "warmup_steps": 1,
        "eval_every": 0,
    }
    if isinstance(config, SentimentConfig):
        small.update(max_vocab=2000, max_length=64, head_tokens=16)
    if isinstance(config, LanguageModelTrainConfig):
        small.update(bptt=16, eval_bptt=32, eval_batch_size=4, max_length=256)
        if config.adaptive_cutoffs:
            small.update(adaptive_cutoffs=(100, 500))
    return dataclasses.replace(config, **small)


def config_as_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
