"""Request and response bodies of the OpenAI-compatible routes (/v1/completions, /v1/models), with
the bounds of the service's own /generate; parameters it cannot honour are refused by name."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from service.schemas import StrictModel

MAX_PROMPTS = 4  # texts in one `prompt` list
MAX_N = 8  # completions per prompt; with MAX_PROMPTS, at most 32 generations per request
MAX_STOPS = 4
MAX_STOP_CHARS = 64
MAX_LOGPROBS = 5  # alternatives per token, as OpenAI's own limit

Prompt = Annotated[str, Field(min_length=1)]
Stop = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]

# parameters of OpenAI's API that this service accepts only at their neutral value: the name,
# the neutral values, and why
UNSUPPORTED: dict[str, tuple[tuple[Any, ...], str]] = {
    "best_of": ((None, 1), "only best_of 1 is supported (use `n` for several completions)"),
    "suffix": ((None, ""), "insertion (`suffix`) is not supported by these left-to-right models"),
    "logit_bias": ((None, {}), "`logit_bias` is not supported"),
}


class StreamOptions(StrictModel):
    include_usage: bool | None = Field(
        None, description="Send one last chunk with the token counts (and no choices)."
    )


class CompletionRequest(StrictModel):
    model: str = Field(
        min_length=1, max_length=200, description="A language model listed by /v1/models."
    )
    prompt: Prompt | Annotated[list[Prompt], Field(min_length=1, max_length=MAX_PROMPTS)] = Field(
        description=f"Text to continue, or up to {MAX_PROMPTS} texts (each its own completions).",
        examples=["ROMEO:\n"],
    )
    max_tokens: int | None = Field(16, ge=1, le=2000, description="Tokens to generate at most.")
    temperature: float | None = Field(
        1.0, ge=0.0, le=2.0, allow_inf_nan=False, description="0 is greedy; higher is more random."
    )
    top_p: float | None = Field(
        1.0, gt=0.0, le=1.0, allow_inf_nan=False, description="Sample within this mass."
    )
    n: int | None = Field(1, ge=1, le=MAX_N, description="Completions per prompt.")
    stop: Stop | Annotated[list[Stop], Field(max_length=MAX_STOPS)] | None = Field(
        None, description=f"Up to {MAX_STOPS} strings that end a completion (not returned)."
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=2**53 - 1,
        description="Same seed, same text. Completion i (prompt by prompt, then n) uses seed + i.",
    )
    echo: bool | None = Field(False, description="Return the prompt before the completion.")
    stream: bool | None = Field(False, description="Answer with server-sent chunks.")
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(
        0.0, ge=-2.0, le=2.0, allow_inf_nan=False, description="As /generate's."
    )
    frequency_penalty: float | None = Field(
        0.0, ge=-2.0, le=2.0, allow_inf_nan=False, description="As /generate's."
    )
    repetition_penalty: float | None = Field(
        1.0, gt=0.0, le=2.0, allow_inf_nan=False, description="As /generate's (vLLM's extension)."
    )
    user: str | None = Field(None, max_length=256, description="Accepted and ignored.")
    # accepted only at their neutral values (the schema says which; `refused` says why)
    best_of: int | None = Field(None, json_schema_extra={"enum": [1, None]})
    suffix: str | None = Field(None, json_schema_extra={"enum": ["", None]})
    logit_bias: dict[str, int] | None = Field(None, json_schema_extra={"maxProperties": 0})
    logprobs: int | None = Field(
        None,
        ge=0,
        le=MAX_LOGPROBS,
        description="Each generated token's log-probability, and this many most likely "
        "alternatives at its place (the model's distribution before temperature and filters). "
        "With `echo`, the echoed prompt is not scored: the tokens start with the completion's, "
        "their offsets count from the start of the text, prompt included.",
    )

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def refused(self) -> tuple[str, str] | None:
        """The first parameter sent at a value this service cannot honour, and why."""
        for name, (neutral, reason) in UNSUPPORTED.items():
            if getattr(self, name) not in neutral:
                return name, reason
        return None


class CompletionLogprobs(BaseModel):
    tokens: list[str] = Field(description="The generated tokens, as text.")
    token_logprobs: list[float] = Field(description="Each token's log-probability.")
    top_logprobs: list[dict[str, float]] = Field(
        description="At each token's place, the most likely tokens and their log-probabilities."
    )
    text_offset: list[int] = Field(description="Where each token starts in the choice's text.")


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] | None


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Completion(BaseModel):
    id: str = Field(description="`cmpl-` and the request id.")
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(description="Unix time of the request.")
    model: str
    system_fingerprint: str | None = Field(None, description="The model's version.")
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(description="Unix time the service loaded it.")
    owned_by: str = "lstm-serve"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


PREFIX = "/v1/"  # the routes whose errors take OpenAI's shape, the HTTP layer's refusals too


def openai_error_body(
    status: int, message: str, param: str | None, code: str | None
) -> dict[str, Any]:
    """OpenAI's error shape; its clients pick their exception type from the status."""
    error_type = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(BaseModel):
    error: OpenAIError
