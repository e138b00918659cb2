"""The table of engine operations: each one's typed request and result, and how a request picks
its engine. Routes call `EngineClient.run(OPERATION, ...)` with these objects; the wire carries
only the operation's name, and each engine computes it with `service.engine.worker.COMPUTE`.

Nothing here imports torch: the HTTP process builds requests and reads results with it alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

# ---- sentiment ----


@dataclass(frozen=True)
class SentimentQuery:
    """A text to classify, as the route validated it; tokenised by the engine that computes it
    (tokenising an IMDB review cost about as much as the HTTP handling of its request, and the
    engines are as many as the cores)."""

    text: str
    explain: bool = False
    trajectory: bool = False


@dataclass(frozen=True)
class TokenContribution:
    token: str
    start: int
    end: int
    contribution: float


@dataclass(frozen=True)
class TrajectoryPoint:
    tokens: int  # the prefix's length in tokens read
    end: int  # character offset in the text where the prefix ends
    probabilities: list[float]


@dataclass(frozen=True)
class SentimentResult:
    probabilities: list[float]
    truncated: bool
    tokens: int
    total_tokens: int
    explanation: list[TokenContribution] | None
    trajectory: list[TrajectoryPoint] | None = None
    unknown_tokens: int = 0


# ---- next word ----


@dataclass(frozen=True)
class NextWordText:
    """A next-word request as the route validated it; read into the corpus's words by the engine
    that computes it."""

    text: str
    top_k: int

    def affinity(self) -> int | None:
        """Texts that begin with the same three words go to the same engine (a user typing extends
        their own text: that engine caches its prefix); a shorter text goes anywhere."""
        words = self.text.split(None, 3)
        return hash(tuple(words[:3])) if len(words) > 3 else None


@dataclass(frozen=True)
class Suggestion:
    word: str
    probability: float


@dataclass(frozen=True)
class NextWordResult:
    suggestions: list[Suggestion]
    completing: bool
    prefix: str | None
    context_tokens: int
    unknown_words: int
    truncated: bool = False
    unknown_prefix: str | None = None


# ---- generation: what a stream emits ----


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token as text, its log-probability under the model, and the most likely
    alternatives at its place (the model's own distribution, before temperature, filters and
    penalties)."""

    text: str
    logprob: float
    top: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class TokenEvent:
    text: str
    token_id: int
    index: int
    # asked for (`logprobs`): the tokens whose text this event releases, in order
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class FinishEvent:
    text: str
    tokens: int
    finish_reason: str  # length | stop_sequence | time_limit | cancelled | error
    error: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()  # tokens no TokenEvent released (a stop cut them)


Event = TokenEvent | FinishEvent


# ---- the table ----

Req = TypeVar("Req")
Res = TypeVar("Res")


@dataclass(frozen=True)
class BatchOperation(Generic[Req, Res]):
    """An operation whose requests an engine computes in batches, one result per request."""

    name: str
    # a routing key: requests with the same key prefer the same engine (None: least loaded)
    affinity: Callable[[Req], int | None]


def _no_affinity(_: object) -> None:
    return None


SENTIMENT: BatchOperation[SentimentQuery, SentimentResult] = BatchOperation(
    "sentiment", _no_affinity
)
NEXT_WORD: BatchOperation[NextWordText, NextWordResult] = BatchOperation(
    "next-word", NextWordText.affinity
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
