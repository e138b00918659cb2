"""LSTM vs GRU vs plain RNN with the same budget: validation and test metric, parameters,
training time, batch-1 latency, and the vanishing-gradient story measured on the trained models.
A cell is chosen on validation; the test column is read once, to report.

    .venv/bin/python bench/cell_comparison.py sentiment --data ../shared/data/imdb --epochs 2
    .venv/bin/python bench/cell_comparison.py generate --data ../shared/data/tinyshakespeare

Each cell is trained by `python -m training` into runs/compare/<task>-<cell>/ (so the runs are
resumable and their cards hold the full record); the script prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from models.architectures import LanguageModel, SequenceClassifier, count_parameters
from models.checkpoint import Checkpoint, load_checkpoint

CELLS = ("lstm", "gru", "rnn")
DISTANCES = (1, 10, 50, 100, 200)
BUDGETS = {
    "sentiment": ["--epochs", "2", "--max-length", "400", "--head-tokens", "100"],
    "generate": ["--epochs", "3", "--hidden-dim", "256", "--num-layers", "1", "--eval-every", "0"],
}


def train(task: str, cell: str, data: str, extra: list[str]) -> Path:
    run_dir = Path("runs/compare") / f"{task}-{cell}"
    command = [
        sys.executable,
        "-m",
        "training",
        task,
        "--data",
        data,
        "--cell",
        cell,
        "--run-dir",
        str(run_dir),
        *BUDGETS[task],
        *extra,
    ]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return run_dir / "checkpoint"


def latency_ms(checkpoint: Checkpoint, length: int, repeats: int = 50) -> float:
    """Median batch-1 forward time over `length` tokens."""
    model = checkpoint.model
    tokens = torch.randint(1, checkpoint.config.model.vocab_size, (1, length))
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 5):
            started = time.perf_counter()
            if isinstance(model, SequenceClassifier):
                model(tokens, torch.tensor([length]))
            else:
                model(tokens)
            times.append(time.perf_counter() - started)
    return statistics.median(times[5:]) * 1000


def gradient_by_distance(
    checkpoint: Checkpoint, length: int = 256, batch: int = 16
) -> dict[int, float]:
    """Mean norm of d(output at the last position)/d(input embedding at last - distance), relative
    to distance 1: how much a token far back still moves the answer."""
    model = checkpoint.model
    torch.manual_seed(0)
    tokens = torch.randint(1, checkpoint.config.model.vocab_size, (batch, length))
    embedded = model.embedding(tokens).detach().requires_grad_(True)  # (B, T, E)
    if isinstance(model, SequenceClassifier):
        # forward direction only: the question is how far back a recurrent state remembers
        out, _ = model.layers[0].forward_rnn(embedded)
    else:
        assert isinstance(model, LanguageModel)
        out, _ = model.rnn(embedded)
    out[:, -1].sum().backward()
    assert embedded.grad is not None
    norms = embedded.grad.norm(dim=-1).mean(0)  # (T,)
    base = float(norms[length - 2])
    return {d: float(norms[length - 1 - d]) / base for d in DISTANCES}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("task", choices=sorted(BUDGETS))
    parser.add_argument("--data", required=True)
    parser.add_argument("--cells", default=",".join(CELLS))
    args, extra = parser.parse_known_args()
    rows = []
    for cell in args.cells.split(","):
        checkpoint = load_checkpoint(train(args.task, cell, args.data, extra))
        card = checkpoint.card
        key = "accuracy" if args.task == "sentiment" else "loss"
        metrics = card["metrics"]
        torch.set_num_threads(1)
        rows.append(
            {
                "cell": cell,
                "metric": key,
                "validation": round(metrics["validation_best"][key], 4),
                "test": round(metrics["test"][key], 4),
                "parameters": count_parameters(checkpoint.model),
                "train_s": card["wall_time_s"],
                "latency_ms": round(latency_ms(checkpoint, 256), 2),
                "gradient": {d: f"{v:.2e}" for d, v in gradient_by_distance(checkpoint).items()},
                "command": card["command"],
            }
        )
    print(json.dumps(rows, indent=2))
    header = (
        "| cell | validation | test | parameters | training s | batch-1 latency, 256 tokens (ms) | "
        + " | ".join(f"grad at {d}" for d in DISTANCES[1:])
        + " |"
    )
    print(header)
    print("|" + "---|" * (6 + len(DISTANCES) - 1))
    for row in rows:
        grads = " | ".join(row["gradient"][d] for d in DISTANCES[1:])
        print(
            f"| {row['cell']} | {row['metric']} {row['validation']} | {row['test']} | "
            f"{row['parameters']:,} | {row['train_s']} | {row['latency_ms']} | {grads} |"
        )
    best = (max if rows and rows[0]["metric"] == "accuracy" else min)(
        rows, key=lambda row: row["validation"]
    )
    print(f"chosen on validation: {best['cell']}")


if __name__ == "__main__":
    main()
