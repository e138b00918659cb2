"""Resumption from the run directory: a finished run is not retrained, an interrupted one picks up
where its last saved state left off and ends with the same weights as an uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from models.checkpoint import load_checkpoint
from models.format import FILES, MANIFEST, sha256_file
from training.__main__ import main
from training.loop import RESUME_FILE, Trainer

from .conftest import SMOKE_FLAGS


class Interrupted(Exception):
    pass


def weights(checkpoint: Path) -> str:
    return sha256_file(checkpoint / "model.safetensors")


def card(checkpoint: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((checkpoint / "card.json").read_text())
    return data


def test_a_second_invocation_resumes_and_ends_at_the_same_step(
    shakespeare_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    argv = ["generate", "--smoke", "--data", str(shakespeare_file), "--run-dir", str(run_dir)]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert "resumed from" not in first
    assert "trained 4 steps" in first
    checkpoint = run_dir / "checkpoint"  # the default export directory
    first_weights, first_card = weights(checkpoint), card(checkpoint)

    assert main(argv) == 0
    second = capsys.readouterr().out
    assert f"resumed from {run_dir / RESUME_FILE} at step 4 (epoch 2)" in second
    assert "trained 4 steps" in second
    assert weights(checkpoint) == first_weights
    resumed = card(checkpoint)
    for key in ("metrics", "validation_curve", "best_step", "samples"):
        assert resumed[key] == first_card[key], key

    # the resume state lives in the run directory, never in the exported checkpoint
    assert (run_dir / RESUME_FILE).is_file()
    assert sorted(p.name for p in checkpoint.iterdir()) == sorted([*FILES, MANIFEST])
    load_checkpoint(checkpoint)


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(
    shakespeare_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def argv(name: str) -> list[str]:
        run = ["--run-dir", str(tmp_path / name), "--export-dir", str(tmp_path / f"{name}-ckpt")]
        return ["generate", "--data", str(shakespeare_file), *SMOKE_FLAGS, "--epochs", "2", *run]

    assert main(argv("straight")) == 0
    assert "trained 8 steps" in capsys.readouterr().out

    real_step = Trainer._train_step

    def crash_at_step_6(self: Trainer, batch: object) -> tuple[float, int]:
        if self.step == 5:  # in the second epoch, after epoch 1's state was saved
            raise Interrupted
        return real_step(self, batch)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "_train_step", crash_at_step_6)
        with pytest.raises(Interrupted):
            main(argv("broken"))
    assert (tmp_path / "broken" / RESUME_FILE).is_file()
    assert not (tmp_path / "broken-ckpt").exists()
    capsys.readouterr()

    state_file = tmp_path / "broken" / RESUME_FILE
    saved = torch.load(state_file, weights_only=True)
    assert saved["elapsed_s"] > 0  # the interrupted process's time travels with the state
    saved["elapsed_s"] = 1000.0  # as if it had trained for long: the card must count it
    torch.save(saved, state_file)
    assert main(argv("broken")) == 0
    out = capsys.readouterr().out
    assert f"resumed from {tmp_path / 'broken' / RESUME_FILE} at step 4 (epoch 2)" in out
    assert "trained 8 steps" in out
    straight, resumed = tmp_path / "straight-ckpt", tmp_path / "broken-ckpt"
    assert weights(resumed) == weights(straight)
    assert card(resumed)["validation_curve"] == card(straight)["validation_curve"]
    assert [e["step"] for e in card(resumed)["validation_curve"]] == [4.0, 8.0]
    assert card(resumed)["metrics"] == card(straight)["metrics"]
    # the card's wall time counts the interrupted process's time too
    assert card(resumed)["wall_time_s"] > 1000


def test_resuming_with_other_settings_is_refused(shakespeare_file: Path, tmp_path: Path) -> None:
    flags = [
        "generate",
        "--smoke",
        "--data",
        str(shakespeare_file),
        "--run-dir",
        str(tmp_path / "run"),
        "--export-dir",
        str(tmp_path / "checkpoint"),
    ]
    main(flags)
    with pytest.raises(ValueError, match=r"other settings \(lr: 0.003 -> 0.01\)"):
        main([*flags, "--lr", "0.01"])


def test_lr_schedule_follows_the_further_of_steps_and_time() -> None:
    from training.loop import lr_factor

    # warmup is by steps alone
    assert lr_factor(0, 100, 10, 0.1, time_spent=0.9) == pytest.approx(0.1)
    # halfway in steps, a quarter in time: the steps decide
    assert lr_factor(55, 100, 10, 0.0) == pytest.approx(0.5)
    assert lr_factor(55, 100, 10, 0.0, time_spent=0.25) == pytest.approx(0.5)
    # a quarter in steps, the budget spent: the schedule has ended at its floor
    assert lr_factor(32, 100, 10, 0.1, time_spent=1.0) == pytest.approx(0.1)
    assert lr_factor(32, 100, 10, 0.1, time_spent=0.5) == pytest.approx(0.55)


def test_a_spent_time_budget_ends_training_and_the_card_says_so(
    shakespeare_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the clock runs out after the third step: time, not the 2 x 4 steps, ends the run
    # (as the real clock, it reads 0 when the run has no budget)
    def spent(self: Trainer) -> float:
        return float(self.config.max_minutes > 0 and self.step >= 3)

    monkeypatch.setattr(Trainer, "time_spent", spent)
    run = ["--run-dir", str(tmp_path / "run"), "--export-dir", str(tmp_path / "ckpt")]
    argv = ["generate", "--data", str(shakespeare_file), *SMOKE_FLAGS, "--epochs", "2", *run]
    assert main([*argv, "--max-minutes", "5"]) == 0
    out = capsys.readouterr().out
    assert "trained 3 steps" in out and "(the time budget ran out)" in out
    ended = card(tmp_path / "ckpt")
    assert ended["out_of_time"] is True and ended["config"]["max_minutes"] == 5
    assert ended["validation_curve"][-1]["step"] == 3  # the steps after the last validation count

    # without a budget the same run trains every step
    run = ["--run-dir", str(tmp_path / "run2"), "--export-dir", str(tmp_path / "ckpt2")]
    assert (
        main(["generate", "--data", str(shakespeare_file), *SMOKE_FLAGS, "--epochs", "2", *run])
        == 0
    )
    assert "trained 8 steps" in capsys.readouterr().out
    assert card(tmp_path / "ckpt2")["out_of_time"] is False
