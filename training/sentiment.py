"""The `sentiment` task: many-to-one classification of IMDB reviews (or a user's labelled file)."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models.architectures import build_model
from models.checkpoint import Checkpoint
from models.format import CheckpointConfig
from models.tokenizers import Tokenizer, WordTokenizer, fit_word_tokenizer, truncate_ids
from training.config import SentimentConfig, TrainConfig
from training.data import (
    DataError,
    Example,
    fetch,
    find_labeled,
    read_imdb_archive,
    read_labeled,
    sha256_of,
    split_validation,
)
from training.sentences import crop, eligible, one_sentence_set
from training.tasks import SAMPLES, Finished

LABELS = ("negative", "positive")


@dataclass(frozen=True)
class LabeledData:
    train: list[Example]
    valid: list[Example]
    test: list[Example]
    name: str
    sha256: dict[str, str]


def load_data(config: SentimentConfig) -> LabeledData:
    """Local directory with train/test files, or the official archive downloaded and verified."""
    if config.data is None:
        archive = fetch("imdb", "archive", Path(config.cache_dir))
        train_all = read_imdb_archive(archive, "train")
        test = read_imdb_archive(archive, "test")
        name, hashes = "imdb (aclImdb_v1.tar.gz)", {archive.name: sha256_of(archive)}
    else:
        root = Path(config.data)
        train_path = find_labeled(root, "train") if root.is_dir() else root
        test_path = find_labeled(root, "test") if root.is_dir() else None
        if train_path is None or not train_path.is_file():
            raise DataError(f"{root}: no train.jsonl/.csv (optionally .gz) found")
        train_all = read_labeled(train_path)
        test = read_labeled(test_path) if test_path else []
        name = root.name
        hashes = {p.name: sha256_of(p) for p in (train_path, test_path) if p is not None}
    train, valid = split_validation(train_all, config.valid_fraction, config.seed)
    return LabeledData(train, valid, test, name, hashes)


def encode(tokenizer: Tokenizer, text: str, max_length: int, head: int) -> list[int]:
    """Token ids, keeping the first `head` and last `max_length - head` of an over-long text."""
    return truncate_ids(tokenizer.encode(text).ids or [tokenizer.unk_id], max_length, head)[0]


def encode_examples(
    tokenizer: Tokenizer, examples: list[Example], max_length: int, head: int
) -> list[tuple[list[int], int]]:
    """(token ids, label) rows, over-long texts cut as `encode` does."""
    return [(encode(tokenizer, e.text, max_length, head), e.label) for e in examples]


def pad_batch(rows: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(r) for r in rows])
    tokens = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row)
    return tokens, lengths


def bucketed(
    rows: list[tuple[list[int], int]], batch_size: int, rng: random.Random
) -> list[list[tuple[list[int], int]]]:
    """Shuffle, sort within pools of 50 batches by length, cut into batches, shuffle batches."""
    order = rows[:]
    rng.shuffle(order)
    pool = batch_size * 50
    batches: list[list[tuple[list[int], int]]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda r: len(r[0]))
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


class SentimentTask:
    metric = "accuracy"
    higher_is_better = True

    def __init__(
        self,
        config: SentimentConfig,
        data: LabeledData,
        tokenizer: WordTokenizer,
        checkpoint_config: CheckpointConfig,
    ) -> None:
        self.config, self.data, self.tokenizer = config, data, tokenizer
        self.checkpoint_config = checkpoint_config
        self.train_rows = self._encode(data.train)
        self.valid_rows = self._encode(data.valid)
        self.valid_sentence_rows = self._encode(one_sentence_set(data.valid, config.seed))
        # each training review's eligible sentences, encoded once; crops are drawn from them
        self.train_sentences: list[tuple[list[list[int]], int]] = []
        if config.short_crops > 0:
            for example in data.train:
                pieces = [tokenizer.encode(s).ids for s in eligible(example.text)]
                if pieces:
                    self.train_sentences.append((pieces, example.label))
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self._batches_per_epoch = len(self._epoch_batches(0))

    def _encode(self, examples: list[Example]) -> list[tuple[list[int], int]]:
        return encode_examples(
            self.tokenizer, examples, self.config.max_length, self.config.head_tokens
        )

    def _crops(self, epoch: int) -> list[tuple[list[int], int]]:
        """This epoch's crops: a fixed number (so every epoch has as many steps), from reviews
        and sentences chosen anew each epoch."""
        rng = random.Random(self.config.seed * 1000 + epoch + 500)
        count = round(self.config.short_crops * len(self.train_sentences))
        chosen = rng.sample(self.train_sentences, min(count, len(self.train_sentences)))
        return [(crop(pieces, rng), label) for pieces, label in chosen]

    def _epoch_batches(self, epoch: int) -> list[list[tuple[list[int], int]]]:
        rows = self.train_rows + self._crops(epoch)
        batches = bucketed(
            rows, self.config.batch_size, random.Random(self.config.seed * 1000 + epoch)
        )
        limit = self.config.max_train_batches
        return batches[:limit] if limit else batches

    def steps_per_epoch(self, world: int) -> int:
        return self._batches_per_epoch // world

    def start_epoch(self) -> None:
        return None

    def objective(self, model: nn.Module) -> nn.Module:
        return model

    def batches(self, epoch: int, rank: int, world: int) -> Iterator[tuple[torch.Tensor, ...]]:
        all_batches = self._epoch_batches(epoch)
        for batch in all_batches[rank : self.steps_per_epoch(world) * world : world]:
            tokens, lengths = pad_batch([r for r, _ in batch], self.tokenizer.pad_id or 0)
            yield tokens, lengths, torch.tensor([label for _, label in batch])

    def loss(self, model: nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, int]:
        tokens, lengths, labels = batch
        device = next(model.parameters()).device
        # padded path: bucketing keeps padding small and its backward is faster on CPU than packed
        logits, _ = model(tokens.to(device), lengths.to(device), packed=False)
        return self.loss_fn(logits.float(), labels.to(device)), int(lengths.sum())

    def validate(self, model: nn.Module) -> dict[str, float]:
        pad, cap = self.tokenizer.pad_id or 0, self.config.max_eval_batches
        metrics = evaluate_rows(model, self.valid_rows, pad, cap)
        if self.valid_sentence_rows:
            short = evaluate_rows(model, self.valid_sentence_rows, pad, cap)
            metrics["sentence_accuracy"] = short["accuracy"]
        return metrics

    def finish(self, model: nn.Module) -> Finished:
        """Fit the temperature on the validation split (a model trained to a low training loss is
        over-confident), then measure the test split once with it."""
        pad = self.tokenizer.pad_id or 0
        fitted = fit_calibration(model, self.valid_rows, self.valid_sentence_rows, pad, self.config)
        temperature = fitted["temperature"]
        test: dict[str, float] = {}
        if self.data.test:
            test = measure(model, self.tokenizer, self.data.test, self.config, temperature)
        return Finished(
            checkpoint_config=dataclasses.replace(self.checkpoint_config, temperature=temperature),
            test=test,
            dataset=self.data.name,
            dataset_sha256=self.data.sha256,
            card={"calibration": fitted},
        )


def predict_rows(
    model: nn.Module,
    rows: list[tuple[list[int], int]],
    pad_id: int,
    max_batches: int = 0,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (N, C) and labels (N,) in batches sorted by length (in that order)."""
    device = next(model.parameters()).device
    ordered = sorted(rows, key=lambda r: len(r[0]))
    chunks = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    if max_batches:
        chunks = chunks[:max_batches]
    logits, labels = [], []
    with torch.inference_mode():
        for chunk in chunks:
            tokens, lengths = pad_batch([r for r, _ in chunk], pad_id)
            out, _ = model(tokens.to(device), lengths.to(device))
            logits.append(out.float().cpu())
            labels.append(torch.tensor([label for _, label in chunk]))
    if not logits:
        return torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)
    return torch.cat(logits), torch.cat(labels)


