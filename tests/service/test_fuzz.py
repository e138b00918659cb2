"""Generated requests, valid and not, against every model endpoint: the answer is always a
documented status in the one error envelope, never a 500. (A few hundred cases per endpoint here;
raise FUZZ_EXAMPLES for a longer run.)"""

from __future__ import annotations

import json
import os
from typing import Any

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
DOCUMENTED = {200, 404, 413, 422}

text = st.text(max_size=60) | st.text(alphabet=st.characters(codec="utf-8"), max_size=600)
scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | text
value = st.recursive(
    scalar,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
FIELDS = {
    "/sentiment": {"text": text, "explain": st.booleans() | value, "model": st.none() | text},
    "/sentiment/batch": {"texts": st.lists(text, max_size=6) | value, "explain": st.booleans()},
    "/next-word": {"text": text, "top_k": st.integers(-5, 30) | value, "model": st.none() | text},
    "/generate": {
        "prompt": text,
        "max_new_tokens": st.integers(-3, 40) | value,
        "temperature": st.floats(allow_nan=True, allow_infinity=True) | value,
        "top_k": st.integers(-2, 50) | value,
        "top_p": st.floats(allow_nan=True, allow_infinity=True) | value,
        "seed": st.integers(-10, 2**64) | value,
        "stop": st.lists(text, max_size=6) | value,
        "stream": st.booleans(),
    },
}


def bodies(path: str) -> st.SearchStrategy[dict[str, Any]]:
    """Subsets of the endpoint's fields with valid or hostile values, plus stray fields."""
    fields = FIELDS[path]
    known = st.fixed_dictionaries({}, optional=fields)
    return st.one_of(
        known,
        st.dictionaries(st.text(max_size=10), value, max_size=4),
        known.map(lambda body: {**body, "unexpected": 1}),
    )


def _check(client: TestClient, path: str, body: Any) -> None:
    raw = json.dumps(body, allow_nan=True)  # NaN and Infinity as JavaScript writes them
    response = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code in DOCUMENTED, (path, raw[:300], response.text[:300])
    if response.status_code != 200:
        envelope = response.json()
        assert set(envelope) >= {"error", "error_type", "request_id"}, envelope
    elif response.headers["content-type"].startswith("text/event-stream"):
        assert "event: done" in response.text or "event: error" not in response.text


def _fuzz(path: str) -> Any:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(body=bodies(path))
    def run(client: TestClient, body: dict[str, Any]) -> None:
        _check(client, path, body)

    return run


test_fuzz_sentiment = _fuzz("/sentiment")
test_fuzz_sentiment_batch = _fuzz("/sentiment/batch")
test_fuzz_next_word = _fuzz("/next-word")
test_fuzz_generate = _fuzz("/generate")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(raw=st.binary(max_size=300))
def test_fuzz_raw_bytes(client: TestClient, raw: bytes) -> None:
    """Bodies that are not JSON, or not UTF-8, at every endpoint."""
    for path in FIELDS:
        response = client.post(path, content=raw, headers={"content-type": "application/json"})
        assert response.status_code in DOCUMENTED, (path, raw, response.text[:300])


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
