"""Serving benchmarks with the shipped checkpoints, every ratio measured side by side in one run.

    .venv/bin/python bench/serving.py --data ../shared/data --duration 10

Needs `wrk` (Debian package) as the HTTP load generator. Starts the real service (`python -m
service`) on a free port for each layout, drives it with wrk (sentiment) or an async client
(generation, next-word), and prints a Markdown report (also written with --out).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import torch
from loadgen import encode

from models.checkpoint import load_checkpoint
from service import inference
from training.allocator import find_tcmalloc

ROOT = Path(__file__).resolve().parent.parent
TCMALLOC = find_tcmalloc() or ""  # as `make serve` finds it
LUA = """
local bodies, i = {}, 0
for line in io.lines("%s") do bodies[#bodies + 1] = line end
wrk.method, wrk.headers["Content-Type"] = "POST", "application/json"
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, "%s", nil, bodies[i])
end
"""


def reviews(data: Path, count: int) -> list[str]:
    with gzip.open(data / "imdb" / "test.jsonl.gz", "rt", encoding="utf-8") as handle:
        return [json.loads(line)["text"] for _, line in zip(range(count), handle, strict=False)]


def words(data: Path, count: int) -> list[str]:
    """The first `count` alphabetic words of WikiText-2's test split: what a person types."""
    with gzip.open(data / "wikitext-2" / "test.txt.gz", "rt", encoding="utf-8") as handle:
        return [w for w in handle.read().split() if w.isalpha()][:count]


def offline_throughput(texts: list[str], batch: int) -> float:
    """Reviews/s through the service's own inference functions: tokenise, one packed forward."""
    checkpoint = load_checkpoint(ROOT / "artifacts" / "sentiment")
    started = time.perf_counter()
    for start in range(0, len(texts), batch):
        chunk = [
            inference.encode_review(checkpoint, t, False) for t in texts[start : start + batch]
        ]
        inference.classify(checkpoint, chunk)
    return len(texts) / (time.perf_counter() - started)


def batch1_forward_ms(texts: list[str]) -> float:
    """Median time of one review's forward pass alone, over 200 reviews spread across `texts`."""
    checkpoint = load_checkpoint(ROOT / "artifacts" / "sentiment")
    times = []
    for text in texts[:: max(1, len(texts) // 200)]:
        review = inference.encode_review(checkpoint, text, False)
        started = time.perf_counter()
        inference.classify(checkpoint, [review])
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def served(**env: str) -> Iterator[tuple[str, float, subprocess.Popen[bytes]]]:
    """The real service in its own process; yields (base url, seconds to ready, process)."""
    port = free_port()
    environ = {**os.environ, "LSTM_SERVE_LOG_LEVEL": "warning", **env}
    if TCMALLOC and "LD_PRELOAD" not in environ:  # as `make serve` and the image run it
        environ["LD_PRELOAD"] = TCMALLOC
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port)],
        cwd=ROOT,
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        yield base, time.perf_counter() - started, process
    finally:
        process.terminate()
        process.wait(30)


def wrk(base: str, path: str, bodies: Path, connections: int, seconds: int) -> dict[str, float]:
    """Requests/s and latency percentiles (ms) from wrk --latency; non-2xx counted."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA % (bodies, path))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, base],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        result[f"p{pct}"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["errors"] = float(errors.group(1)) if errors else 0.0
    return result


def family(pid: int) -> list[int]:
    """A process and its descendants (Linux /proc: each thread lists the children it started)."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        try:
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(c) for c in (task / "children").read_text().split())
        except OSError:
            continue
    return out


def pss_mib(process: subprocess.Popen[bytes]) -> float:
    """The sum of the PSS of the service and its engine processes: shared pages (the weights in
    shared memory, the libraries) counted once in all, not once per process as RSS would."""
    total_kib = 0
    for pid in family(process.pid):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kib += int(line.split()[1])
        except OSError:
            continue
    return total_kib / 1024