def expected_calibration_error(
    probabilities: torch.Tensor, labels: torch.Tensor, bins: int = 15
) -> float:
    """|confidence - accuracy| averaged over `bins` equal-width confidence bins, weighted by
    how many predictions fall in each (Guo et al., 2017): 0 when a confidence of 0.8 is right
    80% of the time."""
    confidence, predicted = probabilities.max(-1)  # (N,), (N,)
    correct = (predicted == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    error = 0.0
    for low, high in itertools.pairwise(edges.tolist()):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            gap = confidence[inside].mean() - correct[inside].mean()
            error += float(gap.abs()) * int(inside.sum()) / max(1, labels.numel())
    return error


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0
) -> dict[str, float]:
    """Accuracy, F1 of the positive class, recall of each class, the share predicted positive,
    mean loss and expected calibration error of logits / temperature."""
    total = labels.numel()
    predicted = logits.argmax(-1)
    true_pos = int(((predicted == 1) & (labels == 1)).sum())
    true_neg = int(((predicted == 0) & (labels == 0)).sum())
    false_pos = int(((predicted == 1) & (labels == 0)).sum())
    false_neg = int(((predicted == 0) & (labels == 1)).sum())
    precision = true_pos / max(1, true_pos + false_pos)
    recall = true_pos / max(1, true_pos + false_neg)
    loss = nn.functional.cross_entropy(logits / temperature, labels, reduction="sum")
    probabilities = torch.softmax(logits / temperature, -1)
    return {
        "accuracy": int((predicted == labels).sum()) / max(1, total),
        "f1": 2 * precision * recall / max(1e-12, precision + recall),
        "recall_negative": true_neg / max(1, true_neg + false_pos),
        "recall_positive": recall,
        "predicted_positive": (true_pos + false_pos) / max(1, total),
        "loss": float(loss) / max(1, total),
        "ece": expected_calibration_error(probabilities, labels) if total else 0.0,
        "examples": float(total),
    }


