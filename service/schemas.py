"""Request and response models: every field typed, bounded and documented, so /docs is complete."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MODEL_MAX_LENGTH = 200
MODEL_FIELD = Field(
    None,
    description="Model name; omitted means the task's default model.",
    examples=[None],
    max_length=MODEL_MAX_LENGTH,
)


def _integral(value: Any) -> Any:
    """A JSON number with no fraction (2.0, 1e3) is the integer JSON Schema says it is; any
    other type still fails the strict integer check ("2" and true are not 2 or 1)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class StrictModel(BaseModel):
    """Unknown fields are an error, never silently ignored; values are never converted from
    another JSON type ("5" is not 5, true is not 1). A JSON integer is a valid number for a float
    field, and a number without a fraction (2.0) a valid integer, as JSON Schema has them."""

    model_config = ConfigDict(extra="forbid", strict=True, protected_namespaces=())

    @field_validator("*", mode="before")
    @classmethod
    def _integral_numbers(cls, value: Any) -> Any:
        return _integral(value)


MAX_BATCH_TEXTS = 1024  # the most LSTM_SERVE_MAX_BATCH_TEXTS allows; /docs shows the setting


def _blank_characters() -> str:
    """Whitespace (as str.isspace has it: \\x1c-\\x1f too) and characters that show nothing
    (Unicode format characters: zero-width space and joiners, the byte order mark, ...) of the
    Basic Multilingual Plane, as a regex class body of \\u escapes: the same in Python's re, in
    JSON Schema (ECMA-262) and in Rust's regex, which disagree about what \\s is."""
    codes = [
        code
        for code in range(0x10000)
        if chr(code).isspace() or unicodedata.category(chr(code)) == "Cf"
    ]
    return "".join(f"\\u{code:04x}" for code in codes)


# A text with at least one character that is neither whitespace nor invisible; the same pattern
# is in the OpenAPI document (JSON Schema `pattern`), so clients can check it before sending.
NOT_BLANK = f"[^{_blank_characters()}]"
_VISIBLE = re.compile(NOT_BLANK)


def visible(text: str) -> bool:
    """Whether the text has a character that is not whitespace or invisible."""
    return _VISIBLE.search(text) is not None


def _not_blank(value: str, field: str) -> str:
    if not visible(value):
        raise ValueError(
            f"{field} must contain at least one character that is not whitespace or invisible"
        )
    return value


VisibleText = Annotated[str, Field(json_schema_extra={"pattern": NOT_BLANK})]


# ---- errors ----


class ErrorDetail(BaseModel):
    field: str = Field(description="Dotted path of the offending field.", examples=["text"])
    message: str = Field(examples=["String should have at most 20000 characters"])


class ErrorResponse(BaseModel):
    """The one envelope every error response uses."""

    error: str = Field(
        description="What went wrong, naming the field and the limit.",
        examples=["`text` has 41,000 characters; the limit is 20,000"],
    )
    error_type: str = Field(examples=["validation_error"])
    request_id: str = Field(description="Also in the x-request-id header; quote it in bug reports.")
    details: list[ErrorDetail] | None = None


# ---- sentiment ----


class SentimentRequest(StrictModel):
    text: VisibleText = Field(
        description="The text to classify. Over-long texts are cut to the model's "
        "window (its start and end are kept) and the answer says so.",
        min_length=1,
        examples=["A wonderful, moving film with a superb cast."],
    )
    explain: bool = Field(False, description="Add each token's contribution to the score.")
    trajectory: bool = Field(
        False,
        description="Add each label's probability after up to 64 evenly spaced prefixes of the "
        "tokens read (every prefix when there are 64 or fewer), the last being the whole text: how "
        "the score moves as the text is read. Every prefix is read anew (a 512-token text: about "
        "60 ms more on one CPU thread).",
    )
    model: str | None = MODEL_FIELD

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        return _not_blank(value, "text")


