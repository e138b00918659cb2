"""DistributedDataParallel: two CPU processes under torchrun (gloo) train and export a checkpoint,
and their averaged gradients train the same model as one process with the combined batch."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from models.checkpoint import load_checkpoint
from training.__main__ import evaluate, main
from training.loop import RESUME_FILE

from .conftest import SMOKE_FLAGS, free_port

ROOT = Path(__file__).resolve().parents[2]


def test_two_process_smoke_run_gives_a_loadable_checkpoint(
    shakespeare_file: Path, tmp_path: Path
) -> None:
    run_dir, export_dir = tmp_path / "run", tmp_path / "export"
    # dropout off, so that the run is comparable with a single-process one below
    args = ["generate", "--smoke", "--dropout", "0", "--data", str(shakespeare_file)]
    args += ["--run-dir", str(run_dir), "--export-dir", str(export_dir)]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    launcher += [f"--master_port={free_port()}", "-m", "training"]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [*launcher, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # rank 0 alone evaluates and exports
    assert done.stdout.count(f"checkpoint written to {export_dir}") == 1
    # each process takes max_train_batches=4 steps over its own half of the streams
    assert done.stdout.count("trained 4 steps") == 1

    loaded = load_checkpoint(export_dir)
    assert loaded.config.task == "generate"
    card = json.loads((export_dir / "card.json").read_text())
    assert card["best_step"] == 4
    assert card["hardware"]["processes"] == 2
    assert card["command"] == "python -m training " + " ".join(args)
    assert (run_dir / RESUME_FILE).is_file() and (run_dir / "curves.png").is_file()
    measured = evaluate(str(export_dir), str(shakespeare_file), threads=1, device="cpu")
    rounded = lambda m: {k: round(v, 4) for k, v in m.items()}  # noqa: E731
    assert rounded(measured) == rounded(card["metrics"]["test"])

    # 2 processes x 8 streams with averaged gradients == 1 process x the same 16 streams
    single = tmp_path / "single"
    argv = ["generate", "--data", str(shakespeare_file), *SMOKE_FLAGS, "--batch-size", "16"]
    argv += ["--epochs", "1", "--dropout", "0", "--run-dir", str(single / "run")]
    argv += ["--export-dir", str(single / "export")]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    alone = load_checkpoint(single / "export")
    for name, value in alone.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], value, atol=1e-3, rtol=1e-3)
    alone_valid = alone.card["validation_curve"][0]["loss"]
    assert abs(card["validation_curve"][0]["loss"] - alone_valid) < 1e-5
    assert rounded(alone.card["metrics"]["test"]) == rounded(card["metrics"]["test"])