def evaluate_rows(
    model: nn.Module,
    rows: list[tuple[list[int], int]],
    pad_id: int,
    max_batches: int = 0,
    temperature: float = 1.0,
) -> dict[str, float]:
    """Accuracy, F1 of the positive class and mean loss."""
    logits, labels = predict_rows(model, rows, pad_id, max_batches)
    return classification_metrics(logits, labels, temperature)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T minimising the mean loss of logits / T (temperature scaling): a model
    trained to zero training loss is over-confident, and one scalar fixes its probabilities
    without changing any prediction. Golden-section search over log T in [-3, 3]."""

    def loss(log_t: float) -> float:
        scaled = logits / math.exp(log_t)
        return float(nn.functional.cross_entropy(scaled, labels))

    low, high = -3.0, 3.0
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if loss(a) < loss(b):
            high = b
        else:
            low = a
    return round(math.exp((low + high) / 2), 4)


def _sentiment_config(config: TrainConfig) -> SentimentConfig:
    if not isinstance(config, SentimentConfig):
        raise TypeError(f"the sentiment task needs a SentimentConfig, got {type(config).__name__}")
    return config


@dataclass(frozen=True)
class Sentiment:
    """The `sentiment` task behind the interface in `training.tasks`."""

    name: str = "sentiment"
    sample: Path = SAMPLES / "imdb-sample"

    def build(self, config: TrainConfig) -> tuple[SentimentTask, nn.Module]:
        """Fit the tokenizer on the training split, build the model and the checkpoint config."""
        config = _sentiment_config(config)
        data = load_data(config)
        tokenizer = fit_word_tokenizer(
            (e.text for e in data.train),
            "text",
            max_vocab=config.max_vocab,
            min_frequency=config.min_frequency,
        )
        model_config = config.model_config(
            tokenizer.vocab_size, padding_id=tokenizer.pad_id or 0, num_classes=len(LABELS)
        )
        checkpoint_config = CheckpointConfig(
            task=self.name,
            model=model_config,
            tokenizer=tokenizer.kind,
            max_length=config.max_length,
            labels=LABELS,
            dtype=config.storage_dtype,
            head_tokens=config.head_tokens,
        )
        task = SentimentTask(config, data, tokenizer, checkpoint_config)
        return task, build_model(model_config)

    def evaluate(self, checkpoint: Checkpoint, config: TrainConfig) -> dict[str, float]:
        config = dataclasses.replace(
            _sentiment_config(config),
            max_length=checkpoint.config.max_length,
            head_tokens=checkpoint.config.head_tokens,
        )
        test = load_data(config).test
        return measure(
            checkpoint.model, checkpoint.tokenizer, test, config, checkpoint.config.temperature
        )


def measure(
    model: nn.Module,
    tokenizer: Tokenizer,
    examples: list[Example],
    config: SentimentConfig,
    temperature: float,
) -> dict[str, float]:
    """The test metrics of full reviews, and as `sentence_*` those of the one-sentence set cut
    from the same reviews."""
    pad, cap = tokenizer.pad_id or 0, config.max_eval_batches
    rows = encode_examples(tokenizer, examples, config.max_length, config.head_tokens)
    metrics = evaluate_rows(model, rows, pad, cap, temperature)
    short = one_sentence_set(examples, config.seed)
    if short:
        rows = encode_examples(tokenizer, short, config.max_length, config.head_tokens)
        sentence = evaluate_rows(model, rows, pad, cap, temperature)
        metrics.update({f"sentence_{k}": v for k, v in sentence.items()})
    return metrics


def checkpoint_rows(checkpoint: Checkpoint, examples: list[Example]) -> list[tuple[list[int], int]]:
    """Rows encoded with a checkpoint's tokenizer, cut to its max_length as in training."""
    config = checkpoint.config
    return encode_examples(checkpoint.tokenizer, examples, config.max_length, config.head_tokens)


def fit_calibration(
    model: nn.Module,
    rows: list[tuple[list[int], int]],
    sentence_rows: list[tuple[list[int], int]],
    pad_id: int,
    config: SentimentConfig,
) -> dict[str, float]:
    """The temperature fitted on validation reviews and one sentence of each together, so a
    confidence means the same on a review and on a sentence; the loss before and after."""
    logits, labels = predict_rows(model, rows + sentence_rows, pad_id, config.max_eval_batches)
    temperature = fit_temperature(logits, labels)
    return {
        "temperature": temperature,
        "validation_loss_before": classification_metrics(logits, labels)["loss"],
        "validation_loss_after": classification_metrics(logits, labels, temperature)["loss"],
    }