class SentimentBatchRequest(StrictModel):
    texts: list[VisibleText] = Field(
        description="Up to 64 texts (the configured batch limit).",
        min_length=1,
        max_length=MAX_BATCH_TEXTS,
        examples=[["Great film.", "Dull and far too long."]],
    )
    explain: bool = False
    model: str | None = MODEL_FIELD

    @field_validator("texts")
    @classmethod
    def _texts(cls, value: list[str]) -> list[str]:
        for index, text in enumerate(value):
            _not_blank(text, f"texts[{index}]")
        return value


class TokenContribution(BaseModel):
    token: str
    start: int = Field(description="Character offset of the token in the original text.")
    end: int
    contribution: float = Field(
        description="Push towards the positive label (negative values "
        "push towards negative), gradient x input in logit units."
    )


class SentimentResult(BaseModel):
    label: str = Field(examples=["positive"])
    score: float = Field(description="Probability of the predicted label.", examples=[0.97])
    probabilities: dict[str, float] = Field(examples=[{"negative": 0.03, "positive": 0.97}])
    truncated: bool = Field(
        description="True when the text was longer than the model's window "
        "and only its start and end were read."
    )
    tokens: int = Field(description="Tokens the model read.")
    total_tokens: int = Field(description="Tokens in the whole text.")
    unknown_tokens: int = Field(
        0,
        description="Tokens read outside the model's vocabulary (another language, emoji, rare "
        "words). When they are more than half of the tokens read, the probabilities are pulled "
        "toward even in proportion: the model cannot read most of the text.",
    )
    explanation: list[TokenContribution] | None = None


class TrajectoryPoint(BaseModel):
    tokens: int = Field(description="Length of the prefix, in tokens read.", examples=[12])
    end: int = Field(description="Character offset in the text where the prefix ends.")
    probabilities: dict[str, float] = Field(
        description="Each label's calibrated probability after reading the prefix.",
        examples=[{"negative": 0.2, "positive": 0.8}],
    )


class SentimentResponse(SentimentResult):
    trajectory: list[TrajectoryPoint] | None = Field(
        None,
        description="With `trajectory: true`: the probabilities after each of up to 64 prefixes, "
        "shortest first; the last point is the whole text and equals `probabilities`.",
    )
    model: str
    model_version: str


class SentimentBatchResponse(BaseModel):
    results: list[SentimentResult]
    model: str
    model_version: str


# ---- next word ----


class NextWordRequest(StrictModel):
    text: str = Field(
        description="Text so far. If it ends inside a word, suggestions complete that word.",
        examples=["The history of the"],
    )
    top_k: int = Field(3, ge=1, le=20, description="How many suggestions.")
    model: str | None = MODEL_FIELD


class Suggestion(BaseModel):
    word: str = Field(
        description="A word of the vocabulary, or a word of the text that the vocabulary lacks "
        "(a name read earlier, say), which the continuous cache copies from the text."
    )
    probability: float = Field(
        description="The probability of this word at this point: the model's, mixed with its "
        "continuous cache where one is served; for a word the vocabulary lacks, the cache's "
        "copy of it."
    )


class NextWordResponse(BaseModel):
    suggestions: list[Suggestion]
    completing: bool = Field(description="True when the suggestions complete a partly typed word.")
    prefix: str | None = Field(description="The partly typed word being completed, if any.")
    truncated: bool = Field(
        description="True when the text had more words than the model's window (`max_length` in "
        "/models) and only its last `max_length` words were read."
    )
    context_tokens: int = Field(description="Words of context the model read.")
    unknown_words: int = Field(description="Context words outside the vocabulary (read as <unk>).")
    unknown_prefix: str | None = Field(
        None,
        description="When the text ends inside a word that no vocabulary word starts with (nor, "
        "with a continuous cache, a word of the text the vocabulary lacks): that word, read as a "
        "whole (unknown) word; the suggestions are next words, not completions.",
    )
    model: str
    model_version: str


# ---- generate ----


