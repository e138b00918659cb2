"""Tiny corpora written into tmp_path (never the network, never ../shared/data), and a local
HTTP server for the download path.

The corpora are sized so that a `--smoke` run's capped evaluation (max_eval_batches=2) still
covers the whole test split: sentiment scores at most 2 x 64 reviews, the language models at most
2 windows of eval_bptt=32 over eval_batch_size=4 streams (<= 4 * 65 + 3 tokens).
"""

from __future__ import annotations

import csv
import hashlib
import http.server
import io
import json
import random
import socket
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# What --smoke sets for the language models, spelled out, so that a run can differ in what smoke
# forces (epochs, batch size).
SMOKE_FLAGS = [
    "--embed-dim", "16", "--hidden-dim", "16", "--num-layers", "1", "--batch-size", "8",
    "--max-train-batches", "4", "--max-eval-batches", "2", "--warmup-steps", "1",
    "--eval-every", "0", "--bptt", "16", "--eval-bptt", "32", "--eval-batch-size", "4",
    "--max-length", "256",
]  # fmt: skip


_GOOD = ["great", "wonderful", "superb", "moving", "brilliant", "delightful", "charming"]
_BAD = ["awful", "boring", "dull", "terrible", "clumsy", "tedious", "painful"]
_NOUNS = ["film", "movie", "story", "acting", "plot", "ending", "script", "cast"]


def review(rng: random.Random, label: int) -> str:
    """A short review whose sentiment words give its label away."""
    words = _GOOD if label else _BAD
    noun, other = rng.sample(_NOUNS, 2)
    first, second = rng.sample(words, 2)
    return f"The {noun} was {first} and the {other} was {second}. Truly {rng.choice(words)}!"


def reviews(count: int, seed: int) -> list[dict[str, object]]:
    """`count` reviews, alternating positive and negative, each text distinct."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    while len(rows) < count:
        label = len(rows) % 2
        text = review(rng, label)
        if text not in seen:
            seen.add(text)
            rows.append({"text": text, "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_csv(path: Path, rows: list[dict[str, object]], names: tuple[str, str]) -> Path:
    """CSV with labels spelled as `names` (negative, positive)."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["label", "text"])
        writer.writeheader()
        for row in rows:
            writer.writerow({"label": names[int(str(row["label"]))], "text": row["text"]})
    return path


@pytest.fixture(scope="session")
def sentiment_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.jsonl (48 reviews) and test.jsonl (20 reviews)."""
    root = tmp_path_factory.mktemp("reviews")
    write_jsonl(root / "train.jsonl", reviews(48, seed=1))
    write_jsonl(root / "test.jsonl", reviews(20, seed=2))
    return root


_WORDS = [
    *("the", "river", "city", "of", "a", "<unk>", "was", "built", "in", "and", "by", "its"),
    *("people", "during", "war", "north", "south", "king", "church", "station", "album"),
    *("song", "band", "released", "first", "second", "year"),
]


def _paragraph(rng: random.Random, words: int) -> str:
    body = " ".join(rng.choice(_WORDS) for _ in range(words))
    return f" {body} , {rng.choice(_WORDS)} <unk> . \n"


def wikitext(rng: random.Random, sections: int, words: int) -> str:
    """WikiText-2 layout: ' = Title = ' headings, blank ' ' lines, pre-tokenized text."""
    out = [" \n"]
    for number in range(sections):
        out += [f" = Section {number} = \n", " \n", _paragraph(rng, words), " \n"]
    return "".join(out)


@pytest.fixture(scope="session")
def wikitext_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train.txt (~1,300 tokens), valid.txt and a test.txt of under 260 tokens."""
    root = tmp_path_factory.mktemp("wikitext")
    rng = random.Random(3)
    (root / "train.txt").write_text(wikitext(rng, sections=10, words=110))
    (root / "valid.txt").write_text(wikitext(rng, sections=2, words=40))
    (root / "test.txt").write_text(wikitext(rng, sections=2, words=50))
    return root


_SPEAKERS = ["ROMEO", "JULIET", "First Citizen", "MENENIUS"]
_LINES = [
    "But soft, what light through yonder window breaks?",
    "We are accounted poor citizens.",
    "What authority surfeits on would relieve us.",
    "Good night, good night! Parting is such sweet sorrow.",
    "Speak, speak.",
    "Let us kill him, and we'll have corn at our own price.",
]


def shakespeare(length: int, seed: int) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    while sum(map(len, parts)) < length:
        parts.append(f"{rng.choice(_SPEAKERS)}:\n{rng.choice(_LINES)}\n\n")
    return "".join(parts)[:length]


@pytest.fixture(scope="session")
def shakespeare_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """input.txt of 2,500 characters: a 250-character test split."""
    path = tmp_path_factory.mktemp("shakespeare") / "input.txt"
    path.write_text(shakespeare(2500, seed=4))
    return path


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def imdb_archive(
    train: dict[str, list[str]], test: dict[str, list[str]], extra: dict[str, str] | None = None
) -> bytes:
    """An aclImdb_v1.tar.gz look-alike: aclImdb/<split>/<pos|neg>/<n>_<stars>.txt."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:

        def add(name: str, text: str) -> None:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for split, groups in (("train", train), ("test", test)):
            for kind, texts in groups.items():
                for number, text in enumerate(texts):
                    add(f"aclImdb/{split}/{kind}/{number}_{8 if kind == 'pos' else 2}.txt", text)
        for name, text in (extra or {}).items():
            add(name, text)
    return buffer.getvalue()


@dataclass
class FileServer:
    """A local HTTP server: `files` maps a URL path to bytes; `requests` counts GETs per path.

    `truncate` maps a path to how many bytes to actually send (Content-Length stays the full
    size); `chunked` paths are sent with chunked transfer encoding, cut off mid-chunk when also
    truncated.
    """

    port: int
    files: dict[str, bytes] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    truncate: dict[str, int] = field(default_factory=dict)
    chunked: set[str] = field(default_factory=set)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _handler(server: Callable[[], FileServer]) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            state = server()
            state.requests[self.path] = state.requests.get(self.path, 0) + 1
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            sent = state.truncate.get(self.path, len(body))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if self.path in state.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                # one chunk announcing the whole body, of which only `sent` bytes arrive
                self.wfile.write(f"{len(body):x}\r\n".encode() + body[:sent])
                if sent == len(body):
                    self.wfile.write(b"\r\n0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:sent])
            self.wfile.flush()
            if sent < len(body):
                self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    state = FileServer(port=0)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(lambda: state))
    state.port = int(httpd.server_address[1])
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
