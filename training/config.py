"""Training configuration: dataclass defaults <- JSON file <- command-line flags, resolved once and
recorded in the checkpoint. The `model` section is the model's own config: its fields and defaults
are those of `ClassifierConfig` or `LanguageModelConfig`, less what the data decides (vocabulary
size, padding id, number of classes). Files, flags and cards spell every setting flat
(`hidden_dim`, `--hidden-dim`); each flat name maps to exactly one place in the nested config."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from models.config import ClassifierConfig, LanguageModelConfig, ModelConfig

CONFIG_DIR = Path(__file__).parent / "configs"
# Model fields whose values come from the data, never from a setting.
DATA_DECIDED = frozenset({"vocab_size", "padding_id", "num_classes"})


class SettingError(ValueError):
    """A setting (flag or config file) the run cannot use: said in one line, not a traceback."""


def setting(default: Any, description: str) -> Any:
    """A config field with the description `--help` shows beside its flag."""
    return field(default=default, metadata={"help": description})


# What `--help` says about each model field; the defaults are the model config's own.
MODEL_HELP = {
    "cell": "recurrent cell: lstm, gru or rnn",
    "embed_dim": "width of the token embeddings",
    "hidden_dim": "width of the recurrent state (per direction)",
    "num_layers": "stacked recurrent layers",
    "dropout": "dropout between layers and before the output",
    "bidirectional": "also read each text backwards (true/false)",
    "embed_dropout": "dropout on the embeddings",
    "pooling": "how the outputs over time become one vector: comma list of last, mean, max",
    "pool_embeddings": "also pool the embeddings themselves, a bag-of-words path (true/false)",
    "ngram_buckets": "hashed buckets of a bag of adjacent word pairs beside it; 0: none",
    "ngram_dim": "width of each word-pair bucket's embedding",
    "tie_weights": "share the embedding matrix with the output projection (true/false)",
    "adaptive_cutoffs": "adaptive softmax cluster cut-offs, a comma list; empty: full softmax",
    "adaptive_div_value": "how much narrower each adaptive softmax cluster is than the one before",
    "speaker_dim": "generate: width of a vector naming the speaker of a play's speech, read beside "
    "each character (encoded from the name's letters); 0: none",
}


def model_defaults(cls: type[ModelConfig]) -> dict[str, Any]:
    """The model config's own defaults for every field a setting may give."""
    defaults: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        if item.name in DATA_DECIDED:
            continue
        factory = item.default_factory
        defaults[item.name] = item.default if factory is dataclasses.MISSING else factory()
    return defaults


@dataclass
class TrainConfig:
    """Settings every task shares: where data and runs live, how to optimise, and the model."""

    MODEL: ClassVar[type[ModelConfig]] = LanguageModelConfig

    data: str | None = setting(
        None, "local file or directory of the corpus; none: download the canonical one"
    )
    cache_dir: str = setting(".cache/lstm-serve", "where downloads are kept, verified")
    run_dir: str = setting("runs/{task}", "run directory: resolved config, resume state, curves")
    export_dir: str | None = setting(None, "where the checkpoint goes; none: <run-dir>/checkpoint")
    seed: int = setting(0, "seed of every random choice (weights, batches, dropout)")
    threads: int = setting(1, "torch threads")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    # the model's own config fields (filled from its defaults in __post_init__)
    model: dict[str, Any] = field(default_factory=dict)
    epochs: int = setting(5, "passes over the training split")
    batch_size: int = setting(32, "examples (or parallel text streams) per step")
    lr: float = setting(2e-3, "peak learning rate (AdamW)")
    min_lr_ratio: float = setting(0.05, "the cosine decay ends at lr * min_lr_ratio")
    warmup_steps: int = setting(100, "steps of linear learning-rate warmup")
    weight_decay: float = setting(0.01, "AdamW weight decay")
    clip_norm: float = setting(1.0, "gradients are clipped to this global norm")
    patience: int = setting(3, "validations without improvement before stopping early")
    eval_every: int = setting(0, "steps between validations; 0: once per epoch")
    max_minutes: float = setting(
        0.0,
        "wall-clock budget of training, in minutes: the learning-rate schedule ends when the "
        "epochs or this budget run out, whichever comes first; 0: epochs alone",
    )
    max_train_batches: int = setting(0, "cap on training batches per epoch; 0: all")
    max_eval_batches: int = setting(0, "cap on validation and test batches; 0: all")
    storage_dtype: str = setting("float16", "exported weights: float16, bfloat16 or float32")
    precision: str = setting(
        "auto",
        "auto: bfloat16 mixed precision on CUDA (float16 where bfloat16 is missing), float32 on "
        "the CPU; float32: float32 everywhere",
    )
    init_from: str | None = setting(None, "a checkpoint whose weights to start from")
    smoke: bool = setting(
        False, "a tiny model on a few batches, in seconds; without --data, on a shipped sample"
    )

    def __post_init__(self) -> None:
        defaults = model_defaults(self.MODEL)
        unknown = sorted(set(self.model) - set(defaults))
        if unknown:
            raise ValueError(f"unknown {self.MODEL.__name__} settings {unknown}")
        if self.precision not in ("auto", "float32"):
            raise ValueError(f"precision must be auto or float32, got {self.precision!r}")
        self.model = {**defaults, **self.model}

    def model_config(self, vocab_size: int, **decided: Any) -> ModelConfig:
        """The model's config, once the data has decided its vocabulary (and what else the task
        decides from it: a padding id, the number of classes, cut-offs that fit the vocabulary)."""
        return self.MODEL(**{**self.model, "vocab_size": vocab_size, **decided})

    def smoke_settings(self) -> dict[str, Any]:
        """What `--smoke` changes: a tiny model on a few batches."""
        return {
            "model": {**self.model, "embed_dim": 16, "hidden_dim": 16, "num_layers": 1},
            "epochs": 1,
            "batch_size": 8,
            "max_train_batches": 4,
            "max_eval_batches": 2,
            "warmup_steps": 1,
            "eval_every": 0,
        }


