"""Reading a language model over parallel streams window by window, its state carried from each
window to the next: what evaluation and the continuous cache's fit both do."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from models.architectures import LanguageModel
from models.recurrent import State


@dataclass(frozen=True)
class Window:
    hidden: torch.Tensor  # (B, T, H)
    targets: torch.Tensor  # (B, T): the token after each position
    target_log_probs: torch.Tensor  # (B, T): the model's own log p(target)


def read_windows(
    model: LanguageModel,
    data: torch.Tensor,
    bptt: int,
    max_batches: int = 0,
    speakers: torch.Tensor | None = None,
) -> Iterator[Window]:
    """The windows of `bptt` positions of streams `data` (B, N), each position predicting the
    next; at most `max_batches` of them (0: all); a model that reads speakers reads `speakers`
    (B, N, S) beside them. Call it under `torch.inference_mode()`."""
    state: State | None = None
    for number, start in enumerate(range(0, data.shape[1] - 1, bptt)):
        if max_batches and number >= max_batches:
            break
        targets = data[:, start + 1 : start + 1 + bptt]
        inputs = data[:, start : start + bptt][:, : targets.shape[1]]
        beside = None if speakers is None else speakers[:, start : start + inputs.shape[1]]
        hidden, state = model.features(inputs, state, speakers=beside)  # (B, T, H)
        flat = hidden.reshape(-1, hidden.shape[-1]).float()
        log_probs = model.target_log_probs(flat, targets.reshape(-1)).view(targets.shape)
        yield Window(hidden, targets, log_probs)
