"""The configurations of models and of decoding: plain dataclasses, without torch, so that a
process that only reads checkpoints' configs and validates requests (the service's HTTP process)
never imports it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# the recurrent cells a model may use (models.recurrent builds them)
CELLS = ("lstm", "gru", "rnn")
POOLINGS = ("last", "mean", "max")


def _check_common(cell: str, vocab_size: int, dropout: float) -> None:
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {list(CELLS)}, got {cell!r}")
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")


@dataclass(frozen=True)
class ClassifierConfig:
    """Embedding -> stacked (bi)directional recurrent encoder -> pooling -> linear."""

    vocab_size: int
    num_classes: int = 2
    embed_dim: int = 128
    hidden_dim: int = 128
    num_layers: int = 1
    cell: str = "lstm"
    bidirectional: bool = True
    dropout: float = 0.0
    embed_dropout: float = 0.0
    pooling: tuple[str, ...] = ("max", "mean")
    # Also pool the embeddings themselves, a bag-of-words path beside the recurrent one.
    pool_embeddings: bool = False
    # > 0: a bag of word pairs beside it, each adjacent pair hashed into one of this many
    # ngram_dim-wide embeddings and mean-pooled (the bigram features of NB-SVM, Wang & Manning 2012)
    ngram_buckets: int = 0
    ngram_dim: int = 16
    padding_id: int = 0

    def __post_init__(self) -> None:
        _check_common(self.cell, self.vocab_size, self.dropout)
        object.__setattr__(self, "pooling", tuple(self.pooling))
        unknown = [p for p in self.pooling if p not in POOLINGS]
        if not self.pooling or unknown:
            raise ValueError(
                f"pooling must be a non-empty subset of {POOLINGS}, got {self.pooling}"
            )
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {self.num_classes}")
        if self.ngram_buckets < 0 or self.ngram_dim < 1:
            raise ValueError(
                f"ngram_buckets must be >= 0 and ngram_dim >= 1, got "
                f"{self.ngram_buckets} and {self.ngram_dim}"
            )


@dataclass(frozen=True)
class LanguageModelConfig:
    """Embedding -> recurrent stack -> dropout -> projection to the vocabulary."""

    vocab_size: int
    embed_dim: int = 256
    hidden_dim: int = 512
    num_layers: int = 2
    cell: str = "lstm"
    dropout: float = 0.2
    tie_weights: bool = False
    # Non-empty: an adaptive softmax with these cluster cut-offs instead of a full projection.
    adaptive_cutoffs: tuple[int, ...] = field(default_factory=tuple)
    adaptive_div_value: float = 4.0
    # > 0: each token is read beside a vector of this width naming the current speaker of a
    # play (models/speakers.py), encoded from the name's characters; 0: no such input
    speaker_dim: int = 0

    def __post_init__(self) -> None:
        _check_common(self.cell, self.vocab_size, self.dropout)
        if self.speaker_dim < 0:
            raise ValueError(f"speaker_dim must be 0 or more, got {self.speaker_dim}")
        object.__setattr__(self, "adaptive_cutoffs", tuple(self.adaptive_cutoffs))
        if self.tie_weights and self.adaptive_cutoffs:
            raise ValueError("tie_weights cannot be combined with adaptive_cutoffs")
        cutoffs = list(self.adaptive_cutoffs)
        if cutoffs and (cutoffs != sorted(set(cutoffs)) or cutoffs[-1] >= self.vocab_size):
            raise ValueError(
                f"adaptive_cutoffs must be increasing and below vocab_size, got {cutoffs}"
            )


ModelConfig = ClassifierConfig | LanguageModelConfig


def config_to_dict(config: ModelConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_dict(cls: type[ModelConfig], data: dict[str, Any]) -> ModelConfig:
    """Build a config, refusing keys the dataclass does not know."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {unknown}")
    return cls(**data)


ARCHITECTURE_CONFIGS: dict[str, type[ModelConfig]] = {
    "sequence-classifier": ClassifierConfig,
    "language-model": LanguageModelConfig,
}


def architecture_name(config: ModelConfig) -> str:
    return "sequence-classifier" if isinstance(config, ClassifierConfig) else "language-model"


@dataclass(frozen=True)
class CacheConfig:
    """A continuous cache (Grave et al., 2017) beside a language model: the next-token
    distribution is mixed with one that copies what followed the `window` most recent positions
    whose hidden states resemble the current one (cosine similarity times `theta`, softmaxed
    against a sentinel at `floor`), with `weight` on the copy. Its values are fitted on
    validation text (`models.cache`, `training.cache_fit`)."""

    window: int
    theta: float
    weight: float
    # a sentinel cosine: mass goes to the copy only as positions resemble the current one more
    # than this (None: all of `weight` once anything is held)
    floor: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.window, bool) or not isinstance(self.window, int):
            raise ValueError(f"cache.window must be an integer, got {self.window!r}")
        if not 1 <= self.window <= 100_000:
            raise ValueError(f"cache.window must be from 1 to 100,000, got {self.window}")
        if not 0.0 < self.theta <= 1000.0:
            raise ValueError(f"cache.theta must be in (0, 1000], got {self.theta}")
        if not 0.0 <= self.weight < 1.0:
            raise ValueError(f"cache.weight must be in [0, 1), got {self.weight}")
        if self.floor is not None and not -1.0 <= self.floor <= 1.0:
            raise ValueError(f"cache.floor must be a cosine, in [-1, 1], got {self.floor}")

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        return (
            values if self.floor is not None else {k: v for k, v in values.items() if k != "floor"}
        )


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 means greedy; top_k 0 and top_p 1.0 mean no filtering; penalties 0 mean
    none (positive ones discourage tokens already generated, negative ones favour them), and a
    repetition_penalty of 1 none (above 1 discourages tokens of the prompt and of the text so
    far, below 1 favours them)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise ValueError(f"{name} must be in [-2, 2], got {getattr(self, name)}")
        if not 0.0 < self.repetition_penalty <= 2.0:
            raise ValueError(f"repetition_penalty must be in (0, 2], got {self.repetition_penalty}")

    @property
    def penalised(self) -> bool:
        return (
            self.presence_penalty != 0
            or self.frequency_penalty != 0
            or self.repetition_penalty != 1.0
        )
