"""Why one inference thread with one torch thread: a batch-1 review and a batch of 32, timed on the
main thread and on a second thread, with 1 and 2 intra-op torch threads.

    .venv/bin/python bench/threads.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import torch
from serving import ROOT, reviews

from models.checkpoint import load_checkpoint
from service import inference


def timed(checkpoint: object, batch: list[object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        inference.classify(checkpoint, batch)  # type: ignore[arg-type]
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    checkpoint = load_checkpoint(ROOT / "artifacts" / "sentiment")
    texts = reviews(args.data, 32)
    encoded = [inference.encode_review(checkpoint, t, False) for t in texts]
    print("| torch threads | where | batch 1 (ms, p50) | batch 32 (ms, p50) |")
    print("|---|---|---|---|")
    for threads in (1, 2):
        for where in ("main thread", "second thread"):
            torch.set_num_threads(threads)
            result: list[float] = []

            def run(threads: int = threads, result: list[float] = result) -> None:
                torch.set_num_threads(threads)
                timed(checkpoint, encoded[:1], 20)  # warm
                result.append(timed(checkpoint, encoded[:1], 200))
                result.append(timed(checkpoint, encoded, 20))

            if where == "main thread":
                run()
            else:
                worker = threading.Thread(target=run)
                worker.start()
                worker.join()
            print(f"| {threads} | {where} | {result[0]:.2f} | {result[1]:.1f} |")


if __name__ == "__main__":
    main()