@dataclass
class SentimentConfig(TrainConfig):
    MODEL: ClassVar[type[ModelConfig]] = ClassifierConfig

    max_vocab: int = setting(30000, "the most frequent words kept, specials included")
    min_frequency: int = setting(2, "a word must occur this often in training to be kept")
    max_length: int = setting(512, "tokens read per review")
    head_tokens: int = setting(
        128, "an over-long review keeps its first head_tokens and the rest from its end"
    )
    valid_fraction: float = setting(0.1, "share of the training reviews held out for validation")
    label_smoothing: float = setting(0.0, "label smoothing of the cross-entropy loss")
    short_crops: float = setting(
        0.0,
        "share of the training reviews that also train as a crop of one or two of their "
        "sentences each epoch, so short text is in distribution",
    )

    def smoke_settings(self) -> dict[str, Any]:
        small = super().smoke_settings()
        # a smoke run's word-pair table: enough buckets for its few pairs, not the full run's
        small["model"]["ngram_buckets"] = min(self.model["ngram_buckets"], 4096)
        return {**small, "max_vocab": 2000, "max_length": 64, "head_tokens": 16}


@dataclass
class LanguageModelTrainConfig(TrainConfig):
    MODEL: ClassVar[type[ModelConfig]] = LanguageModelConfig

    bptt: int = setting(64, "tokens per truncated backpropagation window")
    eval_bptt: int = setting(256, "tokens per window when evaluating")
    eval_batch_size: int = setting(16, "parallel streams when evaluating")
    max_length: int = setting(4096, "the longest prompt the service will read, in tokens")
    valid_fraction: float = setting(
        0.05,
        "char corpus: every (1/valid_fraction)-th block validates; word corpus without "
        "valid.txt: the end of train.txt",
    )
    valid_block: int = setting(2048, "char corpus: characters per validation block")
    test_fraction: float = setting(0.1, "char corpus: the last share of the text, for testing")
    sample_prompts: tuple[str, ...] = setting((), "prompts sampled into the card, a comma list")
    state_resets: float = setting(
        0.0,
        "share of the training streams whose carried state is zeroed before each window, so "
        "the model also learns to start from nothing and read a short prompt, as a generation does",
    )
    fit_cache: bool = setting(
        False,
        "after training, fit a continuous cache on validation (window, theta, weight; "
        "models/cache.py), then test and serve with it",
    )
    everyday_data: str | None = setting(
        None,
        "next-word: a folder of reviews (train and test .jsonl or .csv, optionally .gz), "
        "everyday English read into the corpus's words: held-out reviews are measured beside "
        "the test split; none: not measured",
    )
    everyday_tokens: int = setting(
        0, "next-word: tokens of everyday_data's training reviews added to the training text"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.state_resets <= 1.0:
            raise ValueError(f"state_resets must be within 0..1, got {self.state_resets}")
        if self.everyday_tokens < 0:
            raise ValueError(f"everyday_tokens must be 0 or more, got {self.everyday_tokens}")
        if self.everyday_tokens and self.everyday_data is None:
            raise ValueError("everyday_tokens needs everyday_data: the reviews to mix in")

    def smoke_settings(self) -> dict[str, Any]:
        small = super().smoke_settings()
        if self.model["adaptive_cutoffs"]:
            small["model"]["adaptive_cutoffs"] = (100, 500)
        return {**small, "bptt": 16, "eval_bptt": 32, "eval_batch_size": 4, "max_length": 256}


TASK_CONFIGS: dict[str, type[TrainConfig]] = {
    "sentiment": SentimentConfig,
    "next-word": LanguageModelTrainConfig,
    "generate": LanguageModelTrainConfig,
}


def _own_fields(cls: type[TrainConfig]) -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(cls) if f.name != "model"]


