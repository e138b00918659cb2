"""The table of engine operations: each one's typed request and result, how an engine computes a
batch of them, and how a request picks its engine. Routes call `EngineClient.run(OPERATION, ...)`
with these objects; the wire carries only the operation's name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from models.checkpoint import Checkpoint
from service import inference
from service.generation import GenerationScheduler
from service.prefix_cache import PrefixCache

Req = TypeVar("Req")
Res = TypeVar("Res")


@dataclass
class Served:
    """A model as an engine holds it: its own prefix cache and generation scheduler."""

    checkpoint: Checkpoint
    cache: PrefixCache | None = None
    scheduler: GenerationScheduler | None = None


@dataclass(frozen=True)
class BatchOperation(Generic[Req, Res]):
    """An operation whose requests an engine computes in batches, one result per request."""

    name: str
    compute: Callable[[Served, Sequence[Req]], list[Res]]
    # a routing key: requests with the same key prefer the same engine (None: least loaded)
    affinity: Callable[[Req], int | None]


def _classify(
    served: Served, queries: Sequence[inference.SentimentQuery]
) -> list[inference.SentimentResult]:
    return inference.classify_texts(served.checkpoint, queries)


def _next_words(
    served: Served, texts: Sequence[inference.NextWordText]
) -> list[inference.NextWordResult]:
    return inference.next_words_of_texts(served.checkpoint, texts, served.cache)


def _no_affinity(_: object) -> None:
    return None


SENTIMENT: BatchOperation[inference.SentimentQuery, inference.SentimentResult] = BatchOperation(
    "sentiment", _classify, _no_affinity
)
NEXT_WORD: BatchOperation[inference.NextWordText, inference.NextWordResult] = BatchOperation(
    "next-word", _next_words, inference.NextWordText.affinity
)
# Generation is not batched per request but stepped (continuous batching): EngineClient.generate.
GENERATE = "generate"

BATCH_OPERATIONS: dict[str, BatchOperation[object, object]] = {
    op.name: op  # type: ignore[misc]
    for op in (SENTIMENT, NEXT_WORD)
}
# what the load-shedding middleware refuses, by route, before any work
ROUTE_OPERATIONS = {
    "/sentiment": SENTIMENT.name,
    "/sentiment/batch": SENTIMENT.name,
    "/next-word": NEXT_WORD.name,
    "/generate": GENERATE,
    "/generate/stream": GENERATE,
    "/v1/completions": GENERATE,
}
