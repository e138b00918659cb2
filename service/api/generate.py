"""Generation routes: a JSON answer, or Server-Sent Events (one per token, then the totals)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from models.config import SamplingParams
from service.api.deps import State, require_api_key
from service.api.responses import ERRORS, check_length
from service.engine import GENERATE, GenerationJob
from service.engine.operations import Event, FinishEvent, TokenEvent
from service.errors import DeadlineExceeded, InferenceFailed, InvalidInput, Overloaded
from service.registry import LoadedModel
from service.schemas import GenerateRequest, GenerateResponse

router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)], responses=ERRORS)
SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/event-stream": {
                "example": (
                    'event: token\ndata: {"text": "W", "index": 0}\n\n'
                    'event: done\ndata: {"text": "What", "tokens": 4, '
                    '"finish_reason": "length", ...}\n\n'
                )
            }
        },
        "description": "JSON, or with `stream: true` Server-Sent Events: `token` events, "
        "then `done`.",
    }
}

# an engine past its deadline ends the generation itself; an answer this much later means it is
# stuck, and the request ends with 504
BACKSTOP_S = 5.0

# A client that reconnects with Last-Event-ID expects the stream to resume where it broke; it
# cannot (events carry no ids and a generation is not kept), and a new one must not pass for it.
RESUME_REFUSED = (
    "`Last-Event-ID`: a stream cannot be resumed (its events carry no ids); send the request "
    "again without this header, with the `seed` of the first answer for the same text"
)


def _prompt_ids(loaded: LoadedModel, prompt: str) -> tuple[list[int], int, int]:
    """The ids the model reads, how many are the prompt's own tokens (a word model's <eos> start
    marker is not one), and how many of those are unknown."""
    checkpoint = loaded.checkpoint
    tokenizer = checkpoint.tokenizer
    ids = tokenizer.read(prompt)
    # a word model's <eos> start marker is not one of the prompt's tokens
    tokens = len(ids) - int(tokenizer.kind == "word" and tokenizer.eos_id is not None)
    limit = checkpoint.config.max_length
    if tokens > limit:
        raise InvalidInput("prompt", f"`prompt` has {tokens:,} tokens; the limit is {limit:,}")
    return ids, tokens, sum(1 for i in ids if i == tokenizer.unk_id)


class _Run:
    """One generation: validated, tokenised, handed to an engine; its events arrive on
    `stream.events`."""

    def __init__(
        self,
        state: State,
        name: str,
        loaded: LoadedModel,
        body: GenerateRequest,
        stream: bool,
        logprobs: int | None = None,
    ) -> None:
        self.prompt_ids, self.prompt_tokens, self.unknown = _prompt_ids(loaded, body.prompt)
        self.greedy = body.temperature == 0
        self.seed = body.seed if body.seed is not None else secrets.randbits(53)
        settings = state.settings
        limit = settings.stream_timeout_s if stream else settings.request_timeout_s
        job = GenerationJob(
            self.prompt_ids,
            body.max_new_tokens,
            SamplingParams(
                body.temperature,
                body.top_k,
                body.top_p,
                body.presence_penalty,
                body.frequency_penalty,
                body.repetition_penalty,
            ),
            self.seed,
            tuple(body.stop),
            deadline=time.monotonic() + limit,
            logprobs=logprobs,
        )
        self.limit = limit
        try:
            self.stream = state.engine.generate(name, job)
        except Overloaded:
            state.metrics.rejected.labels(GENERATE).inc()
            raise

    def cancel(self) -> None:
        self.stream.cancel()


def _response(run: _Run, finish: FinishEvent, name: str, loaded: LoadedModel) -> GenerateResponse:
    if finish.finish_reason == "error":
        raise InferenceFailed("generation failed")
    return GenerateResponse(
        text=finish.text,
        tokens=finish.tokens,
        finish_reason=finish.finish_reason,
        seed=None if run.greedy else run.seed,
        prompt_tokens=run.prompt_tokens,
        unknown_prompt_tokens=run.unknown,
        model=name,
        model_version=loaded.version,
    )


def _frame(run: _Run, event: Event, name: str, loaded: LoadedModel) -> str:
    """One Server-Sent Event."""
    if isinstance(event, TokenEvent):
        return f"event: token\ndata: {json.dumps({'text': event.text, 'index': event.index})}\n\n"
    if event.finish_reason == "error":
        error = {"error": "generation failed", "error_type": "internal_error"}
        return f"event: error\ndata: {json.dumps(error)}\n\n"
    return f"event: done\ndata: {_response(run, event, name, loaded).model_dump_json()}\n\n"


async def _stream(run: _Run, state: State, name: str, loaded: LoadedModel) -> AsyncIterator[str]:
    """Every token as its own event; events already waiting when the client is written to go out
    in one write (a busy server sends fewer, larger chunks instead of falling behind)."""
    try:
        while True:
            events = [await run.stream.events.get()]
            while not run.stream.events.empty() and not isinstance(events[-1], FinishEvent):
                events.append(run.stream.events.get_nowait())
            tokens = sum(1 for e in events if isinstance(e, TokenEvent))
            state.metrics.tokens_generated.labels(name).inc(tokens)
            last = events[-1]
            if isinstance(last, FinishEvent) and last.finish_reason == "cancelled":
                events.pop()
            yield "".join(_frame(run, e, name, loaded) for e in events)
            if isinstance(last, FinishEvent):
                return
    finally:
        run.cancel()  # a client that went away stops its generation at the next step


async def _generate(
    body: GenerateRequest, state: State, request: Request, stream: bool
) -> GenerateResponse | StreamingResponse:
    if stream and "last-event-id" in request.headers:
        raise InvalidInput("Last-Event-ID", RESUME_REFUSED)
    check_length("prompt", body.prompt, state.settings.max_prompt_chars)
    name, loaded = state.registry.get(body.model, "generate")
    request.state.model = name
    run = _Run(state, name, loaded, body, stream)
    if stream:
        return StreamingResponse(
            _stream(run, state, name, loaded),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    try:  # the engine ends the text at the deadline ("time_limit"); this is a backstop
        async with asyncio.timeout(run.limit + BACKSTOP_S):
            while not isinstance(event := await run.stream.events.get(), FinishEvent):
                state.metrics.tokens_generated.labels(name).inc()
    except TimeoutError:
        raise DeadlineExceeded(f"generation took longer than {run.limit:g} s") from None
    finally:
        run.cancel()
    return _response(run, event, name, loaded)


@router.post("/generate", response_model=GenerateResponse, responses=SSE_DOC)
async def generate(
    body: GenerateRequest, state: State, request: Request
) -> GenerateResponse | StreamingResponse:
    """Continue a prompt; `stream: true` answers with Server-Sent Events."""
    return await _generate(body, state, request, body.stream)


@router.post("/generate/stream", responses=SSE_DOC, response_class=StreamingResponse)
async def generate_stream(
    body: GenerateRequest, state: State, request: Request
) -> StreamingResponse:
    """Continue a prompt, streamed as Server-Sent Events whatever `stream` says."""
    response = await _generate(body, state, request, stream=True)
    assert isinstance(response, StreamingResponse)
    return response
