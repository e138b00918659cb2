"""How a language model reads short texts from nothing, as the service reads what a person types:
the test text cut into texts of `length` tokens, each read from a zero state and, with a
continuous cache, with a cache over that text alone. Measured with and without the cache: a cache
fitted on long streams must not hurt the short texts a service mostly reads."""

from __future__ import annotations

import torch

from models.architectures import LanguageModel
from models.cache import WindowedMemory
from models.config import CacheConfig
from models.speakers import SpeakerInputs

BATCH = 16  # texts per pass: a word model's (16, T, V) distributions are some 60 MB


def _measure(
    model: LanguageModel,
    texts: torch.Tensor,
    cache: CacheConfig | None,
    words: torch.Tensor | None,
    speakers: SpeakerInputs | None,
) -> dict[str, float]:
    nll, count, hits, targets_seen = 0.0, 0, 0, 0
    for batch in texts.split(BATCH):
        inputs, targets = batch[:, :-1], batch[:, 1:]  # (B, T)
        # each text's own speakers, as read from its start
        beside = speakers.of_ids(inputs) if speakers is not None else None
        hidden, _ = model.features(inputs, speakers=beside)  # from a zero state
        log_probs = torch.log_softmax(model.logits(hidden).float(), -1)  # (B, T, V)
        if cache is not None:
            log_probs = WindowedMemory(cache).log_probs(log_probs, hidden, targets)
        nll -= float(log_probs.gather(-1, targets[..., None]).sum())
        count += targets.numel()
        if words is not None:  # top-3 among words, on word targets (what a person is offered)
            best = log_probs.masked_fill(~words, float("-inf")).topk(3, -1).indices  # (B, T, 3)
            is_word = words[targets]  # (B, T)
            hits += int(((best == targets[..., None]).any(-1) & is_word).sum())
            targets_seen += int(is_word.sum())
    metrics = {"loss": nll / max(1, count)}
    if words is not None:
        metrics["word_top3_accuracy"] = hits / max(1, targets_seen)
    return metrics


def short_texts(
    model: LanguageModel,
    ids: torch.Tensor,
    cache: CacheConfig | None,
    length: int,
    words: torch.Tensor | None = None,
    count: int = 600,
    speakers: SpeakerInputs | None = None,
) -> dict[str, float]:
    """`short_text_*` metrics over `count` texts of `length` tokens spread evenly over `ids`
    (N,): the mean loss of every position after the first token and, with `words` (V,), top-3
    on word targets among words; with a cache, also `short_text_*_without_cache`."""
    device = next(model.parameters()).device
    texts = ids[: ids.numel() // length * length].view(-1, length)
    texts = texts[:: max(1, texts.shape[0] // count)][:count].to(device)  # (count, length)
    metrics: dict[str, float] = {"short_texts": float(texts.shape[0]), "short_text_length": length}
    words = words.to(device) if words is not None else None
    with torch.inference_mode():
        measured = _measure(model, texts, cache, words, speakers)
        metrics.update({f"short_text_{k}": v for k, v in measured.items()})
        if cache is not None:
            alone = _measure(model, texts, None, words, speakers)
            metrics.update({f"short_text_{k}_without_cache": v for k, v in alone.items()})
    return metrics
