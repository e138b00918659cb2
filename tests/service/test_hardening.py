"""Defects an outside attack run found, each with the test that would have caught it: hostile
bodies that froze the event loop, answers shaped by the client (Host, charsets, encodings, long
keys), errors in more than one shape, metrics that lost the route, integral numbers refused."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import Checkpoints
from tests.service.support import assert_error, wait_until
from tests.service.support import service_process as start_service

# ---- one request must not freeze the server ----

ITEMS = 1_000_000 // 6  # about 1 MB of items of each shape


def _hostile_bodies() -> dict[str, bytes]:
    def texts(item: bytes, count: int) -> bytes:
        return b'{"texts": [' + b",".join([item] * count) + b"]}"

    keys = b",".join(b'"k%d": 1' % index for index in range(80_000))  # under 1,000,000 bytes
    return {
        "wrong-type": texts(b"1", 450_000),
        "true": texts(b"true", 190_000),
        "null": texts(b"null", 190_000),
        "empty-list": texts(b"[]", 300_000),
        "strings": texts(b'""', 300_000),
        "many-keys": b"{" + keys + b"}",
    }


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def _post_raw(port: int, body: bytes, answers: list[int]) -> None:
    head = (
        f"POST /sentiment/batch HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    answers.append(int(reply.split(b" ", 2)[1]))


def _probe(client: httpx.Client) -> float:
    started = time.perf_counter()
    assert client.get("/health/live").status_code == 200
    time.sleep(0.005)
    return time.perf_counter() - started - 0.005


def _p90(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.9)]


@contextmanager
def service_process(
    checkpoints: Checkpoints, tmp_path: Path, **env: str
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`python -m service` with the README's default limits and one in-process engine, once
    ready."""
    log = tmp_path / "service.log"
    with start_service(checkpoints.root, log, LSTM_SERVE_ENGINES="0", **env) as (process, port):
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url) as client:
            wait_until(lambda: _answers(client), 120, "the service to be ready")
        yield process, url


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/health/ready").status_code == 200
    except httpx.TransportError:
        return False


def test_hostile_bodies_in_flight_leave_the_server_answering(
    checkpoints: Checkpoints, tmp_path: Path
) -> None:
    """Three ~1 MB bodies of each hostile shape at once (400,000 items of the wrong type once took
    2.6-4.1 s of the event loop and 390 MB): /health/live answers within 50 ms meanwhile (over
    what the same probe takes on this machine without them), each body gets its 422, and memory
    grows by less than 50 MiB."""
    bodies = _hostile_bodies()
    with (
        service_process(checkpoints, tmp_path) as (process, url),
        httpx.Client(base_url=url) as client,
    ):
        port = int(url.rsplit(":", 1)[1])
        client.get("/health/live")
        # the same probes without the bodies: what this machine's load alone costs a probe
        baseline = _p90([_probe(client) for _ in range(100)])
        before, peak, probes = _rss_mib(process.pid), 0.0, []
        answers: list[int] = []
        threads = [
            threading.Thread(target=_post_raw, args=(port, body, answers))
            for body in bodies.values()
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            probes.append(_probe(client))
            peak = max(peak, _rss_mib(process.pid))
        for thread in threads:
            thread.join()
    assert answers == [422] * len(threads)
    # p90, over this machine's own: the suite shares 2 cores with other work (a training run)
    assert _p90(probes) < 0.050 + baseline, f"/health/live p90 {_p90(probes) * 1000:.0f} ms"
    assert max(probes) < 0.5, f"/health/live took {max(probes) * 1000:.0f} ms"
    assert peak - before < 50, f"RSS grew by {peak - before:.0f} MiB"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"texts": ["a film"] * 2000}, "`texts` has 2,000 items; the limit is 1,024"),
        ({"texts": [1] * 5000}, "more than 4,096 values"),
        ({"texts": ["a"] * 5000}, "more than 4,096 strings"),
        ({"texts": [[]] * 200}, "more than 128 arrays and objects"),
    ],
)
def test_long_arrays_are_refused_before_validation(
    default_limits_client: TestClient, body: Any, message: str
) -> None:
    answer = assert_error(
        default_limits_client.post("/sentiment/batch", json=body), 422, "validation_error"
    )
    assert message in answer["error"]
    assert len(answer["details"]) == 1


# ---- numbers ----


