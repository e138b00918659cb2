"""`python -m training <task> --smoke` end to end on tiny fixture corpora: the exported checkpoint
loads, its card records what produced it, and `evaluate` reproduces the card's test metrics."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import platform
import shlex
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import torch

from models.architectures import LanguageModel, SequenceClassifier, count_parameters
from models.checkpoint import load_checkpoint
from models.format import FILES, MANIFEST, sha256_file
from training.__main__ import evaluate, main
from training.allocator import loaded_allocator
from training.config import config_as_dict, resolve_config, smoke_overrides
from training.data import read_text
from training.export import cpu_name
from training.loop import RESUME_FILE

from .conftest import reviews, write_csv

TASKS = ("sentiment", "next-word", "generate")
# the language models' configurations fit a continuous cache: the model alone is measured beside
# it, on the test split and on short texts read from nothing
CACHED = ["loss_without_cache", "short_texts", "short_text_length", "short_text_loss"]
TEST_METRICS = {
    "sentiment": [
        f"{prefix}{name}"
        for prefix in ("", "sentence_")
        for name in (
            "accuracy",
            "f1",
            "recall_negative",
            "recall_positive",
            "predicted_positive",
            "loss",
            "ece",
            "examples",
        )
    ],
    "next-word": [
        "loss",
        "perplexity",
        "bits_per_token",
        "tokens",
        "top1_accuracy",
        "top3_accuracy",
        "word_top3_accuracy",
        "word_targets",
        "nonword_top3_share",
        *CACHED,
        "short_text_word_top3_accuracy",
        "short_text_loss_without_cache",
        "short_text_word_top3_accuracy_without_cache",
    ],
    "generate": [
        "loss",
        "perplexity",
        "bits_per_token",
        "tokens",
        *CACHED,
        "short_text_loss_without_cache",
    ],
}


@dataclass(frozen=True)
class SmokeRun:
    task: str
    data: Path
    run_dir: Path
    export_dir: Path
    argv: list[str]
    stdout: str

    @property
    def card(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.export_dir / "card.json").read_text())
        return data


def smoke(task: str, data: Path, root: Path) -> SmokeRun:
    """Run `python -m training <task> --smoke` in-process, its stdout captured."""
    run_dir, export_dir = root / "run", root / "export"
    argv = [task, "--smoke", "--data", str(data), "--run-dir", str(run_dir)]
    argv += ["--export-dir", str(export_dir)]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return SmokeRun(task, data, run_dir, export_dir, argv, out.getvalue())


@pytest.fixture(scope="module", params=TASKS)
def run(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sentiment_dir: Path,
    wikitext_dir: Path,
    shakespeare_file: Path,
) -> SmokeRun:
    task: str = request.param
    data = {"sentiment": sentiment_dir, "next-word": wikitext_dir, "generate": shakespeare_file}
    return smoke(task, data[task], tmp_path_factory.mktemp(task))


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in metrics.items()}


def test_export_is_a_loadable_checkpoint(run: SmokeRun) -> None:
    assert f"checkpoint written to {run.export_dir}" in run.stdout
    assert sorted(p.name for p in run.export_dir.iterdir()) == sorted([*FILES, MANIFEST])
    loaded = load_checkpoint(run.export_dir)
    assert loaded.config.task == run.task
    assert loaded.config.dtype == "float16"
    assert not loaded.model.training
    if run.task == "sentiment":
        assert isinstance(loaded.model, SequenceClassifier)
        assert loaded.config.labels == ("negative", "positive")
        assert (loaded.config.max_length, loaded.config.head_tokens) == (64, 16)
        assert loaded.tokenizer.kind == "word"
    else:
        assert isinstance(loaded.model, LanguageModel)
        assert loaded.config.max_length == 256
        assert loaded.tokenizer.kind == ("word" if run.task == "next-word" else "char")
    assert loaded.model.config.hidden_dim == 16
    assert loaded.card["parameters"] == count_parameters(loaded.model)


def test_next_word_smoke_uses_an_adaptive_softmax_within_the_vocabulary(
    wikitext_dir: Path, tmp_path: Path
) -> None:
    # the shipped config's cut-offs (2000, 10000) exceed a tiny vocabulary; smoke rescales them
    loaded = load_checkpoint(smoke("next-word", wikitext_dir, tmp_path).export_dir)
    vocab = loaded.tokenizer.vocab_size
    assert isinstance(loaded.model, LanguageModel)
    assert loaded.model.config.adaptive_cutoffs == (vocab // 4, vocab // 2)


def test_card_records_metrics_and_provenance(run: SmokeRun) -> None:
    card = run.card
    assert card["task"] == run.task
    assert list(card["metrics"]["test"]) == TEST_METRICS[run.task]
    # one validation at the end of the single 4-step epoch; its result is the best
    assert [e["step"] for e in card["validation_curve"]] == [4.0]
    assert card["metrics"]["validation_best"] == card["validation_curve"][0]
    assert card["best_step"] == 4
    assert card["stopped_early"] is False

    files = [run.data] if run.data.is_file() else sorted(run.data.iterdir())
    assert card["dataset"]["sha256"] == {p.name: sha256_file(p) for p in files}
    # a corpus is named by its folder; tinyshakespeare/input.txt by the folder it lies in
    corpus = run.data.parent if run.data.name == "input.txt" else run.data
    assert card["dataset"]["name"] == corpus.name

    assert card["command"] == "python -m training " + shlex.join(run.argv)
    flags = {"data": str(run.data), "run_dir": str(run.run_dir), "smoke": True}
    flags["export_dir"] = str(run.export_dir)
    expected = config_as_dict(smoke_overrides(resolve_config(run.task, None, flags)))
    assert card["config"] == json.loads(json.dumps(expected))
    assert card["config"]["hidden_dim"] == 16 and card["config"]["max_train_batches"] == 4
    assert card["seed"] == 0

    assert isinstance(card["wall_time_s"], float) and 0.0 <= card["wall_time_s"] < 300.0
    assert card["hardware"] == {
        "device": "cpu",
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": 1,
        "processes": 1,
        "platform": platform.platform(),
        "allocator": loaded_allocator(),  # in-process: whatever this test process runs on
    }
    assert card["versions"] == {
        "python": platform.python_version(),
        **{
            name: metadata.version(name) for name in ("torch", "tokenizers", "safetensors", "numpy")
        },
    }


def test_card_samples_for_language_models(run: SmokeRun) -> None:
    card = run.card
    if run.task == "sentiment":
        assert "samples" not in card
        return
    prompts = [s["prompt"] for s in card["samples"]]
    assert prompts == card["config"]["sample_prompts"]
    assert len(prompts) == 2
    for number, sample in enumerate(card["samples"]):
        assert sample["seed"] == str(number)  # each prompt has its own seed
        assert sample["text"].startswith(sample["prompt"])
        if run.task == "generate":  # 300 new characters
            assert len(sample["text"]) == len(sample["prompt"]) + 300
        else:  # 40 new words, shown as the service shows them: <eos> as a line break
            new = sample["text"][len(sample["prompt"]) :]
            assert 0 < len(new.split()) <= 40
            assert "<eos>" not in new and "@-@" not in new


def test_run_dir_holds_config_curves_and_resume_state(run: SmokeRun) -> None:
    assert json.loads((run.run_dir / "config.json").read_text()) == run.card["config"]
    assert (run.run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run.run_dir / RESUME_FILE).is_file()
    assert not (run.export_dir / RESUME_FILE).exists()


def test_test_split_is_measured_whole(run: SmokeRun) -> None:
    """The fixtures fit within the smoke caps, so the card's test metrics cover every example."""
    test = run.card["metrics"]["test"]
    if run.task == "sentiment":
        assert test["examples"] == 20.0
        return
    loaded = load_checkpoint(run.export_dir)
    if run.task == "next-word":
        text = read_text(run.data / "test.txt")
        count = sum(len(line.split()) + 1 for line in text.splitlines())  # one <eos> per line
    else:
        text = read_text(run.data)
        count = len(text) - int(len(text) * 0.9)  # test_fraction 0.1
        assert len(loaded.tokenizer.encode(text[-count:]).ids) == count
    # eval_batch_size 4 streams of count // 4 tokens, each predicting all but its first
    assert test["tokens"] == 4 * (count // 4 - 1)


def test_evaluate_reproduces_the_card(run: SmokeRun) -> None:
    card_metrics = run.card["metrics"]["test"]
    measured = evaluate(str(run.export_dir), str(run.data), threads=1, device="cpu")
    assert list(measured) == list(card_metrics)
    assert _rounded(measured) == _rounded(card_metrics)


def test_evaluate_command_prints_the_card_metrics(
    run: SmokeRun, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(run.export_dir), "--data", str(run.data)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == _rounded(run.card["metrics"]["test"])


def test_sentiment_from_csv_files(tmp_path: Path) -> None:
    data = tmp_path / "csv-reviews"
    data.mkdir()
    write_csv(data / "train.csv", reviews(48, seed=1), ("negative", "positive"))
    plain = write_csv(tmp_path / "test.csv", reviews(20, seed=2), ("neg", "pos"))
    (data / "test.csv.gz").write_bytes(gzip.compress(plain.read_bytes(), mtime=0))
    done = smoke("sentiment", data, tmp_path / "out")
    card = done.card
    assert card["dataset"]["sha256"] == {
        "train.csv": sha256_file(data / "train.csv"),
        "test.csv.gz": sha256_file(data / "test.csv.gz"),
    }
    assert card["metrics"]["test"]["examples"] == 20.0
    measured = evaluate(str(done.export_dir), str(data), threads=1, device="cpu")
    assert _rounded(measured) == _rounded(card["metrics"]["test"])


def test_same_seed_same_weights_other_seed_other_weights(
    shakespeare_file: Path, tmp_path: Path
) -> None:
    first = smoke("generate", shakespeare_file, tmp_path / "a")
    again = smoke("generate", shakespeare_file, tmp_path / "b")
    weights = lambda r: sha256_file(r.export_dir / "model.safetensors")  # noqa: E731
    assert weights(first) == weights(again)
    assert first.card["metrics"] == again.card["metrics"]
    assert first.card["samples"] == again.card["samples"]

    other_argv = [*first.argv, "--seed", "1"]
    other_argv[other_argv.index(str(first.run_dir))] = str(tmp_path / "c" / "run")
    other_argv[other_argv.index(str(first.export_dir))] = str(tmp_path / "c" / "export")
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(other_argv) == 0
    assert sha256_file(tmp_path / "c" / "export" / "model.safetensors") != weights(first)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("task", TASKS)
def test_trains_on_cuda_and_the_checkpoint_evaluates_on_the_cpu(
    task: str, tmp_path: Path, sentiment_dir: Path, wikitext_dir: Path, shakespeare_file: Path
) -> None:
    data = {"sentiment": sentiment_dir, "next-word": wikitext_dir, "generate": shakespeare_file}
    argv = [task, "--smoke", "--device", "cuda", "--data", str(data[task])]
    argv += ["--run-dir", str(tmp_path / "run"), "--export-dir", str(tmp_path / "export")]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    card = json.loads((tmp_path / "export" / "card.json").read_text())
    assert card["hardware"]["device"] == "cuda"
    assert card["hardware"]["gpu"] == torch.cuda.get_device_name(0)
    # exported weights are the CPU's: the checkpoint serves and evaluates anywhere
    measured = evaluate(str(tmp_path / "export"), str(data[task]), threads=1, device="cpu")
    assert list(measured) == list(card["metrics"]["test"])
    for name, value in card["metrics"]["test"].items():
        assert measured[name] == pytest.approx(value, rel=1e-3, abs=1e-3), name
