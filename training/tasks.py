"""The small interface every task (sentiment, the language models) implements, so `train` and
`evaluate` run any of them without asking which: build a run, finish it, evaluate a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from models.checkpoint import Checkpoint
from models.format import CheckpointConfig
from models.tokenizers import Tokenizer
from training.config import TrainConfig
from training.loop import Task

SAMPLES = Path(__file__).parent / "samples"


@dataclass(frozen=True)
class Finished:
    """A trained run's results: what the checkpoint and its card record beyond the shared parts."""

    checkpoint_config: CheckpointConfig  # as exported (a classifier's fitted temperature in it)
    test: dict[str, float]  # metrics on the test split, measured once
    dataset: str
    dataset_sha256: dict[str, str]
    card: dict[str, Any] = field(default_factory=dict)  # task-specific: samples, calibration


class TrainingRun(Task, Protocol):
    """A task built for one run: what the loop needs, plus the vocabulary and the step after."""

    checkpoint_config: CheckpointConfig

    @property
    def tokenizer(self) -> Tokenizer: ...

    def finish(self, model: nn.Module) -> Finished:
        """After training: measure the test split and make the card's task-specific parts."""
        ...


class TaskKind(Protocol):
    """One `python -m training <task>`: how to build a run and how to evaluate a checkpoint."""

    @property
    def name(self) -> str: ...

    @property
    def sample(self) -> Path:
        """A small corpus sample shipped in the package, read by --smoke without --data."""
        ...

    def build(self, config: TrainConfig) -> tuple[TrainingRun, nn.Module]:
        """Read the data, fit the tokenizer on the training split, build the model."""
        ...

    def evaluate(self, checkpoint: Checkpoint, config: TrainConfig) -> dict[str, float]:
        """Measure `checkpoint` on the test split of `config.data`, as its training run did."""
        ...