def test_an_integral_number_is_an_integer(client: TestClient) -> None:
    """JSON Schema calls 2.0 an integer; it was refused. 2.5, "2" and true still are."""
    body = {"prompt": "to be", "max_new_tokens": 2.0, "top_k": 5.0, "seed": 7.0}
    answer = client.post("/generate", json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["tokens"] == 2 and answer.json()["seed"] == 7
    for value in (2.5, "2", True):
        response = client.post("/generate", json={"prompt": "to be", "max_new_tokens": value})
        assert_error(response, 422, "validation_error")


# ---- answers the client must not shape ----


def test_text_of_invisible_characters_only_is_blank(client: TestClient) -> None:
    for text in ("\u200b", "\u200b\u200c\u200d\u2060\ufeff", " \u200b\n"):
        response = client.post("/sentiment", json={"text": text})
        assert_error(response, 422, "validation_error")
    assert client.post("/sentiment", json={"text": "\u200bgreat"}).status_code == 200


def test_a_redirect_never_names_the_host_the_client_sent(client: TestClient) -> None:
    response = client.get("/docs/", headers={"host": "evil.example"}, follow_redirects=False)
    assert response.status_code in (301, 307, 308)
    location = response.headers["location"]
    assert "evil.example" not in location and location.startswith("/")


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"content-type": "application/json; charset=utf-16"}, "Content-Type"),
        ({"content-type": "application/json; charset=latin-1"}, "Content-Type"),
        ({"content-type": "application/json", "content-encoding": "gzip"}, "Content-Encoding"),
    ],
)
def test_a_body_not_in_plain_utf8_is_415(
    client: TestClient, headers: dict[str, str], field: str
) -> None:
    response = client.post("/sentiment", content=b'{"text": "fine"}', headers=headers)
    answer = assert_error(response, 415, "unsupported_media_type")
    assert answer["details"][0]["field"] == field
    ok = {"content-type": "application/json; charset=UTF-8"}
    assert client.post("/sentiment", content=b'{"text": "fine"}', headers=ok).status_code == 200


def test_head_on_a_get_route_is_the_get_head(client: TestClient) -> None:
    for path in ("/health/live", "/models", "/metrics"):
        response = client.head(path)
        assert response.status_code == 200, path
        assert response.content == b""
        assert response.headers["x-request-id"]
    refused = client.head("/sentiment")  # no body to read the envelope from
    assert refused.status_code == 405 and refused.headers["allow"] == "POST"


def test_an_unknown_key_is_cut_in_the_answer(default_limits_client: TestClient) -> None:
    """A 990 KB key was echoed whole in the field and the message (a 1.98 MB answer)."""
    key = "k" * 900_000
    body = json.dumps({"text": "fine", key: 1})
    response = default_limits_client.post(
        "/sentiment", content=body, headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "validation_error")
    assert len(response.content) < 2_000
    assert "900,000 characters" in response.text


# ---- one shape ----


def test_every_error_has_the_four_keys(client: TestClient) -> None:
    """404, 405 and 413 had no `details`; refusals before routing were written by another
    writer. Now every error has error, error_type, request_id and details."""
    answers = [
        (client.get("/no/such/path"), 404, "path"),
        (client.get("/sentiment"), 405, "method"),
        (
            client.post(
                "/sentiment", content=b"x" * 5000, headers={"content-type": "application/json"}
            ),
            413,
            "body",
        ),
        (
            client.post("/sentiment", content=b"{", headers={"content-type": "application/json"}),
            422,
            "body",
        ),
        (client.post("/sentiment", json={"text": "a", "model": "nope"}), 404, "model"),
    ]
    for response, status, field in answers:
        assert response.status_code == status
        body = response.json()
        assert set(body) == {"error", "error_type", "request_id", "details"}, body
        assert [detail["field"] for detail in body["details"]] == [field]


# ---- metrics ----


def test_refused_requests_are_counted_under_their_route(client: TestClient) -> None:
    """413, 415 and malformed JSON are refused before routing; they were counted as
    route="unmatched", as were /docs and /openapi.json."""
    json_type = {"content-type": "application/json"}
    client.post("/next-word", content=b"x" * 5000, headers=json_type)
    client.post("/next-word", content=b"{", headers=json_type)
    client.post("/next-word", content=b"{}", headers={"content-type": "text/plain"})
    client.get("/openapi.json")
    client.get("/no/such/path")
    metrics = client.get("/metrics").text
    for status in ("413", "415", "422"):
        assert f'route="/next-word",status="{status}"' in metrics.replace('method="POST",', ""), (
            status
        )
    assert 'lstm_serve_requests_total{method="GET",route="/openapi.json",status="200"}' in metrics
    assert 'route="unmatched",status="404"' in metrics.replace('method="GET",', "")


# ---- connections: head timeout, connection limit, malformed HTTP, SIGTERM ----


