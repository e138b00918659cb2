"""Bad input, systematically: one table of requests a client may send by mistake or on purpose,
each with the status and the answer the service owes it, run against a real app on tiny real
checkpoints with the README's default limits. An error must be the one envelope naming the field
and the limit, never a 500; a 200 must say what was done with the input (nothing dropped silently).

docs/RELIABILITY.md lists the same cases; `test_the_reliability_doc_lists_these_cases` keeps the
two equal, and `python -m tests.service.test_bad_input` prints the table's rows for the doc."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import CHAR_MAX_LENGTH, LM_MAX_LENGTH, SENTIMENT_MAX_LENGTH
from tests.service.support import assert_error, detail_fields, parse_sse

DOC = Path(__file__).resolve().parents[2] / "docs" / "RELIABILITY.md"
JSON = {"content-type": "application/json"}
ERROR_TYPES = {
    404: "model_not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    431: "headers_too_large",
}


@dataclass(frozen=True)
class Says:
    """What a 200 must say: a description, and a predicate on the answer (the JSON body; for a
    stream, the `done` event's data plus `events`, the event names in order)."""

    description: str
    holds: Callable[[dict[str, Any]], bool]


@dataclass(frozen=True)
class Case:
    id: str
    description: str
    path: str
    body: bytes
    status: int
    field: str = ""  # an error: the field its details name ("" for 413 and 431)
    message: str = ""  # an error: a fragment of its message
    says: Says | None = None  # a 200: what the answer must say
    method: str = "POST"
    headers: Mapping[str, str] = dataclasses.field(default_factory=lambda: JSON)
    bug: str = ""  # an open bug in a file owned elsewhere: xfail(strict=True) until it is fixed
    error_type: str = ""  # an error: when not the status's usual type

    @property
    def expected_type(self) -> str:
        return self.error_type or ERROR_TYPES[self.status]


def fails(
    id: str,
    description: str,
    path: str,
    body: bytes,
    status: int,
    field: str,
    message: str,
    **options: Any,
) -> Case:
    return Case(id, description, path, body, status, field, message, **options)


def answers(id: str, description: str, path: str, body: bytes, says: Says, **options: Any) -> Case:
    return Case(id, description, path, body, 200, says=says, **options)


def says(**expected: Any) -> Says:
    shown = ", ".join(f"{key}: {json.dumps(value)}" for key, value in expected.items())
    return Says(shown, lambda answer: all(answer.get(k) == v for k, v in expected.items()))


def streamed(tokens: int) -> Says:
    names = ["token"] * tokens + ["done"]
    return Says(
        f"{tokens} token events, then done with tokens: {tokens}",
        lambda answer: answer["events"] == names and answer["tokens"] == tokens,
    )


def raw(body: object) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


# ---- the endpoints: a valid body of each, with its text replaced on demand ----

SENTIMENT, BATCH, NEXT_WORD = "/sentiment", "/sentiment/batch", "/next-word"
GENERATE, STREAM = "/generate", "/generate/stream"
PATHS = {
    "sentiment": SENTIMENT,
    "batch": BATCH,
    "next-word": NEXT_WORD,
    "generate": GENERATE,
    "stream": STREAM,
}
TEXT_FIELD = {"sentiment": "text", "batch": "texts[1]", "next-word": "text"}
TEXT_FIELD |= {"generate": "prompt", "stream": "prompt"}
TEXT_LIMIT = {name: 8_000 if name in ("generate", "stream") else 20_000 for name in PATHS}
OK = {
    "sentiment": Says("a label", lambda a: a["label"] in ("negative", "positive")),
    "batch": Says("2 results", lambda a: len(a["results"]) == 2),
    "next-word": Says("3 suggestions", lambda a: len(a["suggestions"]) == 3),
    "generate": says(tokens=3),
    "stream": streamed(3),
}


def body_of(name: str, text: object = None, **extra: object) -> dict[str, Any]:
    """A valid body for the endpoint; `text` replaces its text (the second of a batch)."""
    if name == "sentiment":
        body: dict[str, Any] = {"text": "a great film" if text is None else text}
    elif name == "batch":
        body = {"texts": ["a great film", "a dull plot" if text is None else text]}
    elif name == "next-word":
        body = {"text": "the history of " if text is None else text}
    else:
        body = {"prompt": "to be" if text is None else text, "max_new_tokens": 3}
    return {**body, **extra}


def with_text(name: str, text: object = None, **extra: object) -> bytes:
    return raw(body_of(name, text, **extra))


def text_json(name: str, literal: bytes) -> bytes:
    """A valid body whose text is the given JSON string literal, written as it is (escapes kept)."""
    marker = "\x00marker\x00"
    return with_text(name, marker).replace(raw(marker), literal)


# ---- the table ----

LONG = "a great film " * 1540  # 20,020 characters, 4,620 words
EMOJI_RTL = "\U0001f600\U0001f3ac \u05e9\u05dc\u05d5\u05dd \u202eabc\u202c"
MISSING = {"sentiment": "text", "batch": "texts", "next-word": "text"}
MISSING |= {"generate": "prompt", "stream": "prompt"}
WRONG_TYPE = {
    "sentiment": ({"text": 5}, "text", "valid string"),
    "batch": ({"texts": "a great film"}, "texts", "valid list"),
    "next-word": ({"text": ["the"]}, "text", "valid string"),
    "generate": ({"prompt": None, "max_new_tokens": 3}, "prompt", "valid string"),
    "stream": ({"prompt": {"a": 1}}, "prompt", "valid string"),
}
STRING_NUMBER = {  # a number or boolean field sent as a JSON string
    "sentiment": ({"explain": "true"}, "explain", "valid boolean (got 'true')"),
    "batch": ({"explain": "yes"}, "explain", "valid boolean (got 'yes')"),
    "next-word": ({"top_k": "5"}, "top_k", "valid integer (got '5')"),
    "generate": ({"temperature": "0.5"}, "temperature", "valid number (got '0.5')"),
    "stream": ({"max_new_tokens": "3"}, "max_new_tokens", "valid integer (got '3')"),
}
WRONG_TASK = {
    "sentiment": ("generate", "cannot serve sentiment"),
    "batch": ("next-word", "cannot serve sentiment"),
    "next-word": ("sentiment", "cannot serve next-word"),
    "generate": ("sentiment", "cannot serve generate"),
    "stream": ("sentiment", "cannot serve generate"),
}
NOT_JSON = {
    "text-plain": {"content-type": "text/plain"},
    "form": {"content-type": "application/x-www-form-urlencoded"},
    "no-content-type": {},
}

# fmt: off
# Calls below are laid out as table rows: id, input, path, body, then the status with the field and
# a fragment of the message, or the 200 with what the answer says.


def _every_endpoint() -> Iterator[Case]:
    """The classes that apply to all five model endpoints alike: one case per endpoint."""
    for name, path in PATHS.items():
        text, limit = TEXT_FIELD[name], TEXT_LIMIT[name]
        key = text.split("[")[0]
        no_text = raw({"max_new_tokens": 3} if name in ("generate", "stream") else {})
        yield fails(f"missing-field/{name}", "the text field is absent", path, no_text,
                    422, MISSING[name], "Field required")
        yield fails(f"extra-field/{name}", "a field the endpoint does not have", path,
                    with_text(name, colour="red"),
                    422, "colour", "unknown field; the fields are")
        sent, field, message = WRONG_TYPE[name]
        yield fails(f"wrong-type/{name}", "the text field holds another JSON type", path,
                    raw(sent),
                    422, field, message)
        extra, field, message = STRING_NUMBER[name]
        yield fails(f"string-for-number/{name}", f"`{field}` sent as a JSON string", path,
                    with_text(name, **extra),
                    422, field, message)
        yield fails(f"not-an-object/{name}", "the body is a JSON string", path, raw("a film"),
                    422, "body", "valid dictionary")
        yield fails(f"empty-body/{name}", "no body at all", path, b"",
                    422, "body", "the request body is empty")
        yield fails(f"malformed-json/{name}", "JSON cut short", path, with_text(name)[:-3],
                    422, "body", "the body is not valid JSON: ")
        yield fails(f"duplicate-key/{name}", "the text field given twice", path,
                    b'{"' + key.encode() + b'": 1, ' + with_text(name)[1:],
                    422, key, f"`{key}` is given 2 times in one JSON object")
        yield fails(f"deep-nesting/{name}", "100,000 levels of [", path, b"[" * 100_000,
                    422, "body", "nested more than 32 levels deep; the limit is 32")
        yield fails(f"too-many-keys/{name}", "an object of 65 keys", path,
                    raw({f"k{i}": 0 for i in range(65)}),
                    422, "body", "has 65 keys; the limit is 64")
        yield fails(f"huge-integer/{name}", "a number of 5,000 digits", path,
                    with_text(name)[:-1] + b', "seed": ' + b"7" * 5000 + b"}",
                    422, "body", "more than 4,300 digits; the limit is 4,300")
        yield fails(f"invalid-utf8/{name}", "Latin-1 bytes where UTF-8 is required", path,
                    text_json(name, b'"caf\xe9"'),
                    422, "body", "not valid UTF-8 (byte 0xe9")
        yield fails(f"lone-surrogate/{name}", 'the JSON escape "\\ud800" alone in the text', path,
                    text_json(name, b'"a \\ud800 b"'),
                    422, text, f"`{text}` is not valid Unicode: a lone surrogate \\ud800")
        yield fails(f"raw-control-char/{name}", "an unescaped control byte in a string", path,
                    text_json(name, b'"a\x01b"'),
                    422, "body", "Invalid control character")
        yield fails(f"text-over-limit/{name}", f"one character over the limit of {limit:,}",
                    path, with_text(name, "x" * (limit + 1)),
                    422, text, f"`{text}` has {limit + 1:,} characters; the limit is {limit:,}")
        yield fails(f"body-over-1mb/{name}", "a body of 1,000,001 bytes", path,
                    with_text(name, "x" * (1_000_001 - len(with_text(name, "")))),
                    413, "", "request body is over the limit of 1,000,000 bytes")
        yield fails(f"unknown-model/{name}", "a model name that is not loaded", path,
                    with_text(name, model="nope"),
                    404, "", "model 'nope' is not loaded")
        other, message = WRONG_TASK[name]
        yield fails(f"wrong-task-model/{name}", f"the {other} model named for this task", path,
                    with_text(name, model=other),
                    404, "", message)
        yield fails(f"model-name-too-long/{name}", "a model name of 201 characters", path,
                    with_text(name, model="m" * 201),
                    422, "model", "at most 200 characters")
        for kind, headers in NOT_JSON.items():
            got = repr(headers["content-type"]) if headers else "no Content-Type header"
            yield fails(f"{kind}/{name}", f"a JSON body sent with {got}", path, with_text(name),
                        415, "Content-Type", f"must be application/json (got {got})",
                        headers=headers)
        yield answers(f"nul-and-controls/{name}", "escaped NUL and control characters", path,
                      text_json(name, b'"to\\u0000\\u0001\\u001f be"'),
                      OK[name])
        yield answers(f"emoji-rtl/{name}", "emoji, Hebrew and a right-to-left override", path,
                      with_text(name, EMOJI_RTL),
                      OK[name])
        yield answers(f"surrogate-pair/{name}", 'an emoji as the escapes "\\ud83d\\ude00"', path,
                      text_json(name, b'"\\ud83d\\ude00 film"'),
                      OK[name])
        yield answers(f"json-charset/{name}", "Content-Type: application/json; charset=utf-8",
                      path, with_text(name),
                      OK[name], headers={"content-type": "application/json; charset=utf-8"})


def _per_endpoint() -> Iterator[Case]:
    """Classes whose answer depends on what the endpoint does with its text."""
    s, b, n, g, t = SENTIMENT, BATCH, NEXT_WORD, GENERATE, STREAM
    window, over = SENTIMENT_MAX_LENGTH, CHAR_MAX_LENGTH + 1
    yield fails("empty-text/sentiment", 'text ""', s, with_text("sentiment", ""),
                422, "text", "at least 1 character")
    yield fails("empty-text/batch", 'texts[1] ""', b, with_text("batch", ""),
                422, "texts", "texts[1] must contain at least one character that is not whitespace")
    yield answers("empty-text/next-word", 'text "": suggestions for a first word', n,
                  with_text("next-word", ""),
                  says(context_tokens=0, unknown_words=0))
    yield fails("empty-text/generate", 'prompt ""', g, with_text("generate", ""),
                422, "prompt", "at least 1 character")
    yield fails("empty-text/stream", 'prompt ""', t, with_text("stream", ""),
                422, "prompt", "at least 1 character")
    yield fails("whitespace-text/sentiment", "spaces, a tab and a newline", s,
                with_text("sentiment", " \t\n "),
                422, "text", "not whitespace or invisible")
    yield fails("zero-width-text/sentiment", "zero-width space, joiner and BOM only", s,
                with_text("sentiment", "\u200b\u200d\ufeff"),
                422, "text", "not whitespace or invisible")
    yield fails("whitespace-text/batch", "texts[1] of whitespace only", b,
                with_text("batch", " \t\n "),
                422, "texts", "texts[1] must contain")
    yield answers("whitespace-text/next-word", "whitespace only: no words of context", n,
                  with_text("next-word", " \t\n "),
                  says(context_tokens=0))
    yield answers("whitespace-text/generate", "whitespace is text to a character model", g,
                  with_text("generate", " \t\n "),
                  says(prompt_tokens=4, tokens=3))
    yield answers("whitespace-text/stream", "a whitespace prompt, streamed", t,
                  with_text("stream", " \t\n "),
                  streamed(3))
    yield answers("over-window/sentiment", "20,000 characters: more tokens than the window", s,
                  with_text("sentiment", LONG[:20_000]),
                  Says(f"truncated: true, tokens: {window}, total_tokens: 4616",
                       lambda a: a["truncated"] and (a["tokens"], a["total_tokens"]) == (16, 4616)))
    yield answers("over-window/batch", "64 texts of 15,000 characters (960 kB)", b,
                  raw({"texts": [LONG[:15_000]] * 64}),
                  Says("64 results, each truncated: true",
                       lambda a: [r["truncated"] for r in a["results"]] == [True] * 64))
    yield answers("over-window/next-word", "more words than the model's window", n,
                  with_text("next-word", LONG[:20_000]),
                  says(truncated=True, context_tokens=LM_MAX_LENGTH))
    yield fails("over-window/generate", f"a prompt of {over} characters (window {over - 1})", g,
                with_text("generate", "t" * over),
                422, "prompt", f"`prompt` has {over} tokens; the limit is {over - 1}")
    yield fails("over-window/stream", f"a prompt of {over} characters, streamed", t,
                with_text("stream", "t" * over),
                422, "prompt", f"`prompt` has {over} tokens; the limit is {over - 1}")
    yield fails("too-many-texts/batch", "65 texts (max_batch_texts is 64)", b,
                raw({"texts": ["a film"] * 65}),
                422, "texts", "`texts` has 65 items; the limit is 64")
    yield fails("no-texts/batch", "an empty list of texts", b, raw({"texts": []}),
                422, "texts", "at least 1 item")
    yield answers("unknown-words/sentiment", "only words outside the vocabulary", s,
                  with_text("sentiment", "zzzq qqqz"),
                  says(tokens=2, total_tokens=2))
    yield answers("unknown-words/next-word", "only words outside the vocabulary", n,
                  with_text("next-word", "zzzq qqqz "),
                  says(context_tokens=2, unknown_words=2))
    yield answers("unknown-words/generate", "only characters outside the vocabulary", g,
                  with_text("generate", "ZQXJ"),
                  says(prompt_tokens=4, unknown_prompt_tokens=4))
    yield answers("unknown-words/word-model", "unknown words to the word-level generator", g,
                  with_text("generate", "zzzq qqqz", model="next-word"),
                  says(prompt_tokens=2, unknown_prompt_tokens=2))
    yield answers("unknown-words/stream", "only characters outside the vocabulary", t,
                  with_text("stream", "ZQXJ"),
                  streamed(3))


def _parameters() -> Iterator[Case]:
    """Generation and next-word parameters: types, NaN and infinities, ranges."""
    g, t, n = GENERATE, STREAM, NEXT_WORD
    for literal in ("NaN", "Infinity", "-Infinity", "1e400"):
        for name in ("temperature", "top_p"):
            body = with_text("generate")[:-1] + f', "{name}": {literal}}}'.encode()
            yield fails(f"{name}={literal}/generate", f"{name}: {literal}", g, body,
                        422, name, "Input should be a finite number")
    yield fails("temperature=NaN/stream", "temperature: NaN, streamed", t,
                with_text("stream")[:-1] + b', "temperature": NaN}',
                422, "temperature", "Input should be a finite number")
    ranges: list[tuple[str, object, str]] = [
        ("temperature", -0.1, "greater than or equal to 0"),
        ("temperature", 5.01, "less than or equal to 5"),
        ("top_p", 0, "greater than 0"),
        ("top_p", 1.0000001, "less than or equal to 1"),
        ("max_new_tokens", 0, "greater than or equal to 1"),
        ("max_new_tokens", -5, "greater than or equal to 1"),
        ("max_new_tokens", 2001, "less than or equal to 2000"),
        ("max_new_tokens", 10**30, "less than or equal to 2000"),
        ("top_k", -1, "greater than or equal to 0"),
        ("top_k", 100_001, "less than or equal to 100000"),
        ("seed", -1, "greater than or equal to 0"),
        ("seed", 2**53, "less than or equal to 9007199254740991"),
    ]
    for name, value, message in ranges:
        yield fails(f"{name}={value}/generate", f"{name}: {value}", g,
                    with_text("generate", **{name: value}),
                    422, name, f"{message} (got {value!r})")
    yield fails("max_new_tokens=0/stream", "max_new_tokens: 0, streamed", t,
                with_text("stream", max_new_tokens=0),
                422, "max_new_tokens", "greater than or equal to 1 (got 0)")
    top_k: list[tuple[int, str]] = [
        (0, "greater than or equal to 1"), (21, "less than or equal to 20"),
        (-5, "greater than or equal to 1"), (10**30, "less than or equal to 20"),
    ]
    for value, message in top_k:
        yield fails(f"top_k={value}/next-word", f"top_k: {value}", n,
                    with_text("next-word", top_k=value),
                    422, "top_k", f"{message} (got {value!r})")
    yield fails("bool-for-int/generate", "max_new_tokens: true", g,
                with_text("generate", max_new_tokens=True),
                422, "max_new_tokens", "valid integer (got true)")
    yield fails("fraction-for-int/generate", "max_new_tokens: 2.5", g,
                with_text("generate", max_new_tokens=2.5),
                422, "max_new_tokens", "valid integer (got 2.5)")
    yield fails("int-for-bool/batch", "explain: 1", BATCH, with_text("batch", explain=1),
                422, "explain", "valid boolean (got 1)")
    yield fails("null-for-float/generate", "temperature: null", g,
                with_text("generate", temperature=None),
                422, "temperature", "valid number (got null)")
    yield answers("int-for-float/generate", "temperature: 1 and top_p: 1, JSON integers", g,
                  with_text("generate", temperature=1, top_p=1),
                  says(tokens=3))
    yield answers("int-for-float/stream", "temperature: 0 and top_p: 1, streamed", t,
                  with_text("stream", temperature=0, top_p=1),
                  streamed(3))


def _stops_streams_and_http() -> Iterator[Case]:
    g, t = GENERATE, STREAM
    for path, name in ((g, "generate"), (t, "stream")):
        yield fails(f"five-stops/{name}", "5 stop strings (the limit is 4)", path,
                    with_text(name, stop=["a", "b", "c", "d", "e"]),
                    422, "stop", "at most 4 items")
        yield fails(f"empty-stop/{name}", 'a stop string ""', path,
                    with_text(name, stop=["a", ""]),
                    422, "stop", "stop[1] is empty; stop strings need at least 1 character")
    yield fails("long-stop/generate", "a stop string of 65 characters", g,
                with_text("generate", stop=["s" * 65]),
                422, "stop", "stop[0] has 65 characters; the limit is 64")
    yield fails("stop-not-a-list/generate", 'stop: "a"', g, with_text("generate", stop="a"),
                422, "stop", "valid list")
    yield fails("surrogate-stop/generate", 'a stop string "\\udfff"', g,
                with_text("generate", stop=["\udfff"]),
                422, "stop[0]", "a lone surrogate \\udfff at character 0")
    yield fails("get-stream", "GET on the stream route", t, b"",
                405, "", "GET is not allowed on this route; use POST", method="GET", headers={})
    yield fails("put-sentiment", "PUT on a POST route", SENTIMENT, with_text("sentiment"),
                405, "", "PUT is not allowed on this route; use POST", method="PUT")
    yield answers("stream-false/stream", "the stream route with stream: false", t,
                  with_text("stream", stream=False),
                  streamed(3))
    yield answers("accept-json/stream", "the stream route with Accept: application/json", t,
                  with_text("stream"),
                  streamed(3), headers={**JSON, "accept": "application/json"})
    yield answers("accept-sse/generate", "/generate with Accept: text/event-stream", g,
                  with_text("generate"),
                  says(tokens=3, finish_reason="length"),
                  headers={**JSON, "accept": "text/event-stream"})
    yield answers("stream-true/generate", "/generate with stream: true", g,
                  with_text("generate", stream=True),
                  streamed(3))
    resume = {**JSON, "last-event-id": "7"}
    yield fails("last-event-id/stream", "Last-Event-ID: 7, asking to resume a stream", t,
                with_text("stream"),
                422, "Last-Event-ID", "a stream cannot be resumed", headers=resume)
    yield fails("last-event-id/generate", "Last-Event-ID with stream: true", g,
                with_text("generate", stream=True),
                422, "Last-Event-ID", "a stream cannot be resumed", headers=resume)
    yield fails("unknown-route", "a POST to a path that does not exist", "/sentiments",
                with_text("sentiment"),
                404, "", "no route matches this path", error_type="not_found")
    yield fails("too-many-headers", "101 headers (the limit is 100)", SENTIMENT,
                with_text("sentiment"),
                431, "headers", "the limits are 100 headers",
                headers={**JSON, **{f"x-h{i}": "1" for i in range(100)}})
    yield fails("huge-header", "a header of 40,000 bytes (32,768 in all is the limit)",
                SENTIMENT, with_text("sentiment"),
                431, "headers", "and 32,768 bytes", headers={**JSON, "x-big": "b" * 40_000})


# fmt: on
def _by_class(cases: Iterator[Case]) -> list[Case]:
    """Cases of one class next to each other (the id before the slash), classes in order."""
    listed = list(cases)
    order = list(dict.fromkeys(case.id.split("/")[0] for case in listed))
    return sorted(listed, key=lambda case: order.index(case.id.split("/")[0]))


CASES: list[Case] = [
    *_by_class(_every_endpoint()),
    *_per_endpoint(),
    *_parameters(),
    *_stops_streams_and_http(),
]


# ---- the test ----


def _answer(response: Any) -> dict[str, Any]:
    if response.headers["content-type"].startswith("text/event-stream"):
        events = parse_sse(response.text)
        done: dict[str, Any] = events[-1][1]
        return {**done, "events": [name for name, _ in events]}
    body: dict[str, Any] = response.json()
    return body


def _param(case: Case) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_bad_input_gets_its_documented_answer(
    default_limits_client: TestClient, case: Case
) -> None:
    response = default_limits_client.request(
        case.method, case.path, content=case.body, headers=dict(case.headers)
    )
    assert "Traceback" not in response.text
    if case.status != 200:
        body = assert_error(response, case.status, case.expected_type)
        assert case.message in body["error"], body["error"]
        if case.field:
            assert case.field in detail_fields(body), body
    else:
        assert response.status_code == 200, response.text[:500]
        assert case.says is not None
        answer = _answer(response)
        assert case.says.holds(answer), (case.says.description, answer)
    # whatever was sent, the service goes on serving everyone else
    assert default_limits_client.get("/health/ready").status_code == 200


def test_the_table_is_sound() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    for case in CASES:
        assert (case.status == 200) == (case.says is not None), case.id
        assert case.status == 200 or case.message, case.id


# ---- the doc ----


def _input(case: Case) -> str:
    return case.description.replace("|", "\\|")


def _answer_text(case: Case) -> str:
    if case.says is not None:
        text = case.says.description
    else:
        named = f" naming `{case.field}`" if case.field else ""
        text = f"`{case.expected_type}`{named}: “{case.message}”"
    if case.bug:
        text += " (open bug: see the test)"
    return text.replace("|", "\\|")


def doc_rows() -> list[str]:
    """The rows of docs/RELIABILITY.md's "Bad input" table."""
    rows = ["| id | input | status | answer |", "|---|---|---|---|"]
    for case in CASES:
        route = f"{case.method} {case.path}"
        rows.append(
            f"| `{case.id}` | {_input(case)} ({route}) | {case.status} | {_answer_text(case)} |"
        )
    return rows


def _doc_table(section: str) -> list[tuple[str, int]]:
    text = DOC.read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    rows = []
    for line in text[start : end if end >= 0 else None].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 3:
            rows.append((cells[0].strip("`"), int(cells[2])))
    return rows


def test_the_reliability_doc_lists_these_cases() -> None:
    """docs/RELIABILITY.md's "Bad input" table has the same ids and statuses, in order."""
    assert _doc_table("Bad input") == [(case.id, case.status) for case in CASES]


if __name__ == "__main__":
    print("\n".join(doc_rows()))
