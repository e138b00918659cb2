"""TorchServe handler for bench/side_by_side.py: the shipped sentiment checkpoint, tokenised and
classified by lstm-serve's own functions, a TorchServe batch at a time.

Body: {"text": "..."}; answer: {"label", "probabilities": {label: p}}, as lstm-serve's. Needs
the project on PYTHONPATH and the checkpoint directory in LSTM_SERVE_BENCH_CHECKPOINT
(bench/side_by_side.py sets both).
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

from models.checkpoint import Checkpoint, load_checkpoint
from service.inference import Review, classify, encode_review

MAX_TEXT_CHARS = 20_000  # lstm-serve's default limit on `text`


class SentimentHandler:
    """TorchServe instantiates the one class of this module and calls `initialize`, then
    `handle` with each batch its frontend gathered (up to batchSize within maxBatchDelay)."""

    def __init__(self) -> None:
        self.checkpoint: Checkpoint | None = None

    def initialize(self, context: Any) -> None:
        torch.set_num_threads(1)
        self.checkpoint = load_checkpoint(os.environ["LSTM_SERVE_BENCH_CHECKPOINT"])

    def handle(self, data: list[dict[str, Any]], context: Any) -> list[Any]:
        """One answer per request, in order; a bad body gets a 400 naming `text`."""
        checkpoint = self.checkpoint
        assert checkpoint is not None, "initialize was not called"
        answers: list[Any] = [None] * len(data)
        reviews: list[Review] = []
        positions: list[int] = []
        for index, item in enumerate(data):
            text, problem = read_text(item.get("data") or item.get("body"))
            if problem:
                context.set_response_status(400, problem, index)
                answers[index] = {"error": problem, "error_type": "invalid_request"}
                continue
            reviews.append(encode_review(checkpoint, text, explain=False))
            positions.append(index)
        labels = checkpoint.config.labels
        for index, result in zip(positions, classify(checkpoint, reviews), strict=True):
            probabilities = dict(zip(labels, result.probabilities, strict=True))
            label = max(probabilities, key=probabilities.__getitem__)
            answers[index] = {"label": label, "probabilities": probabilities}
        return answers


def read_text(body: Any) -> tuple[str, str]:
    """(text, "") from a request body (TorchServe decodes JSON bodies; others arrive as bytes),
    or ("", the problem)."""
    if isinstance(body, bytes | bytearray | str):
        try:
            body = json.loads(body)
        except ValueError:
            return "", 'the body is not JSON; send {"text": "..."}'
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text:
        return "", "`text` is required: a non-empty string"
    if len(text) > MAX_TEXT_CHARS:
        return "", f"`text` has {len(text):,} characters; the limit is {MAX_TEXT_CHARS:,}"
    return text, ""