def _read_all(sock: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        return received + b"<reset>"
    return received


def _envelope(reply: bytes, status: int, error_type: str) -> dict[str, Any]:
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), reply[:200]
    answer: dict[str, Any] = json.loads(body)
    assert answer["error_type"] == error_type
    assert f"x-request-id: {answer['request_id']}".encode() in head.lower()
    return answer


def test_slow_and_idle_connections_end_and_newcomers_are_answered(
    checkpoints: Checkpoints, tmp_path: Path
) -> None:
    """A silent connection and a head that grows a line at a time stayed open for good, and 260
    idle connections made every new request fail. With a 1 s head timeout and a limit of 16:
    the silent one is closed within it, the slow head gets a 408 envelope, and a client arriving
    while 16 idle connections are open is answered."""
    env = {"LSTM_SERVE_HEAD_TIMEOUT_S": "1", "LSTM_SERVE_MAX_CONNECTIONS": "16"}
    with service_process(checkpoints, tmp_path, **env) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        silent = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow = socket.create_connection(("127.0.0.1", port), timeout=10)
        slow.sendall(b"GET /health/live HTTP/1.1\r\nhost: x\r\n")
        started = time.monotonic()
        assert _read_all(silent) == b""
        assert time.monotonic() - started < 3
        answer = _envelope(_read_all(slow), 408, "request_timeout")
        assert "within 1 s" in answer["error"]

        idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(16)]
        time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=10) as client:
            for _ in range(5):
                assert client.get("/health/live").status_code in (200, 503)
        for sock in idle:
            sock.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /sentiment HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n",
        b"BREW /sentiment HTTP/1.1\r\nhost: x\r\n\r\n",
        b"GET /health/live HTTP/1.1\r\nhost: x\r\nx-bad: a\x01b\r\n\r\n",
    ],
    ids=["bad-content-length", "unknown-method", "control-byte-in-header"],
)
def test_malformed_http_gets_the_envelope(
    checkpoints: Checkpoints, tmp_path: Path, request_bytes: bytes
) -> None:
    """These got the HTTP server's plain-text 400 without x-request-id."""
    with service_process(checkpoints, tmp_path) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request_bytes)
            _envelope(_read_all(sock), 400, "bad_request")


def _client_per_request(port: int, outcomes: list[str], stop: threading.Event) -> None:
    """A new connection for every /sentiment request, until the server refuses connections."""
    body = b'{"text": "a great film"}'
    request = (
        b"POST /sentiment HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
    )
    while not stop.is_set():
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        except OSError:  # refused: the server no longer accepts, as it should
            outcomes.append("refused")
            return
        with sock:
            try:
                sock.sendall(request)
            except OSError:
                outcomes.append("lost")
                continue
            reply = _read_all(sock)
        status = reply.split(b" ", 2)[1].decode() if reply.startswith(b"HTTP/1.1 ") else "lost"
        outcomes.append(status)


def test_sigterm_answers_every_accepted_connection(
    checkpoints: Checkpoints, tmp_path: Path
) -> None:
    """32 clients opening a connection per request under SIGTERM lost 7 and 16 requests in two
    runs (accepted, then reset). Now every connection accepted gets an answer (200, or 503)."""
    with service_process(checkpoints, tmp_path) as (process, url):
        port = int(url.rsplit(":", 1)[1])
        outcomes: list[str] = []
        stop = threading.Event()
        clients = [
            threading.Thread(target=_client_per_request, args=(port, outcomes, stop))
            for _ in range(32)
        ]
        for client in clients:
            client.start()
        wait_until(lambda: len(outcomes) > 200, 60, "200 answers before the signal")
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        stop.set()
        for client in clients:
            client.join(30)
    answered = [outcome for outcome in outcomes if outcome not in ("refused", "lost")]
    assert outcomes.count("lost") == 0, f"{outcomes.count('lost')} of {len(outcomes)} lost"
    assert set(answered) <= {"200", "503"} and len(answered) > 200


def test_the_blank_pattern_means_the_same_to_every_regex_engine(client: TestClient) -> None:
    """`\\s` in the schema's pattern: Python's re takes \\x1c-\\x1f for whitespace (so did the
    server), Rust's regex (schemathesis' validator) does not, so a text of "\\x1e" was valid by
    the schema and refused. The pattern now lists its characters."""
    spec = client.get("/openapi.json").json()["components"]["schemas"]
    pattern = spec["SentimentRequest"]["properties"]["text"]["pattern"]
    assert "\\s" not in pattern
    for text in ("\x1e", "\x1c\x1f", "\u200b", "\u3000 "):
        assert re.search(pattern, text) is None
        assert_error(client.post("/sentiment", json={"text": text}), 422, "validation_error")
