"""The naive baseline of bench/side_by_side.py: FastAPI as its tutorial writes a model endpoint,
one review per call to lstm-serve's `classify`, no batching, no queue, several uvicorn workers.

    .venv/bin/python -m uvicorn naive_server:app --app-dir bench --workers 2 --port 18410

Body: {"text": "..."}; answer: {"label", "probabilities": {label: p}}, as lstm-serve's.
LSTM_SERVE_BENCH_CHECKPOINT names the checkpoint directory (default: the shipped sentiment one).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from fastapi import FastAPI
from pydantic import BaseModel, Field

from models.checkpoint import load_checkpoint
from service.inference import classify, encode_review

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)
checkpoint = load_checkpoint(
    os.environ.get("LSTM_SERVE_BENCH_CHECKPOINT", str(ROOT / "artifacts" / "sentiment"))
)
app = FastAPI(title="naive sentiment baseline")


class SentimentRequest(BaseModel):
    text: str = Field(min_length=1, max_length=20_000)


class SentimentResponse(BaseModel):
    label: str
    probabilities: dict[str, float]


@app.get("/health")
def health() -> dict[str, int]:
    """This worker's process id (the benchmark waits until every worker has answered)."""
    return {"pid": os.getpid()}


@app.post("/sentiment")
def sentiment(request: SentimentRequest) -> SentimentResponse:
    """Classify one review (a plain `def`: FastAPI runs it in its thread pool)."""
    result = classify(checkpoint, [encode_review(checkpoint, request.text, explain=False)])[0]
    probabilities = dict(zip(checkpoint.config.labels, result.probabilities, strict=True))
    label = max(probabilities, key=probabilities.__getitem__)
    return SentimentResponse(label=label, probabilities=probabilities)
