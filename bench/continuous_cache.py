"""What the generate checkpoint's continuous cache costs in serving, side by side in one run.

    .venv/bin/python bench/continuous_cache.py

Serves the shipped generate checkpoint twice with the real service (`python -m service`, the
generate model alone): as shipped (with its cache) and a copy whose config.json has no cache
(the same weights). Each is driven by 1 stream and by 32 concurrent streams of 500 tokens, and
by joining streams (time to first token), alternating the two servers for `--rounds` rounds.
Prints a Markdown table of the medians and the with/without ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from serving import ROOT, generation, served

from models.format import CONFIG, FILES, MANIFEST, sha256_file

CHECKPOINT = ROOT / "artifacts" / "generate"


def without_cache(directory: Path) -> Path:
    """A copy of the shipped checkpoint whose config.json names no cache."""
    copy = directory / "generate-no-cache"
    shutil.copytree(CHECKPOINT, copy)
    config = json.loads((copy / CONFIG).read_text())
    if config.pop("cache", None) is None:
        raise SystemExit(f"{CHECKPOINT} has no continuous cache to compare against")
    (copy / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    lines = [f"{sha256_file(copy / name)}  {name}\n" for name in FILES]
    (copy / MANIFEST).write_text("".join(lines))
    return copy


def measure(checkpoint: Path, tokens: int) -> dict[str, float]:
    with served(LSTM_SERVE_MODELS=f"generate={checkpoint}") as (base, _, _):
        one = asyncio.run(generation(base, 1, tokens))
        many = asyncio.run(generation(base, 32, tokens))
    return {
        "1 stream, tokens/s": one["tokens_s"],
        "32 streams, tokens/s": many["tokens_s"],
        "32 streams, time to first token p50 (ms)": many["ttft_p50_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--tokens", type=int, default=500, help="tokens per stream (default 500)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        plain = without_cache(Path(folder))
        runs: dict[str, list[dict[str, float]]] = {"with": [], "without": []}
        for _ in range(args.rounds):
            runs["with"].append(measure(CHECKPOINT, args.tokens))
            runs["without"].append(measure(plain, args.tokens))
    print("| figure | with the cache | without | ratio |")
    print("|---|---|---|---|")
    for figure in runs["with"][0]:
        with_, without = (statistics.median(r[figure] for r in runs[k]) for k in runs)
        print(f"| {figure} | {with_:.1f} | {without:.1f} | {with_ / without:.2f}x |")


if __name__ == "__main__":
    main()
