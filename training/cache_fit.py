"""Fitting a language model's continuous cache (`models.cache`) on validation text: its window,
sharpness (theta), floor and weight are chosen by a grid search for the lowest validation loss.
The model is read once; each window then costs one pass of cosines over the stored hidden states,
each (theta, floor) a softmax, and each weight only a mix."""

from __future__ import annotations

import torch

from models.architectures import LanguageModel
from models.cache import WindowedMemory, mix, shares, target_copy
from models.config import CacheConfig
from models.speakers import SpeakerInputs
from training.reading import Window, read_windows

WINDOWS = (250, 500, 1000, 2000, 4000)
THETAS = (5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0)
# None: no sentinel; a cosine: positions must resemble the current one more to take the mass
FLOORS = (None, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
WEIGHTS = (0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)


def _losses(
    windows: list[Window],
    cosines: list[tuple[torch.Tensor, torch.Tensor]],
    theta: float,
    floor: float | None,
) -> dict[float, float]:
    """Mean loss for each weight of WEIGHTS, with these cosines, theta and floor."""
    copies = []
    for part, (cosine, ids) in zip(windows, cosines, strict=True):
        weights = shares(cosine, theta, floor)  # (B, T, K)
        copies.append((target_copy(weights, ids, part.targets), weights.sum(-1)))  # (B, T)
    count = sum(w.targets.numel() for w in windows)
    losses = {}
    for weight in WEIGHTS:
        total = 0.0
        for part, (copy, mass) in zip(windows, copies, strict=True):
            total -= float(mix(part.target_log_probs, copy, mass, weight).sum())
        losses[weight] = total / max(1, count)
    return losses


def fit_cache(
    model: LanguageModel,
    data: torch.Tensor,
    bptt: int,
    max_batches: int = 0,
    speakers: SpeakerInputs | None = None,
) -> tuple[CacheConfig | None, dict[str, object]]:
    """The cache with the lowest loss on validation streams `data` (B, N) (None where none
    lowers it), and a report: the loss without and with it, and the best weight's loss for
    every window and theta tried."""
    with torch.inference_mode():
        windows = [
            Window(w.hidden.float(), w.targets, w.target_log_probs.float())
            for w in read_windows(
                model, data, bptt, max_batches, speakers.of_ids(data) if speakers else None
            )
        ]
    count = sum(w.targets.numel() for w in windows)
    without = -sum(float(w.target_log_probs.sum()) for w in windows) / max(1, count)
    grid: list[dict[str, float | None]] = []
    best: tuple[float, CacheConfig | None] = (without, None)
    with torch.inference_mode():
        for window in WINDOWS:
            memory = WindowedMemory(CacheConfig(window, 1.0, 0.0))
            cosines = [memory.cosines(w.hidden, w.targets) for w in windows]
            for theta in THETAS:
                for floor in FLOORS:
                    losses = _losses(windows, cosines, theta, floor)
                    weight = min(losses, key=losses.__getitem__)
                    loss = losses[weight]
                    grid.append(
                        {"window": window, "theta": theta, "floor": floor, "weight": weight,
                         "loss": loss}
                    )  # fmt: skip
                    if loss < best[0] and weight > 0:
                        best = (loss, CacheConfig(window, theta, weight, floor))
    report: dict[str, object] = {
        "fitted_on": "validation",
        "validation_loss_without_cache": without,
        "validation_loss": best[0],
        "validation_tokens": float(count),
        "grid": grid,
    }
    return best[1], report
