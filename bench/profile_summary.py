"""Summarise a `py-spy record --threads --format raw` profile of the service: for each thread, the
share of samples in each of its top functions (self time) and in the files that matter.

    py-spy record --pid PID --threads --idle --format raw -d 10 -r 200 -o profile.txt
    .venv/bin/python bench/profile_summary.py profile.txt

(`--idle` keeps samples of threads that are waiting, so a thread's shares add up to its wall
time: an event loop that is waiting in epoll is idle, not busy.)
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

IDLE = ("select (selectors.py", "wait (threading.py", "_run_once (asyncio", "run_forever")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    per_thread: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    by_file: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    totals: collections.Counter[str] = collections.Counter()
    for line in args.profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = frames[0].split(":", 1)[-1].strip() or frames[0]
        samples = int(count)
        totals[thread] += samples
        per_thread[thread][frames[-1]] += samples
        for label, marker in (
            ("torch forward (models/)", "models/"),
            ("inference (service/inference.py)", "service/inference.py"),
            ("generation (service/generation.py)", "service/generation.py"),
            ("uvicorn (HTTP parsing, protocol)", "uvicorn/"),
            ("starlette + fastapi (routing, middleware)", "starlette/"),
            ("fastapi (validation, serialisation)", "fastapi/"),
            ("pydantic", "pydantic"),
            ("service/api (routes, middleware)", "service/api/"),
            ("tokenizers (encode)", "tokenizers"),
        ):
            if any(marker in frame for frame in frames):
                by_file[thread][label] += samples
    for thread, samples in totals.most_common():
        if samples < 0.02 * sum(totals.values()):
            continue
        print(f"\n## {thread}: {samples} samples")
        idle = sum(n for f, n in per_thread[thread].items() if f.startswith(IDLE))
        print(f"  waiting (idle): {idle / samples:.0%}")
        for label, n in by_file[thread].most_common():
            print(f"  {label}: {n / samples:.0%} (inclusive)")
        print("  top functions (self):")
        for frame, n in per_thread[thread].most_common(args.top):
            print(f"    {n / samples:5.1%}  {frame[:110]}")


if __name__ == "__main__":
    main()
