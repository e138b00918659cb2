"""A bounded mixed load for the replicas test and its figures (standard library only, so the
system's python3 runs it): sentiment, next-word typing and short generations from a few threads,
each on its own keep-alive connection, stopping at a request count or a deadline.

  python3 scripts/replicas_load.py load --base http://127.0.0.1:18380 --requests 300
  python3 scripts/replicas_load.py stream --base http://127.0.0.1:18380 --tokens 12

`load` prints one JSON line: requests, failures (with the first few reasons), requests per second
and latency percentiles; every answer must be a 200 that echoes the x-request-id sent. `stream`
prints when each SSE token event arrived, to show a stream is passed through token by token.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

REVIEWS = [
    "A wonderful film, moving and funny.",
    "Awful, boring and far too long.",
    "The plot wandered but the acting held it together.",
]
TYPED = ["the", "history", "of", "the", "city", "was", "written", "by"]


@dataclass
class Tally:
    """Everything the threads record, behind one lock."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


KINDS = {"mixed": None, "sentiment": 0, "next-word": 1, "generate": 2}


def request_for(
    index: int, session: str | None, only: int | None = None
) -> tuple[str, dict[str, object], dict[str, str]]:
    """The index-th request of the mix (or of one route): path, JSON body and extra headers."""
    kind = index % 3 if only is None else only
    if kind == 0:
        return "/sentiment", {"text": REVIEWS[index % len(REVIEWS)]}, {}
    if kind == 1:
        # a typing session: each request is the last one's text plus a word
        words = TYPED[: 1 + (index // 3) % len(TYPED)]
        headers = {"x-session-key": session} if session else {}
        return "/next-word", {"text": " ".join(words) + " "}, headers
    return "/generate", {"prompt": "ROMEO:\n", "max_new_tokens": 16, "seed": index}, {}


def connect(base: str, timeout: float) -> http.client.HTTPConnection:
    parts = urlsplit(base)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)


def send(
    connection: http.client.HTTPConnection, index: int, session: str | None, only: int | None
) -> tuple[int, str]:
    """One request; returns the status and, when something is wrong, why."""
    path, body, extra = request_for(index, session, only)
    request_id = f"load-{index}"
    headers = {"content-type": "application/json", "x-request-id": request_id, **extra}
    connection.request("POST", path, json.dumps(body), headers)
    response = connection.getresponse()
    payload = response.read()
    if response.status != 200:
        return response.status, f"{path} {response.status} {payload[:200]!r}"
    if response.getheader("x-request-id") != request_id:
        return 0, f"{path}: x-request-id {response.getheader('x-request-id')!r} != {request_id!r}"
    return 200, ""


def worker(
    base: str, counter: itertools.count[int], args: argparse.Namespace, tally: Tally
) -> None:
    connection = connect(base, args.timeout)
    session = f"{args.session_prefix}-{threading.get_ident()}" if args.session_prefix else None
    while _more(index := next(counter), args):
        started = time.perf_counter()
        try:
            status, reason = send(connection, index, session, KINDS[args.only])
        except (OSError, http.client.HTTPException) as error:
            status, reason = 0, f"request {index}: {type(error).__name__}: {error}"
            connection.close()
            connection = connect(base, args.timeout)
        elapsed = time.perf_counter() - started
        with tally.lock:
            if status == 200:
                tally.latencies.append(elapsed)
            else:
                tally.failures.append(reason)
    connection.close()


def _more(index: int, args: argparse.Namespace) -> bool:
    """Whether to send request `index`: until --requests are sent, or with --until, until that
    file exists; never past --seconds."""
    if time.monotonic() >= args.deadline_at:
        return False
    if args.until:
        return not Path(args.until).exists()
    return bool(index < args.requests)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))] if values else 0.0


def run_load(args: argparse.Namespace) -> int:
    tally, counter = Tally(), itertools.count()
    args.deadline_at = time.monotonic() + args.seconds
    threads = [
        threading.Thread(target=worker, args=(args.base, counter, args, tally))
        for _ in range(args.concurrency)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    done = len(tally.latencies) + len(tally.failures)
    summary = {
        "requests": done,
        "ok": len(tally.latencies),
        "failures": len(tally.failures),
        "first_failures": tally.failures[:5],
        "seconds": round(wall, 2),
        "requests_per_s": round(done / wall, 1),
        "p50_ms": round(1000 * percentile(tally.latencies, 50), 2),
        "p95_ms": round(1000 * percentile(tally.latencies, 95), 2),
    }
    print(json.dumps(summary))
    return 0 if not tally.failures and done > 0 else 1


def run_stream(args: argparse.Namespace) -> int:
    """One streamed generation; prints the arrival time (ms) of each token event."""
    connection = connect(args.base, args.timeout)
    body = {"prompt": "JULIET:", "max_new_tokens": args.tokens, "seed": 1}
    connection.request(
        "POST", "/generate/stream", json.dumps(body), {"content-type": "application/json"}
    )
    response = connection.getresponse()
    if response.status != 200:
        print(json.dumps({"status": response.status, "body": response.read()[:200].decode()}))
        return 1
    started, arrivals, done = time.perf_counter(), [], False
    while line := response.fp.readline():
        if line.startswith(b"event: token"):
            arrivals.append(round(1000 * (time.perf_counter() - started), 2))
        done = done or line.startswith(b"event: done")
    connection.close()
    print(json.dumps({"status": 200, "token_ms": arrivals, "done": done}))
    return 0 if done and len(arrivals) == args.tokens else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    load = commands.add_parser("load", help="the mixed load")
    load.add_argument("--requests", type=int, default=300, help="stop after this many")
    load.add_argument("--seconds", type=float, default=120, help="or after this long")
    load.add_argument(
        "--until", metavar="FILE", help="instead of --requests: go on until FILE exists"
    )
    load.add_argument("--concurrency", type=int, default=4)
    load.add_argument("--session-prefix", default="", help="send x-session-key with next-word")
    load.add_argument("--only", choices=list(KINDS), default="mixed", help="one route only")
    stream = commands.add_parser("stream", help="one SSE stream, timed token by token")
    stream.add_argument("--tokens", type=int, default=12)
    for command in (load, stream):
        command.add_argument("--base", required=True, help="e.g. http://127.0.0.1:18380")
        command.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args()
    return run_load(args) if args.command == "load" else run_stream(args)


if __name__ == "__main__":
    sys.exit(main())
