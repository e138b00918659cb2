"""Sentiment and next-word routes: validate against the configured limits, queue, answer."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from service.api.deps import ServiceState, State, require_api_key
from service.api.responses import ERRORS, check_length
from service.engine import NEXT_WORD, SENTIMENT, BatchOperation, operations
from service.errors import InvalidInput, Overloaded
from service.registry import LoadedModel
from service.schemas import (
    NextWordRequest,
    NextWordResponse,
    SentimentBatchRequest,
    SentimentBatchResponse,
    SentimentRequest,
    SentimentResponse,
    SentimentResult,
    TrajectoryPoint,
)

Req = TypeVar("Req")
Res = TypeVar("Res")
router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)], responses=ERRORS)


async def _run(
    state: ServiceState, operation: BatchOperation[Req, Res], model: str, item: Req
) -> Res:
    try:
        return await state.engine.run(operation, model, item, state.settings.request_timeout_s)
    except Overloaded:
        state.metrics.rejected.labels(operation.name).inc()
        raise


def _json(answer: BaseModel) -> Response:
    """The answer serialised once: returned as a model, FastAPI would validate it again against
    the route's response_model, which is this same class (the schema in /docs stays the same)."""
    return Response(answer.model_dump_json(), media_type="application/json")


def _result(labels: tuple[str, ...], result: operations.SentimentResult) -> SentimentResult:
    best = max(range(len(labels)), key=lambda i: result.probabilities[i])
    return SentimentResult(
        label=labels[best],
        score=round(result.probabilities[best], 6),
        probabilities={
            label: round(p, 6) for label, p in zip(labels, result.probabilities, strict=True)
        },
        truncated=result.truncated,
        tokens=result.tokens,
        total_tokens=result.total_tokens,
        unknown_tokens=result.unknown_tokens,
        explanation=[e.__dict__ for e in result.explanation] if result.explanation else None,
    )


def _trajectory(
    labels: tuple[str, ...], points: list[operations.TrajectoryPoint] | None
) -> list[TrajectoryPoint] | None:
    if points is None:
        return None
    return [
        TrajectoryPoint(
            tokens=point.tokens,
            end=point.end,
            probabilities={
                label: round(p, 6) for label, p in zip(labels, point.probabilities, strict=True)
            },
        )
        for point in points
    ]


async def sentiment_answer(
    state: ServiceState, name: str, loaded: LoadedModel, query: operations.SentimentQuery
) -> bytes:
    """The JSON answer to one text (the route's, and the fast path's in service.api.fast)."""
    result = await _run(state, SENTIMENT, name, query)
    labels = loaded.checkpoint.config.labels
    answer = SentimentResponse(
        **_result(labels, result).model_dump(),
        trajectory=_trajectory(labels, result.trajectory),
        model=name,
        model_version=loaded.version,
    )
    return answer.model_dump_json().encode()


@router.post("/sentiment", response_model=SentimentResponse)
async def sentiment(body: SentimentRequest, state: State, request: Request) -> Response:
    """Classify one text as positive or negative."""
    check_length("text", body.text, state.settings.max_text_chars)
    name, loaded = state.registry.get(body.model, "sentiment")
    request.state.model = name
    query = operations.SentimentQuery(body.text, body.explain, body.trajectory)
    content = await sentiment_answer(state, name, loaded, query)
    return Response(content, media_type="application/json")


@router.post("/sentiment/batch", response_model=SentimentBatchResponse)
async def sentiment_batch(body: SentimentBatchRequest, state: State, request: Request) -> Response:
    """Classify up to 64 texts in one request."""
    limit = state.settings.max_batch_texts
    if len(body.texts) > limit:
        raise InvalidInput("texts", f"`texts` has {len(body.texts)} items; the limit is {limit}")
    for index, text in enumerate(body.texts):
        check_length(f"texts[{index}]", text, state.settings.max_text_chars)
    name, loaded = state.registry.get(body.model, "sentiment")
    request.state.model = name
    reviews = [operations.SentimentQuery(t, body.explain) for t in body.texts]
    results = await asyncio.gather(*(_run(state, SENTIMENT, name, r) for r in reviews))
    return _json(
        SentimentBatchResponse(
            results=[_result(loaded.checkpoint.config.labels, r) for r in results],
            model=name,
            model_version=loaded.version,
        )
    )


@router.post("/next-word", response_model=NextWordResponse)
async def next_word(body: NextWordRequest, state: State, request: Request) -> Response:
    """Suggest the most likely next words, or completions of a partly typed word."""
    check_length("text", body.text, state.settings.max_text_chars)
    name, loaded = state.registry.get(body.model, "next-word")
    request.state.model = name
    result = await _run(state, NEXT_WORD, name, operations.NextWordText(body.text, body.top_k))
    return _json(
        NextWordResponse(
            suggestions=[s.__dict__ for s in result.suggestions],
            completing=result.completing,
            prefix=result.prefix,
            truncated=result.truncated,
            context_tokens=result.context_tokens,
            unknown_words=result.unknown_words,
            unknown_prefix=result.unknown_prefix,
            model=name,
            model_version=loaded.version,
        )
    )