def setting_types(cls: type[TrainConfig]) -> dict[str, Any]:
    """Every flat setting name and its type, in the order the flat form lists them."""
    own = typing.get_type_hints(cls)
    model = typing.get_type_hints(cls.MODEL)
    names: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        if item.name == "model":
            names.update({name: model[name] for name in model_defaults(cls.MODEL)})
        else:
            names[item.name] = own[item.name]
    return names


def config_as_dict(config: TrainConfig) -> dict[str, Any]:
    """The flat form, as files, flags and model cards spell it."""
    flat: dict[str, Any] = {}
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if item.name == "model":
            flat.update(value)
        else:
            flat[item.name] = value
    return flat


def config_from_dict(cls: type[TrainConfig], values: dict[str, Any]) -> TrainConfig:
    """The nested config from flat settings (JSON lists become tuples)."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    model_names = set(model_defaults(cls.MODEL))
    model = {k: v for k, v in values.items() if k in model_names}
    own = {k: v for k, v in values.items() if k not in model_names}
    return cls(**own, model=model)


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


def _descriptions(cls: type[TrainConfig]) -> dict[str, str]:
    found = {f.name: f.metadata.get("help", "") for f in _own_fields(cls)}
    return {**found, **MODEL_HELP}


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v).replace("\n", "\\n") for v in value) or "(empty)"
    return "none" if value is None else str(value)


def add_config_flags(
    parser: argparse.ArgumentParser, cls: type[TrainConfig], task: str | None = None
) -> None:
    """One `--flag value` per setting (dashes for underscores); unset flags stay None. With
    `task`, each flag's help ends with its default for that task (from its config file if set)."""
    defaults = config_as_dict(resolve_config(task, None, {})) if task else {}
    shipped = _file_values(CONFIG_DIR / f"{task}.json") if task else {}
    descriptions = _descriptions(cls)
    for name, kind in setting_types(cls).items():
        flag = "--" + name.replace("_", "-")
        text = descriptions.get(name, "")
        if name in defaults and name != "smoke":
            source = f", from training/configs/{task}.json" if name in shipped else ""
            text += f" (default: {_shown(defaults[name])}{source})"
        if name == "smoke":
            parser.add_argument(flag, "--dry-run", action="store_true", default=None, help=text)
            continue
        parser.add_argument(
            flag,
            dest=name,
            default=None,
            metavar=name.upper(),
            type=_parser_for(kind),
            help=text.replace("%", "%%"),
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


def _file_values(path: Path) -> dict[str, Any]:
    """A config file's settings, flat; a nested "model" object is read as its fields."""
    if not path.is_file():
        return {}
    values: dict[str, Any] = json.loads(path.read_text())
    nested = values.pop("model", {})
    if not isinstance(nested, dict):
        raise ValueError(f"{path}: setting 'model' must be an object of model settings")
    twice = sorted(set(nested) & set(values))
    if twice:
        raise ValueError(f"{path}: settings {twice} given both flat and inside 'model'")
    return {**values, **nested}


def resolve_config(task: str, config_file: str | None, flags: dict[str, Any]) -> TrainConfig:
    """Defaults <- training/configs/<task>.json (or --config) <- flags."""
    cls = TASK_CONFIGS[task]
    path = Path(config_file) if config_file else CONFIG_DIR / f"{task}.json"
    if config_file and not path.is_file():
        raise FileNotFoundError(f"config file {config_file} not found")
    values = _file_values(path)
    types = setting_types(cls)
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ValueError(f"{path}: unknown settings {unknown}")
    for name, value in values.items():
        _check_type(path, name, value, types[name])
    values.update({k: v for k, v in flags.items() if v is not None and k in types})
    config = config_from_dict(cls, values)
    config.run_dir = config.run_dir.format(task=task)
    return config


def smoke_overrides(config: TrainConfig) -> TrainConfig:
    """A tiny model on a few batches: seconds, for tests and dry runs."""
    return dataclasses.replace(config, **config.smoke_settings())