def rss_mib(process: subprocess.Popen[bytes]) -> float:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def stream_once(base: str, seed: int, tokens: int) -> tuple[float, int, float]:
    """(time to first token, tokens, total seconds) of one streamed generation, read from a raw
    connection (an HTTP client library in this process cost more CPU than the server's work)."""
    parts = urlsplit(base)
    body = json.dumps(
        {"prompt": "ROMEO:\n", "max_new_tokens": tokens, "seed": seed, "temperature": 0.8}
    ).encode()
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(encode("POST", "/generate/stream", body))
    received, first = b"", 0.0
    while b"event: done" not in received and b"event: error" not in received:
        chunk = await reader.read(65536)
        if not chunk:
            break
        received += chunk
        if not first and b"event: token" in received:
            first = time.perf_counter() - started
    total = time.perf_counter() - started
    writer.close()
    return first, received.count(b"event: token"), total


async def generation(base: str, streams: int, tokens: int) -> dict[str, float]:
    await stream_once(base, 0, 5)
    started = time.perf_counter()
    runs = await asyncio.gather(*(stream_once(base, s, tokens) for s in range(streams)))
    wall = time.perf_counter() - started
    return {
        "tokens_s": sum(r[1] for r in runs) / wall,
        "ttft_p50_ms": statistics.median(r[0] for r in runs) * 1000,
    }


async def joining_ttft_ms(base: str, running: int, samples: int = 20) -> float:
    """p50 time to first token of a new stream while `running` long streams are generating."""
    background = [asyncio.create_task(stream_once(base, 1000 + i, 2000)) for i in range(running)]
    await asyncio.sleep(0.5 if running else 0)  # all of them admitted and streaming
    ttfts = []
    for seed in range(samples):
        ttfts.append((await stream_once(base, seed, 20))[0])
        await asyncio.sleep(0.01)
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    await asyncio.sleep(0.5)  # the server notices the disconnects and frees the slots
    return statistics.median(ttfts) * 1000


