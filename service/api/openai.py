"""OpenAI-compatible routes: /v1/completions (JSON, or chunks then `data: [DONE]`) and /v1/models,
over the same engines as /generate; every error in OpenAI's shape `{"error": {message, type,
param, code}}`, so that OpenAI's clients raise their own exception types."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from service.api.deps import ServiceState, State, require_api_key
from service.api.generate import BACKSTOP_S, _Run
from service.api.openai_errors import OpenAIRoute, Unsupported
from service.api.responses import ERRORS, check_length
from service.engine.operations import FinishEvent, TokenEvent, TokenLogprob
from service.errors import DeadlineExceeded, InferenceFailed, ModelNotFound, NotReady
from service.openai_schemas import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionUsage,
    ModelCard,
    ModelList,
    OpenAIErrorBody,
)
from service.registry import LoadedModel
from service.schemas import GenerateRequest

LANGUAGE_TASKS = ("generate", "next-word")  # the checkpoints that can continue a text
STARTED = int(time.time())
SEEDS = 2**53  # seeds stay exact in every JSON parser
# the service's finish reasons in OpenAI's two words: a text cut by the deadline is cut short
# like one at max_tokens
FINISH_REASONS = {"length": "length", "time_limit": "length", "stop_sequence": "stop"}


# every error in OpenAI's shape, the HTTP layer's refusals too (service.api.middleware)
OPENAI_ERRORS = {
    400: "A parameter out of its bounds, unknown, or not supported (`code`: `unsupported`).",
    401: "An API key is configured and the request lacks `Authorization: Bearer <key>`.",
    404: "`model` is not a loaded language model (`code`: `model_not_found`).",
    503: "The models are loading, or the engines are full (with Retry-After).",
    504: "The generation passed its deadline.",
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": OpenAIErrorBody, "description": "OpenAI's error shape."},
    **{s: {"model": OpenAIErrorBody, "description": d} for s, d in OPENAI_ERRORS.items()},
    **{
        status: {"model": OpenAIErrorBody, "description": ERRORS[status]["description"]}
        for status in (408, 413, 415, 431)
    },
}
router = APIRouter(
    prefix="/v1",
    tags=["openai"],
    dependencies=[Depends(require_api_key)],
    route_class=OpenAIRoute,
    responses=RESPONSES,
)


def document_limits(spec: dict[str, Any], state: ServiceState) -> None:
    """`prompt` bounded in /openapi.json as the server enforces it: the configured characters, and
    the shortest window of the language models (a token is at least one character)."""
    if not state.registry.ready:
        return
    windows = [m.checkpoint.config.max_length for m in _language_models(state).values()]
    limit = min([state.settings.max_prompt_chars, *windows])
    schema = spec.get("components", {}).get("schemas", {}).get("CompletionRequest", {})
    for branch in schema.get("properties", {}).get("prompt", {}).get("anyOf", []):
        target = branch.get("items", branch)
        target["maxLength"] = limit


def _language_models(state: ServiceState) -> dict[str, LoadedModel]:
    registry = state.registry
    if registry.startup_error is not None:
        raise NotReady(f"the service failed to start: {registry.startup_error}")
    if not registry.ready:
        raise NotReady("models are still loading; retry shortly")
    return {name: m for name, m in registry.models.items() if m.task in LANGUAGE_TASKS}


@router.get("/models", response_model=ModelList)
async def list_models(state: State) -> ModelList:
    """The loaded language models, by the names `model` takes."""
    names = _language_models(state)
    return ModelList(data=[ModelCard(id=name, created=STARTED) for name in names])


@router.get("/models/{model}", response_model=ModelCard)
async def get_model(model: str, state: State) -> ModelCard:
    """One loaded language model."""
    if model not in _language_models(state):
        known = ", ".join(sorted(_language_models(state))) or "none"
        raise ModelNotFound(f"model {model[:200]!r} is not a loaded language model: {known}")
    return ModelCard(id=model, created=STARTED)


class _Completions:
    """Every choice of one request: prompt by prompt, `n` each, choice i seeded with seed + i."""

    def __init__(self, state: ServiceState, body: CompletionRequest, stream: bool) -> None:
        if refused := body.refused():
            raise Unsupported(*refused)
        n = body.n or 1
        prompts = body.prompts()
        self.name, self.loaded = _get_model(state, body.model)
        for index, prompt in enumerate(prompts):
            field = "prompt" if isinstance(body.prompt, str) else f"prompt[{index}]"
            check_length(field, prompt, state.settings.max_prompt_chars)
        seed = body.seed if body.seed is not None else secrets.randbits(53)
        self.created = int(time.time())
        self.echo = [prompt if body.echo else "" for prompt in prompts for _ in range(n)]
        self.logprobs = body.logprobs is not None
        self.runs: list[_Run] = []
        try:
            for index, prompt in enumerate(p for p in prompts for _ in range(n)):
                job = GenerateRequest(
                    prompt=prompt,
                    max_new_tokens=body.max_tokens or 16,
                    temperature=1.0 if body.temperature is None else body.temperature,
                    top_p=body.top_p or 1.0,
                    presence_penalty=body.presence_penalty or 0.0,
                    frequency_penalty=body.frequency_penalty or 0.0,
                    repetition_penalty=body.repetition_penalty or 1.0,
                    seed=(seed + index) % SEEDS,
                    stop=list(body.stops()),
                    model=self.name,
                )
                run = _Run(state, self.name, self.loaded, job, stream, body.logprobs)
                self.runs.append(run)
        except BaseException:
            self.cancel()
            raise
        # OpenAI counts a prompt once, however many completions it has
        self.prompt_tokens = sum(run.prompt_tokens for run in self.runs[::n])
        self.limit = self.runs[0].limit

    def cancel(self) -> None:
        for run in self.runs:
            run.cancel()

    def usage(self, finishes: list[FinishEvent]) -> CompletionUsage:
        completion = sum(finish.tokens for finish in finishes)
        return CompletionUsage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=completion,
            total_tokens=self.prompt_tokens + completion,
        )

    def completion(
        self, request_id: str, choices: list[CompletionChoice], usage: CompletionUsage | None
    ) -> Completion:
        return Completion(
            id=f"cmpl-{request_id}",
            created=self.created,
            model=self.name,
            system_fingerprint=self.loaded.version,
            choices=choices,
            usage=usage,
        )


def _get_model(state: ServiceState, name: str) -> tuple[str, LoadedModel]:
    models = _language_models(state)
    if name not in models:
        known = ", ".join(sorted(models)) or "none"
        failed = state.registry.failures.get(name)
        reason = f"failed to load: {failed}" if failed else "is not a loaded language model"
        raise ModelNotFound(f"model {name[:200]!r} {reason}; loaded language models: {known}")
    return name, models[name]


def _finish(event: FinishEvent) -> str:
    if event.finish_reason == "error":
        raise InferenceFailed("generation failed")
    return FINISH_REASONS.get(event.finish_reason, "length")


async def _answer(state: ServiceState, completions: _Completions, request_id: str) -> Completion:
    scored: list[list[TokenLogprob]] = [[] for _ in completions.runs]

    async def one(index: int) -> FinishEvent:
        events = completions.runs[index].stream.events
        while not isinstance(event := await events.get(), FinishEvent):
            state.metrics.tokens_generated.labels(completions.name).inc()
            scored[index].extend(event.logprobs)
        scored[index].extend(event.logprobs)
        return event

    try:  # the engine ends each text at the deadline; this is a backstop
        async with asyncio.timeout(completions.limit + BACKSTOP_S):
            finishes = await asyncio.gather(*(one(i) for i in range(len(completions.runs))))
    except TimeoutError:
        raise DeadlineExceeded(f"generation took longer than {completions.limit:g} s") from None
    finally:
        completions.cancel()
    choices = []
    for i, finish in enumerate(finishes):
        echo = completions.echo[i]  # offsets count the echoed prompt, which is not scored
        choices.append(
            CompletionChoice(
                text=echo + finish.text,
                index=i,
                logprobs=_logprobs(scored[i], len(echo)) if completions.logprobs else None,
                finish_reason=_finish(finish),
            )
        )
    return completions.completion(request_id, choices, completions.usage(finishes))


def _logprobs(tokens: list[TokenLogprob], start: int) -> CompletionLogprobs:
    """OpenAI's per-token log-probabilities; offsets count from `start` in the choice's text."""
    offsets = []
    for token in tokens:
        offsets.append(start)
        start += len(token.text)
    return CompletionLogprobs(
        tokens=[t.text for t in tokens],
        token_logprobs=[t.logprob for t in tokens],
        top_logprobs=[dict(t.top) for t in tokens],
        text_offset=offsets,
    )


FAILED = {"message": "generation failed", "type": "server_error", "param": None, "code": None}
FAILED_CHUNK = f"data: {json.dumps({'error': FAILED})}\n\n"


def _chunk(completions: _Completions, request_id: str, choice: CompletionChoice | None) -> str:
    body = completions.completion(request_id, [choice] if choice else [], None)
    return f"data: {body.model_dump_json()}\n\n"


async def _chunks(
    state: ServiceState, completions: _Completions, request_id: str, include_usage: bool
) -> AsyncIterator[str]:
    """One chunk per token (a choice's `index` says whose), one with each choice's finish_reason,
    then `data: [DONE]`; a failure mid-stream is an `error` chunk, as OpenAI sends it."""
    merged: asyncio.Queue[tuple[int, TokenEvent | FinishEvent]] = asyncio.Queue()

    async def pump(index: int) -> None:
        events = completions.runs[index].stream.events
        while True:
            event = await events.get()
            merged.put_nowait((index, event))
            if isinstance(event, FinishEvent):
                return

    pumps = [asyncio.create_task(pump(i)) for i in range(len(completions.runs))]
    finishes: list[FinishEvent] = []
    sent = [len(echo) for echo in completions.echo]  # characters of each choice's text so far
    try:
        for index, echo in enumerate(completions.echo):
            if echo:
                yield _chunk(
                    completions,
                    request_id,
                    CompletionChoice(text=echo, index=index, finish_reason=None),
                )
        while len(finishes) < len(pumps):
            # events already waiting go out in one write (a busy server sends fewer, larger
            # writes instead of falling behind)
            events = [await merged.get()]
            while not merged.empty():
                events.append(merged.get_nowait())
            frames: list[str] = []
            for index, event in events:
                scored = None
                if completions.logprobs:
                    scored = _logprobs(list(event.logprobs), sent[index])
                if isinstance(event, TokenEvent):
                    choice = CompletionChoice(
                        text=event.text, index=index, logprobs=scored, finish_reason=None
                    )
                    sent[index] += len(event.text)
                elif event.finish_reason in ("error", "cancelled"):
                    yield "".join(frames) + FAILED_CHUNK
                    return
                else:
                    finishes.append(event)
                    choice = CompletionChoice(
                        text="", index=index, logprobs=scored, finish_reason=_finish(event)
                    )
                frames.append(_chunk(completions, request_id, choice))
            tokens = sum(1 for _, event in events if isinstance(event, TokenEvent))
            state.metrics.tokens_generated.labels(completions.name).inc(tokens)
            yield "".join(frames)
        if include_usage:
            usage = completions.completion(request_id, [], completions.usage(finishes))
            yield f"data: {usage.model_dump_json()}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        completions.cancel()  # a client that went away stops its generations at the next step
        for task in pumps:
            task.cancel()


@router.post("/completions", response_model=Completion)
async def create_completion(
    body: CompletionRequest, state: State, request: Request
) -> Completion | StreamingResponse:
    """Continue a prompt (or several), OpenAI's way; `stream: true` answers with chunks."""
    stream = bool(body.stream)
    completions = _Completions(state, body, stream)
    request.state.model = completions.name
    request_id = str(getattr(request.state, "request_id", secrets.token_hex(16)))
    if not stream:
        return await _answer(state, completions, request_id)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(
        _chunks(state, completions, request_id, include_usage),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