class GenerateRequest(StrictModel):
    prompt: str = Field(min_length=1, description="Text to continue.", examples=["ROMEO:\n"])
    max_new_tokens: int = Field(200, ge=1, le=2000, description="Tokens to generate at most.")
    temperature: float = Field(
        0.8, ge=0.0, le=5.0, allow_inf_nan=False, description="0 is greedy; higher is more random."
    )
    top_k: int = Field(0, ge=0, le=100_000, description="Sample among the k most likely (0: all).")
    top_p: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Sample within this probability mass (1: all).",
    )
    presence_penalty: float = Field(
        0.0,
        ge=-2.0,
        le=2.0,
        allow_inf_nan=False,
        description="Subtracted from the logit of every token already generated (0: none).",
    )
    frequency_penalty: float = Field(
        0.0,
        ge=-2.0,
        le=2.0,
        allow_inf_nan=False,
        description="Times its count so far, subtracted from a generated token's logit (0: none).",
    )
    repetition_penalty: float = Field(
        1.0,
        gt=0.0,
        le=2.0,
        allow_inf_nan=False,
        description="Each token of the prompt or of the text so far has a positive logit divided "
        "by it and a negative one multiplied (1: none; above 1 discourages repeats).",
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=2**53 - 1,  # exact in every JSON parser (beyond it, doubles round: 2**63 is not)
        description="Same seed, same text. Drawn and returned when omitted.",
    )
    stop: list[str] = Field(
        [],
        max_length=4,
        description="Up to 4 strings that end generation; the text returned stops before them.",
        examples=[["\n\n"]],
        json_schema_extra={"items": {"type": "string", "minLength": 1, "maxLength": 64}},
    )
    stream: bool = Field(False, description="Answer with Server-Sent Events, one per token.")
    model: str | None = MODEL_FIELD

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: list[str]) -> list[str]:
        for index, stop in enumerate(value):
            if not stop:
                raise ValueError(f"stop[{index}] is empty; stop strings need at least 1 character")
            if len(stop) > 64:
                raise ValueError(f"stop[{index}] has {len(stop)} characters; the limit is 64")
        return value


class GenerateResponse(BaseModel):
    text: str = Field(description="The generated text (without the prompt).")
    tokens: int = Field(description="Tokens generated.")
    finish_reason: Literal["length", "stop_sequence", "time_limit"] = Field(
        description="`length`: max_new_tokens reached; `stop_sequence`: a stop sequence was "
        "generated (it is not in `text`); `time_limit`: the deadline passed "
        "(LSTM_SERVE_REQUEST_TIMEOUT_S, or LSTM_SERVE_STREAM_TIMEOUT_S for a stream), `text` "
        "is what was generated until then."
    )
    seed: int | None = Field(
        description="The seed that gives this text again; null for greedy decoding "
        "(temperature 0), which draws nothing."
    )
    prompt_tokens: int
    unknown_prompt_tokens: int = Field(
        description="Prompt characters or words outside the vocabulary (read as the unknown token)."
    )
    model: str
    model_version: str


# ---- models and health ----


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    status: Literal["ready", "unavailable"]
    task: str | None = None
    version: str | None = None
    architecture: str | None = None
    cell: str | None = None
    parameters: int | None = None
    vocab_size: int | None = None
    max_length: int | None = None
    labels: list[str] | None = None
    metrics: dict[str, float] | None = None
    dataset: str | None = None
    device: str | None = None
    dtype: str | None = None
    continuous_cache: dict[str, float] | None = Field(
        None,
        description="The continuous cache generation mixes into the model's next-token "
        "distribution (window, theta, weight; fitted on validation text): the text read so far, "
        "the prompt included, can be copied. Null: none (the checkpoint has none, or "
        "LSTM_SERVE_CONTINUOUS_CACHE is off). `metrics.loss` is measured with it, "
        "`metrics.loss_without_cache` without.",
    )
    reads_speakers: bool | None = Field(
        None,
        description="A character model that reads who is speaking: in a play's text, a name "
        'line after a blank line ("ROMEO:") names the speaker until the next one, and the '
        "model reads that name beside every character, the prompt's and those it generates. "
        "False: a language model that reads none; null: the classifier.",
    )
    error: str | None = None


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded", "loading", "failed"]
    models: dict[str, str] | None = None
    engines: dict[str, int] | None = Field(
        None,
        description="Engine processes: how many are configured and running, and restarts so far "
        "(`degraded`: one is restarting; the others serve).",
    )
