"""The classifier's first stage: its embeddings and first recurrent layer trained as a language
model in both directions on unlabelled text, before it ever sees a label (Dai and Le, 2015;
Peters et al., 2018; Howard and Ruder, 2018). The forward direction's output at position t
predicts token t+1 and the backward direction's predicts token t-1, each from its own side of
the text only, so the layer learns what words mean from how they are used: a word seen in no
labelled review of its sentiment still lands near the words it is used like.

The prediction heads (an adaptive softmax per direction: the frequent words, most of the text,
cost a 2,000-way softmax) train beside the layer and are dropped after: the checkpoint keeps the
classifier's architecture, size and format. Only the first layer is pretrained; a second layer
reads both directions of the first, so it could see the very token it would predict."""

from __future__ import annotations

import dataclasses
import math
import random
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.architectures import SequenceClassifier
from models.recurrent import length_mask
from models.tokenizers import Tokenizer
from training.config import SentimentConfig
from training.data import DataError, read_text
from training.sentences import flat

PRETRAIN_DIR = "pretrain"  # under the run directory: the stage's own resume state and curve
VALID_TEXTS = 1000  # validation reviews whose language-model loss chooses the best weights
_HEADING = re.compile(r"^\s*=.*=\s*$")  # WikiText's "= = Section = =" lines
_MARKERS = {" @-@ ": "-", " @,@ ": ",", " @.@ ": ".", "<unk>": ""}


def plain_lines(text: str) -> list[str]:
    """A word corpus as plain paragraphs: one per non-empty line, WikiText's headings dropped and
    its join markers and <unk> undone, so the classifier's tokenizer reads it as it reads a
    review ("well @-@ known" -> "well-known")."""
    lines = []
    for line in text.splitlines():
        if not line.strip() or _HEADING.match(line):
            continue
        for marker, plain in _MARKERS.items():
            line = line.replace(marker, plain)
        lines.append(" ".join(line.split()))
    return [line for line in lines if line]


def read_corpus(path: str | Path) -> list[str]:
    """Paragraphs of a plain-text corpus: a file, or a folder's train.txt (optionally .gz)."""
    root = Path(path)
    if root.is_dir():
        found = [p for p in (root / "train.txt", root / "train.txt.gz") if p.is_file()]
        if not found:
            raise DataError(f"{root}: no train.txt (optionally .gz) to pretrain on")
        root = found[0]
    if not root.is_file():
        raise DataError(f"pretrain_data {path}: no such file or folder")
    return plain_lines(read_text(root))


def pieces(tokenizer: Tokenizer, texts: Sequence[str], length: int) -> list[list[int]]:
    """Each text's ids cut into pieces of at most `length` tokens (the last may be shorter);
    pieces of fewer than 2 tokens predict nothing and are left out."""
    cut: list[list[int]] = []
    for text in texts:
        ids = tokenizer.encode(text).ids
        cut.extend(ids[i : i + length] for i in range(0, len(ids), length))
    return [p for p in cut if len(p) >= 2]


def _cutoffs(vocab_size: int) -> list[int]:
    """Adaptive softmax clusters for a vocabulary ranked by frequency: 2,000 and 10,000 words
    for the full vocabulary, scaled down for a small one (a smoke run's)."""
    wanted = [2000, 10000] if vocab_size > 12000 else [vocab_size // 8, vocab_size // 2]
    return [c for c in dict.fromkeys(wanted) if 0 < c < vocab_size - 1]


class BidirectionalLM(nn.Module):
    """A classifier's embeddings and first layer, with a next-token head for each direction."""

    def __init__(self, classifier: SequenceClassifier) -> None:
        super().__init__()
        config = classifier.config
        self.classifier = classifier
        self.hidden = config.hidden_dim
        cutoffs = _cutoffs(config.vocab_size)
        # each rarer cluster is predicted from a 4x narrower projection (a tiny model's would
        # be empty: full width there)
        div_value = 4.0 if config.hidden_dim >= 16 else 1.0

        def head() -> nn.AdaptiveLogSoftmaxWithLoss:
            return nn.AdaptiveLogSoftmaxWithLoss(
                config.hidden_dim, config.vocab_size, cutoffs, div_value=div_value
            )

        self.forward_head = head()
        self.backward_head = head() if config.bidirectional else None

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, int]:
        """tokens (B, T) padded at the end, lengths (B,) >= 2 -> the mean negative log-likelihood
        per prediction over both directions, and the number of predictions."""
        model = self.classifier
        x = model.embed_dropout(model.embedding(tokens))  # (B, T, E)
        out, _ = model.layers[0](x, lengths, packed=False)  # (B, T, H * directions)
        out = model.dropout(out)
        # position t < length - 1 has a next token; position t + 1 has a previous one
        mask = length_mask(lengths.to(tokens.device) - 1, tokens.shape[1] - 1)  # (B, T-1)
        ahead = out[:, :-1, : self.hidden][mask]  # (N, H): forward outputs at 0..len-2
        total = self.forward_head(ahead.float(), tokens[:, 1:][mask]).loss * ahead.shape[0]
        count = ahead.shape[0]
        if self.backward_head is not None:
            behind = out[:, 1:, self.hidden :][mask]  # (N, H): backward outputs at 1..len-1
            total = (
                total
                + self.backward_head(behind.float(), tokens[:, :-1][mask]).loss * (behind.shape[0])
            )
            count += behind.shape[0]
        return total / max(1, count), count


