"""Soak: the real service with the shipped checkpoints under a steady mix of all three models for
`--minutes`, sampling its resident memory, and counting every request's answer.

    .venv/bin/python bench/soak.py --data ../shared/data --minutes 10

The mix, sent open loop (on schedule, whatever the server does): IMDB test reviews to
/sentiment, WikiText-2 test texts of 5-60 words to /next-word (each a new text, so the prefix
cache fills and evicts), and Shakespeare prompts to /generate (40 tokens, seeded). A request is
lost if no complete HTTP answer came back; any status counts as an answer, and the statuses are
reported.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import uvloop
from loadgen import Request, Sample, encode, open_loop, percentile
from serving import pss_mib, reviews, served


def requests(data: Path, rng: random.Random) -> list[Request]:
    texts = reviews(data, 1000)
    with gzip.open(data / "wikitext-2" / "test.txt.gz", "rt", encoding="utf-8") as handle:
        words = handle.read().split()
    with gzip.open(data / "tinyshakespeare" / "input.txt.gz", "rt", encoding="utf-8") as handle:
        shakespeare = handle.read()
    mix: list[Request] = []
    for i in range(4000):
        pick = rng.random()
        if pick < 0.6:
            body = {"text": texts[i % len(texts)]}
            mix.append(("sentiment", encode("POST", "/sentiment", json.dumps(body).encode())))
        elif pick < 0.97:
            start, length = rng.randrange(len(words) - 100), rng.randrange(5, 60)
            body = {"text": " ".join(words[start : start + length]) + " "}
            mix.append(("next-word", encode("POST", "/next-word", json.dumps(body).encode())))
        else:
            start = rng.randrange(len(shakespeare) - 200)
            gen = {"prompt": shakespeare[start : start + 80], "max_new_tokens": 40, "seed": i}
            mix.append(("generate", encode("POST", "/generate", json.dumps(gen).encode())))
    return mix


async def soak(
    base: str, memory: Callable[[], float], mix: list[Request], rate: float, minutes: float
) -> str:
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    window = 30.0
    rows, all_samples = [], []
    started = time.perf_counter()
    offset = 0
    for _ in range(max(1, round(minutes * 60 / window))):
        samples: list[Sample] = await open_loop(
            host, port, lambda i, o=offset: mix[(o + i) % len(mix)], rate, window
        )
        offset += len(samples)
        all_samples += samples
        rss = memory()
        by_label = collections.defaultdict(list)
        for s in samples:
            by_label[s.label].append(s.latency)
        statuses = collections.Counter(s.status for s in samples)
        rows.append(
            f"| {(time.perf_counter() - started) / 60:.1f} | {len(samples):,} | "
            + ", ".join(f"{k} {v:,}" for k, v in sorted(statuses.items()))
            + " | "
            + ", ".join(
                f"{k} {percentile(v, 50) * 1000:.1f}/{percentile(v, 99) * 1000:.1f}"
                for k, v in sorted(by_label.items())
            )
            + f" | {rss:.0f} |"
        )
        print(rows[-1], flush=True)
    statuses = collections.Counter(s.status for s in all_samples)
    lost = statuses.get(0, 0)
    header = [
        f"{len(all_samples):,} requests at {rate:g}/s for {minutes:g} min: "
        f"statuses {dict(sorted(statuses.items()))}, lost {lost}.",
        "",
        "| minute | requests | statuses | p50/p99 ms by route | PSS MiB (all processes) |",
        "|---|---|---|---|---|",
    ]
    return "\n".join(header + rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s, all routes")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    mix = requests(args.data, random.Random(0))
    with served() as (base, _, process):
        report = uvloop.run(soak(base, lambda: pss_mib(process), mix, args.rate, args.minutes))
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
