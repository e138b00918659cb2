"""Property-based fuzzing of every model endpoint from the service's own OpenAPI document.

Requests come from two sources: bodies generated from each operation's request schema (valid by
the schema, so they exercise the models and the limits the schema cannot state), and hostile ones
(wrong types, NaN and Infinity, stray fields, nesting, raw bytes). Every answer must have a status
that the operation documents, and a body that validates against the schema documented for that
status; streamed answers must be well-formed Server-Sent Events that end in `done` or `error`.

FUZZ_EXAMPLES sets the number of generated requests per endpoint and source (150 here; the full
run in docs/RELIABILITY.md uses 5,000).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from tests.service.conftest import SettingsFactory
from tests.service.support import parse_sse, serve

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
GENERATED_AT_MOST = 40  # tokens a fuzzed generation asks for
ROUTES = ["/sentiment", "/sentiment/batch", "/next-word", "/generate", "/generate/stream"]


@pytest.fixture(scope="module")
def fuzz_client(make_settings: SettingsFactory) -> Iterator[TestClient]:
    """The served app with the README's default limits (so schema-valid bodies reach the model)
    and a deadline that a 2,000-token generation on a tiny model never meets."""
    with serve(make_settings(max_text_chars=20_000, max_prompt_chars=8_000)) as client:
        yield client


@pytest.fixture(scope="module")
def spec(fuzz_client: TestClient) -> dict[str, Any]:
    document: dict[str, Any] = fuzz_client.get("/openapi.json").json()
    return document


def _inline(node: Any, components: dict[str, Any]) -> Any:
    """The schema with every local $ref replaced by what it points to."""
    if isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].removeprefix("#/components/schemas/")
            return _inline(components[name], components)
        return {key: _inline(value, components) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(value, components) for value in node]
    return node


def _operation(spec: dict[str, Any], path: str) -> dict[str, Any]:
    operation: dict[str, Any] = spec["paths"][path]["post"]
    return operation


def request_schema(spec: dict[str, Any], path: str) -> dict[str, Any]:
    content = _operation(spec, path)["requestBody"]["content"]["application/json"]
    schema: dict[str, Any] = _inline(content["schema"], spec["components"]["schemas"])
    if "max_new_tokens" in schema.get("properties", {}):
        # a generation's length changes no rule the property checks, only the suite's time (on
        # the tiny test model, 2,000 tokens are ~0.5 s; the bound itself is in the bad-input table)
        schema["properties"]["max_new_tokens"]["maximum"] = GENERATED_AT_MOST
    return schema


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid by a JSON schema, for the keywords the service's request schemas use."""
    if "anyOf" in schema:
        return st.one_of([from_schema(option) for option in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "object":
        properties = {name: from_schema(sub) for name, sub in schema["properties"].items()}
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {name: properties[name] for name in required},
            optional={name: s for name, s in properties.items() if name not in required},
        )
    if kind == "string":
        size = min(schema.get("maxLength", 2_000), 2_000)  # longer ones: the bad-input table
        return st.text(min_size=schema.get("minLength", 0), max_size=size)
    if kind == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        return st.integers(None if low is None else int(low), None if high is None else int(high))
    if kind == "number":
        return st.floats(
            schema.get("minimum", schema.get("exclusiveMinimum")),
            schema.get("maximum", schema.get("exclusiveMaximum")),
            exclude_min="exclusiveMinimum" in schema,
            exclude_max="exclusiveMaximum" in schema,
            allow_nan=False,
        )
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        return st.lists(
            from_schema(schema["items"]),
            min_size=schema.get("minItems", 0),
            max_size=min(schema.get("maxItems", 8), 8),
        )
    raise AssertionError(f"the fuzzer does not know this schema: {schema}")


def check_response(spec: dict[str, Any], path: str, response: Any, sent: str) -> None:
    """The status is documented for the operation, the body validates against its schema."""
    documented = _operation(spec, path)["responses"]
    context = (path, sent[:300], response.status_code, response.text[:300])
    assert str(response.status_code) in documented, context
    content_type = response.headers["content-type"]
    if content_type.startswith("text/event-stream"):
        assert response.status_code == 200, context
        events = parse_sse(response.text)
        assert events and events[-1][0] in {"done", "error"}, context
        assert all(name == "token" for name, _ in events[:-1]), context
        return
    assert content_type == "application/json", context
    schema = documented[str(response.status_code)]["content"]["application/json"]["schema"]
    validator = Draft202012Validator(_inline(schema, spec["components"]["schemas"]))
    errors = [error.message for error in validator.iter_errors(response.json())]
    assert not errors, (*context, errors)


# ---- hostile bodies ----

text = st.text(max_size=60) | st.text(alphabet=st.characters(codec="utf-8"), max_size=600)
scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | text
value = st.recursive(
    scalar,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
generate_fields = {
    "prompt": text,
    "max_new_tokens": st.integers(-3, 40) | value,
    "temperature": st.floats(allow_nan=True, allow_infinity=True) | value,
    "top_k": st.integers(-2, 50) | value,
    "top_p": st.floats(allow_nan=True, allow_infinity=True) | value,
    "seed": st.integers(-10, 2**64) | value,
    "stop": st.lists(text, max_size=6) | value,
    "stream": st.booleans(),
}
FIELDS = {
    "/sentiment": {"text": text, "explain": st.booleans() | value, "model": st.none() | text},
    "/sentiment/batch": {"texts": st.lists(text, max_size=6) | value, "explain": st.booleans()},
    "/next-word": {"text": text, "top_k": st.integers(-5, 30) | value, "model": st.none() | text},
    "/generate": generate_fields,
    "/generate/stream": generate_fields,
}


def hostile(path: str) -> st.SearchStrategy[Any]:
    """Subsets of the endpoint's fields with valid or hostile values, stray fields, non-objects."""
    known = st.fixed_dictionaries({}, optional=FIELDS[path])
    return st.one_of(
        known,
        st.dictionaries(st.text(max_size=10), value, max_size=4),
        known.map(lambda body: {**body, "unexpected": 1}),
        value,
    )


def _post(client: TestClient, path: str, raw: str | bytes) -> Any:
    return client.post(path, content=raw, headers={"content-type": "application/json"})


_FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize("path", ROUTES)
def test_bodies_from_the_schema(fuzz_client: TestClient, spec: dict[str, Any], path: str) -> None:
    @_FUZZ
    @given(body=from_schema(request_schema(spec, path)))
    def run(body: Any) -> None:
        raw = json.dumps(body)
        check_response(spec, path, _post(fuzz_client, path, raw), raw)

    run()


@pytest.mark.parametrize("path", ROUTES)
def test_hostile_bodies(fuzz_client: TestClient, spec: dict[str, Any], path: str) -> None:
    @_FUZZ
    @given(body=hostile(path))
    def run(body: Any) -> None:
        raw = json.dumps(body, allow_nan=True)  # NaN and Infinity as JavaScript writes them
        check_response(spec, path, _post(fuzz_client, path, raw), raw)

    run()


@pytest.mark.parametrize("path", ROUTES)
def test_raw_bytes(fuzz_client: TestClient, spec: dict[str, Any], path: str) -> None:
    """Bodies that are not JSON, or not UTF-8."""

    @_FUZZ
    @given(raw=st.binary(max_size=300))
    def run(raw: bytes) -> None:
        check_response(spec, path, _post(fuzz_client, path, raw), repr(raw))

    run()


def test_a_body_that_is_not_utf8_is_a_422_naming_the_body(client: TestClient) -> None:
    response = client.post(
        "/sentiment", content=b'{"text": "caf\xe9"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == (
        "the body is not valid UTF-8 (byte 0xe9 at position 13); JSON must be UTF-8"
    )
    assert body["details"] == [{"field": "body", "message": body["error"]}]
    assert response.headers["x-request-id"] == body["request_id"]


def test_the_checker_rejects_an_undocumented_status_and_a_wrong_body(
    fuzz_client: TestClient, spec: dict[str, Any]
) -> None:
    """The property would catch a broken answer: a 500, and a 200 missing a required field."""

    class Fake:
        def __init__(self, status: int, body: dict[str, Any]) -> None:
            self.status_code, self.text = status, json.dumps(body)
            self.headers = {"content-type": "application/json"}
            self._body = body

        def json(self) -> dict[str, Any]:
            return self._body

    error = {"error": "x", "error_type": "internal_error", "request_id": "r"}
    with pytest.raises(AssertionError):
        check_response(spec, "/sentiment", Fake(500, error), "{}")
    good = fuzz_client.post("/sentiment", json={"text": "a fine film"}).json()
    check_response(spec, "/sentiment", Fake(200, good), "{}")
    with pytest.raises(AssertionError):
        check_response(spec, "/sentiment", Fake(200, {k: good[k] for k in list(good)[1:]}), "{}")
