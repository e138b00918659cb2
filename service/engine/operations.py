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

# Next-word requests whose first AFFINITY_TOKENS tokens (the <eos> start marker and three words)
# agree go to the same engine: a user typing extends their own text, so the engine holding its
# cached prefix state reads only the new words. A shorter text goes to the least loaded engine
# (reading it anew costs little).
AFFINITY_TOKENS = 4


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
    served: Served, reviews: Sequence[inference.Review]
) -> list[inference.SentimentResult]:
    return inference.classify(served.checkpoint, reviews)


def _next_words(
    served: Served, queries: Sequence[inference.NextWordQuery]
) -> list[inference.NextWordResult]:
    return inference.next_words(served.checkpoint, queries, served.cache)


def _no_affinity(_: object) -> None:
    return None


def _prefix_affinity(query: inference.NextWordQuery) -> int | None:
    if len(query.context_ids) < AFFINITY_TOKENS:
        return None
    return hash(tuple(query.context_ids[:AFFINITY_TOKENS]))


SENTIMENT: BatchOperation[inference.Review, inference.SentimentResult] = BatchOperation(
    "sentiment", _classify, _no_affinity
)
NEXT_WORD: BatchOperation[inference.NextWordQuery, inference.NextWordResult] = BatchOperation(
    "next-word", _next_words, _prefix_affinity
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
}
