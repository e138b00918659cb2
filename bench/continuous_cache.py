"""What the language models' continuous caches cost in serving, side by side in one run.

    .venv/bin/python bench/continuous_cache.py --data ../shared/data

Serves the shipped next-word and generate checkpoints with the real service (`python -m
service`) twice: with their continuous caches (`LSTM_SERVE_CONTINUOUS_CACHE=true`, the default)
and without (`false`: the networks alone, the same weights). Each is driven by 1 stream and by
32 concurrent streams of `--tokens` characters (`/generate/stream`), and by `/next-word` on a new
5-word text and on a 500-word text extended by one word, alternating the two servers for
`--rounds` rounds. Prints a Markdown table of the medians and the with/without ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from pathlib import Path

from serving import generation, next_word_ms, served, words


def measure(cache: bool, typed: list[str], tokens: int) -> dict[str, float]:
    env = {"LSTM_SERVE_MODELS": "next-word,generate", "LSTM_SERVE_CONTINUOUS_CACHE": str(cache)}
    with served(**env) as (base, _, _):
        one = asyncio.run(generation(base, 1, tokens))
        many = asyncio.run(generation(base, 32, tokens))
        typing = next_word_ms(base, typed)
    return {
        "/generate, 1 stream, tokens/s": one["tokens_s"],
        "/generate, 32 streams, tokens/s": many["tokens_s"],
        "/generate, 32 streams, time to first token p50 (ms)": many["ttft_p50_ms"],
        "/next-word, new 5-word text, p50 (ms)": typing["five_ms"],
        "/next-word, 500 words + 1, p50 (ms)": typing["extended_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="folder with wikitext-2/")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--tokens", type=int, default=500, help="tokens per stream (default 500)")
    args = parser.parse_args()
    typed = words(args.data, 600)
    runs: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for _ in range(args.rounds):
        for cache in (True, False):
            runs[cache].append(measure(cache, typed, args.tokens))
    print("| figure | with the caches | without | ratio |")
    print("|---|---|---|---|")
    for figure in runs[True][0]:
        with_, without = (statistics.median(r[figure] for r in runs[k]) for k in (True, False))
        print(f"| {figure} | {with_:.1f} | {without:.1f} | {with_ / without:.2f}x |")


if __name__ == "__main__":
    main()