class PretrainTask:
    """The training loop's view of pretraining: batches of text pieces, the language-model loss,
    and the loss on validation reviews (lower is better) to keep the best weights."""

    metric = "lm_loss"
    higher_is_better = False

    def __init__(
        self, config: SentimentConfig, train: list[list[int]], valid: list[list[int]], pad: int
    ) -> None:
        self.config, self.train, self.valid, self.pad = config, train, valid, pad

    def _epoch_batches(self, epoch: int) -> list[list[list[int]]]:
        rng = random.Random(self.config.seed * 1000 + epoch + 900)
        order = self.train[:]
        rng.shuffle(order)
        size, pool = self.config.batch_size, self.config.batch_size * 50
        batches: list[list[list[int]]] = []
        for start in range(0, len(order), pool):  # similar lengths together: little padding
            chunk = sorted(order[start : start + pool], key=len)
            batches.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
        rng.shuffle(batches)
        limit = self.config.max_train_batches
        return batches[:limit] if limit else batches

    def steps_per_epoch(self, world: int) -> int:
        return len(self._epoch_batches(0)) // world

    def start_epoch(self) -> None:
        return None

    def objective(self, model: nn.Module) -> nn.Module:
        return model

    def _tensors(self, rows: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([len(r) for r in rows])
        tokens = torch.full((len(rows), int(lengths.max())), self.pad, dtype=torch.long)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = torch.tensor(row)
        return tokens, lengths

    def batches(self, epoch: int, rank: int, world: int) -> Iterator[tuple[torch.Tensor, ...]]:
        batches = self._epoch_batches(epoch)
        for rows in batches[rank : self.steps_per_epoch(world) * world : world]:
            yield self._tensors(rows)

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, int]:
        tokens, lengths = batch
        device = next(model.parameters()).device
        loss, count = model(tokens.to(device), lengths.to(device))
        return loss, count

    def validate(self, model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        ordered = sorted(self.valid, key=len)
        size, cap = 64, self.config.max_eval_batches
        chunks = [ordered[i : i + size] for i in range(0, len(ordered), size)]
        total, count = 0.0, 0
        for rows in chunks[:cap] if cap else chunks:
            tokens, lengths = self._tensors(rows)
            loss, n = model(tokens.to(device), lengths.to(device))
            total, count = total + float(loss) * n, count + n
        mean = total / max(1, count)
        return {"lm_loss": mean, "lm_perplexity": math.exp(min(mean, 50.0))}


def stage_config(config: SentimentConfig, run_dir: Path) -> SentimentConfig:
    """The settings the pretraining stage trains with: its own epochs, learning rate, batch
    size and time budget, validated once per epoch, never stopped early."""
    return dataclasses.replace(
        config,
        epochs=config.pretrain_epochs,
        lr=config.pretrain_lr,
        batch_size=config.pretrain_batch_size,
        max_minutes=config.pretrain_minutes,
        eval_every=0,
        patience=config.pretrain_epochs + 1,
        run_dir=str(run_dir / PRETRAIN_DIR),
    )


def texts_for(config: SentimentConfig, reviews: Sequence[str]) -> tuple[list[str], dict[str, Any]]:
    """What the stage reads: the training reviews, then the paragraphs of `pretrain_data`."""
    texts = [flat(r) for r in reviews]
    record: dict[str, Any] = {"reviews": len(texts)}
    if config.pretrain_data:
        extra = read_corpus(config.pretrain_data)
        texts += extra
        record.update({"pretrain_data": config.pretrain_data, "paragraphs": len(extra)})
    return texts, record
