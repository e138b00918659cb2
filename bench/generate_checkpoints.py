"""Two generate checkpoints served side by side in one run: what a new character model costs in
serving against the one it replaces.

    .venv/bin/python bench/generate_checkpoints.py BEFORE AFTER [--rounds 3] [--tokens 500]

Serves each checkpoint alone with the real service (`python -m service`,
`LSTM_SERVE_MODELS=generate=PATH`, its continuous cache as the checkpoint has it) and drives it
with 1 stream and with 32 concurrent streams of `--tokens` characters (`/generate/stream`, the
prompt "ROMEO:\\n"), alternating the two for `--rounds` rounds. Prints a Markdown table of the
medians and the after/before ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from pathlib import Path

from serving import generation, served


def measure(checkpoint: Path, tokens: int) -> dict[str, float]:
    with served(LSTM_SERVE_MODELS=f"generate={checkpoint.resolve()}") as (base, _, _):
        one = asyncio.run(generation(base, 1, tokens))
        many = asyncio.run(generation(base, 32, tokens))
    return {
        "/generate, 1 stream, tokens/s": one["tokens_s"],
        "/generate, 1 stream, time to first token (ms)": one["ttft_p50_ms"],
        "/generate, 32 streams, tokens/s": many["tokens_s"],
        "/generate, 32 streams, time to first token p50 (ms)": many["ttft_p50_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("before", type=Path, help="the checkpoint served until now")
    parser.add_argument("after", type=Path, help="the checkpoint that replaces it")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--tokens", type=int, default=500, help="tokens per stream (default 500)")
    args = parser.parse_args()
    runs: dict[Path, list[dict[str, float]]] = {args.before: [], args.after: []}
    for _ in range(args.rounds):
        for checkpoint in (args.before, args.after):
            runs[checkpoint].append(measure(checkpoint, args.tokens))
    print(f"| figure | {args.before} | {args.after} | ratio |")
    print("|---|---|---|---|")
    for figure in runs[args.before][0]:
        before, after = (statistics.median(r[figure] for r in runs[k]) for k in runs)
        print(f"| {figure} | {before:.1f} | {after:.1f} | {after / before:.2f}x |")


if __name__ == "__main__":
    main()
