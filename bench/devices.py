"""The service on the CPU and on a CUDA device of the same machine, side by side in one run.

    .venv/bin/python bench/devices.py --data ../shared/data --duration 10

Starts the real service (`python -m service`) with the shipped checkpoints once per device
(`LSTM_SERVE_DEVICE=cpu`, then `cuda`), drives it with the project's own load generator (no wrk
needed), and prints a Markdown report with the CUDA/CPU ratio of each figure (also written with
--out). Exits 2 on a machine without CUDA.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import torch
from loadgen import closed_loop, encode, percentile
from serving import generation, next_word_ms, reviews, served, words

DEVICES = ("cpu", "cuda")


def sentiment_load(
    base: str, texts: list[str], connections: int, seconds: float
) -> dict[str, float]:
    """req/s and latency percentiles of POST /sentiment with IMDB test reviews, closed loop."""
    parts = urlsplit(base)
    requests = [
        ("sentiment", encode("POST", "/sentiment", json.dumps({"text": t}).encode())) for t in texts
    ]
    samples = asyncio.run(
        closed_loop(
            str(parts.hostname),
            int(parts.port or 80),
            lambda i: requests[i % len(requests)],
            connections,
            seconds,
        )
    )
    good = [s.latency for s in samples if s.status == 200]
    return {
        "req_s": len(good) / seconds,
        "p50_ms": percentile(good, 50) * 1000,
        "p99_ms": percentile(good, 99) * 1000,
        "errors": float(len(samples) - len(good)),
    }


def measure(device: str, texts: list[str], typed: list[str], seconds: float) -> dict[str, float]:
    with served(LSTM_SERVE_DEVICE=device) as (base, ready_s, _):
        models = httpx.get(f"{base}/models").json()["models"]
        served_on = {m["device"] for m in models}
        if served_on != {device}:
            raise SystemExit(f"asked for {device}, the service reports {served_on}")
        sentiment_load(base, texts, 8, 2)  # warm-up: kernels chosen, allocator grown
        one = sentiment_load(base, texts, 1, seconds)
        many = sentiment_load(base, texts, 64, seconds)
        stream = asyncio.run(generation(base, 1, 200))
        streams = asyncio.run(generation(base, 32, 200))
        # LSTM_SERVE_MODELS may leave next-word out
        names = {m["name"] for m in models}
        nan = {"five_ms": float("nan"), "extended_ms": float("nan")}
        typed_ms = next_word_ms(base, typed) if "next-word" in names else nan
    return {
        "ready_s": ready_s,
        "sentiment_c1_p50_ms": one["p50_ms"],
        "sentiment_c64_req_s": many["req_s"],
        "sentiment_c64_p99_ms": many["p99_ms"],
        "errors": one["errors"] + many["errors"],
        "generate_1_stream_tok_s": stream["tokens_s"],
        "generate_32_streams_tok_s": streams["tokens_s"],
        "generate_32_ttft_p50_ms": streams["ttft_p50_ms"],
        "next_word_5_words_ms": typed_ms["five_ms"],
        "next_word_500_plus_1_ms": typed_ms["extended_ms"],
    }


def report(results: dict[str, dict[str, float]]) -> str:
    gpu = torch.cuda.get_device_name(0)
    lines = [
        f"CPU ({platform.processor() or platform.machine()}) and {gpu}, torch {torch.__version__}",
        "",
        "| figure | cpu | cuda | cuda/cpu |",
        "|---|---|---|---|",
    ]
    for key in results["cpu"]:
        cpu, cuda = results["cpu"][key], results["cuda"][key]
        ratio = f"{cuda / cpu:.2f}x" if cpu else "-"
        lines.append(f"| {key} | {cpu:.1f} | {cuda:.1f} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="folder with imdb/, wikitext-2/")
    parser.add_argument("--duration", type=float, default=10, help="seconds per load run")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device on this machine", file=sys.stderr)
        raise SystemExit(2)
    texts = reviews(args.data, 500)
    typed = words(args.data, 600)
    results = {}
    for device in DEVICES:
        started = time.perf_counter()
        results[device] = measure(device, texts, typed, args.duration)
        print(f"{device}: {time.perf_counter() - started:.0f}s", file=sys.stderr)
    text = report(results)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