def next_word_ms(base: str, words: list[str], repeats: int = 30) -> dict[str, float]:
    """p50 latency of a new 5-word text, and of a 500-word text extended by one new word each
    time (the 500 words having been sent just before, as a user typing does)."""
    short, long = " ".join(words[:5]) + " ", " ".join(words[:500])
    with httpx.Client(timeout=30) as client:

        def timed(text: str) -> float:
            started = time.perf_counter()
            client.post(f"{base}/next-word", json={"text": text}).raise_for_status()
            return (time.perf_counter() - started) * 1000

        timed(short)
        # a different 5-word text each time, so none is answered from the cache
        five = statistics.median(
            timed(" ".join(words[i : i + 5]) + " ") for i in range(0, 5 * repeats, 5)
        )
        extended = []
        for i in range(repeats):
            timed(long + " ")  # the text so far (a cache hit after the first time)
            extended.append(timed(f"{long} {words[500 + i]} "))
    return {"five_ms": five, "extended_ms": statistics.median(extended)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="folder with imdb/, wikitext-2/")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    texts = reviews(args.data, 2000)
    bodies = Path(tempfile.mkstemp(suffix=".jsonl")[1])
    bodies.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    offline = {b: offline_throughput(texts, b) for b in (1, 8, 16, 32, 64)}
    typed = words(args.data, 600)

    rows: list[tuple[str, str, str, str]] = []
    with served() as (base, ready_s, process):
        batched = wrk(base, "/sentiment", bodies, 64, args.duration)
        # the forward pass is timed just before and just after the 1-connection run (the service
        # idle meanwhile): this machine's speed drifts by 20% over minutes, and a ratio of two
        # figures measured minutes apart carried that drift
        forward_before = batch1_forward_ms(texts)
        single = wrk(base, "/sentiment", bodies, 1, args.duration)
        forward_ms = (forward_before + batch1_forward_ms(texts)) / 2
        health = subprocess.run(
            [
                "wrk",
                "-t1",
                "-c1",
                f"-d{max(3, args.duration // 2)}s",
                "--latency",
                f"{base}/health/live",
            ],
            capture_output=True,
            text=True,
        ).stdout
        value, unit = re.search(r"\s50%\s+([\d.]+)(us|ms)", health).groups()  # type: ignore[union-attr]
        minimal_ms = float(value) * (0.001 if unit == "us" else 1.0)
        gen1 = asyncio.run(generation(base, 1, 200))
        gen32 = asyncio.run(generation(base, 32, 200))
        join_alone = asyncio.run(joining_ttft_ms(base, 0))
        join_busy = asyncio.run(joining_ttft_ms(base, 31))
        cached = next_word_ms(base, typed)
        memory = pss_mib(process)
    with served(LSTM_SERVE_MAX_BATCH_SIZE="1") as (base, _, _):
        naive = wrk(base, "/sentiment", bodies, 64, args.duration)
    with served(LSTM_SERVE_CACHE_MB="0") as (base, _, _):
        uncached = next_word_ms(base, typed)

    best = max(offline, key=lambda b: offline[b])
    ratio = lambda a, b: f"{a / b:.2f}"  # noqa: E731
    rows += [
        (
            "/sentiment at 64 connections vs offline batched (one process, one thread)",
            f"{batched['rps']:,.0f} req/s vs {offline[best]:,.0f} reviews/s (batch {best})",
            ratio(batched["rps"], offline[best]),
            ">= 0.80",
        ),
        (
            "/sentiment at 64 connections vs naive (batch size 1)",
            f"{batched['rps']:,.0f} vs {naive['rps']:,.0f} req/s; "
            f"p99 {batched['p99']:.1f} vs {naive['p99']:.1f} ms",
            ratio(batched["rps"], naive["rps"]),
            ">= 3.0, p99 no worse",
        ),
        (
            "/sentiment p50 at 1 connection vs batch-1 forward + minimal endpoint p50",
            f"{single['p50']:.2f} ms vs {forward_ms:.2f} + {minimal_ms:.2f} ms",
            ratio(single["p50"], forward_ms + minimal_ms),
            "<= 1.3",
        ),
        (
            "/generate tokens/s, 32 streams vs 1",
            f"{gen32['tokens_s']:,.0f} vs {gen1['tokens_s']:,.0f}",
            ratio(gen32["tokens_s"], gen1["tokens_s"]),
            ">= 8",
        ),
        (
            "/generate time to first token p50, 32 streams started at once vs 1",
            f"{gen32['ttft_p50_ms']:.1f} vs {gen1['ttft_p50_ms']:.1f} ms",
            ratio(gen32["ttft_p50_ms"], gen1["ttft_p50_ms"]),
            "<= 3",
        ),
        (
            "/generate time to first token p50 of a stream joining 31 running vs alone",
            f"{join_busy:.1f} vs {join_alone:.1f} ms",
            ratio(join_busy, join_alone),
            "<= 3",
        ),
        (
            "/next-word 500 words + 1 vs 5 words, prefix cache on",
            f"{cached['extended_ms']:.2f} vs {cached['five_ms']:.2f} ms",
            ratio(cached["extended_ms"], cached["five_ms"]),
            "<= 1.5",
        ),
        (
            "/next-word 500 words + 1 vs 5 words, cache off (contrast)",
            f"{uncached['extended_ms']:.2f} vs {uncached['five_ms']:.2f} ms",
            ratio(uncached["extended_ms"], uncached["five_ms"]),
            "-",
        ),
        ("process start to ready (three checkpoints)", f"{ready_s:.2f} s", "-", "<= 5 s"),
        (
            "memory after the runs (sum of PSS, engines included)",
            f"{memory:.0f} MiB",
            "-",
            "<= 800 MiB",
        ),
    ]
    lines = ["| measure | figures | ratio | target |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    offline_line = ", ".join(f"batch {b}: {v:,.0f}/s" for b, v in offline.items())
    report = (
        "\n".join(lines)
        + f"\n\nOffline sentiment throughput (tokenisation included): {offline_line}.\n"
    )
    report += (
        f"Errors (non-2xx) under load: batched {batched['errors']:.0f}, "
        f"naive {naive['errors']:.0f}.\n"
    )
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
