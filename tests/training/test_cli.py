"""The command line a new user meets: `--smoke` works offline on the shipped samples, a failed
download is one line naming what, from where and what to do, and `--help` describes every flag."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from models.checkpoint import load_checkpoint
from training import allocator
from training import data as data_module
from training.__main__ import TASKS, main
from training.config import TASK_CONFIGS, setting_types
from training.data import Corpus, Remote

from .conftest import FileServer, free_port, sha256_bytes

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_NAMES = {
    "sentiment": "imdb-sample",
    "next-word": "wikitext-2-sample",
    "generate": "tinyshakespeare-sample",
}


def _no_network(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a smoke run without --data must not open a connection")


@pytest.mark.parametrize("task", sorted(TASKS))
def test_smoke_without_data_trains_offline_on_the_shipped_sample(
    task: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    export = tmp_path / "checkpoint"
    argv = [task, "--smoke", "--run-dir", str(tmp_path / "run"), "--export-dir", str(export)]
    argv += ["--cache-dir", str(tmp_path / "cache")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    sample = TASKS[task].sample
    assert sample.name == SAMPLE_NAMES[task]
    assert f"--smoke without --data: training on the sample shipped in {sample}" in out.getvalue()
    card = load_checkpoint(export).card
    # every corpus is named by its directory (a character corpus in the canonical input.txt too)
    assert card["dataset"]["name"] == sample.name
    assert card["config"]["data"] == str(sample)
    assert card["metrics"]["test"]  # the sample has a test split, and it was measured
    assert not (tmp_path / "cache").exists()  # nothing was downloaded


def test_the_samples_are_small_real_text_with_their_provenance() -> None:
    samples = Path(TASKS["sentiment"].sample).parent
    readme = (samples / "README.md").read_text()
    for kind in TASKS.values():
        files = [p for p in kind.sample.rglob("*") if p.is_file()]
        assert files, kind.name
        assert sum(p.stat().st_size for p in files) < 16_000, kind.name  # a few KB each
        assert kind.sample.name in readme
    reviews = (TASKS["sentiment"].sample / "train.jsonl").read_text().splitlines()
    labels = [json.loads(line)["label"] for line in reviews]
    assert labels.count(0) == labels.count(1) == 20


@pytest.mark.parametrize("where", ["closed port", "http 404"])
def test_a_failed_download_is_one_line_and_a_non_zero_exit(
    where: str,
    file_server: FileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if where == "closed port":
        url = f"http://127.0.0.1:{free_port()}/aclImdb_v1.tar.gz"
    else:
        url = file_server.url("/missing/aclImdb_v1.tar.gz")
    corpus = Corpus("imdb", {"archive": Remote(url, sha256_bytes(b""))}, {"train": "train.jsonl"})
    monkeypatch.setitem(data_module.CORPORA, "imdb", corpus)
    argv = ["sentiment", "--cache-dir", str(tmp_path / "cache"), "--run-dir", str(tmp_path / "r")]
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    line = lines[0]
    assert line.startswith("python -m training sentiment: could not get the imdb corpus: ")
    assert f"download of {url} failed" in line
    assert ("HTTP Error 404" in line) == (where == "http 404")
    assert line.endswith(
        "pass --data with a local copy (train.jsonl, or the same names without .gz)"
    )
    assert "Traceback" not in captured.err + captured.out
    assert list((tmp_path / "cache").iterdir()) == []


def test_the_command_exits_non_zero_with_no_traceback(tmp_path: Path) -> None:
    """The real process: data that cannot be read ends in one line on stderr and exit status 1."""
    done = subprocess.run(
        [sys.executable, "-m", "training", "generate", "--data", str(tmp_path / "nothing")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"python -m training generate: {tmp_path / 'nothing'}: no input.txt (optionally .gz) found"
    ]


def test_a_device_this_machine_lacks_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["generate", "--smoke", "--device", "tpu", "--run-dir", str(tmp_path / "run")]
    assert main(argv) == 1
    assert capsys.readouterr().err.splitlines() == [
        "python -m training generate: device 'tpu' is not one of auto, cpu, cuda, cuda:N"
    ]


@pytest.mark.parametrize("task", sorted(TASK_CONFIGS))
def test_help_describes_every_flag_with_its_default(
    task: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([task, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines; compare words
    shipped = json.loads((ROOT / "training" / "configs" / f"{task}.json").read_text())
    for name in setting_types(TASK_CONFIGS[task]):
        flag = "--" + name.replace("_", "-")
        if name == "smoke":
            assert "--smoke, --dry-run a tiny model on a few batches, in seconds;" in text
            continue
        after = text.split(f"{flag} {name.upper()} ", 1)[1]
        description = after.split(" --", 1)[0]
        assert "(default: " in description and len(description) > 25, (flag, description)
    hidden = str(shipped["hidden_dim"])
    assert f"(default: {hidden}, from training/configs/{task}.json)" in text
    cache = "--cache-dir CACHE_DIR where downloads are kept, verified (default: .cache/lstm-serve)"
    assert cache in text


def test_the_command_runs_on_tcmalloc_where_the_system_has_it(tmp_path: Path) -> None:
    """The real process restarts itself with tcmalloc preloaded (about a fifth faster on the
    CPU) and records the allocator it ran on in the card."""
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    export = tmp_path / "checkpoint"
    argv = ["generate", "--smoke", "--run-dir", str(tmp_path / "run"), "--export-dir", str(export)]
    done = subprocess.run(
        [sys.executable, "-m", "training", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    expected = "tcmalloc" if allocator.find_tcmalloc() else "system"
    assert load_checkpoint(export).card["hardware"]["allocator"] == expected


@pytest.mark.parametrize("preload", ["", "/opt/lib/libjemalloc.so"])
def test_a_callers_ld_preload_is_left_alone(preload: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting LD_PRELOAD, even to nothing, is how a caller keeps the allocator it has."""
    monkeypatch.setenv("LD_PRELOAD", preload)
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: "/usr/lib/libtcmalloc_minimal.so.4")
    monkeypatch.setattr(os, "execve", _no_restart)
    allocator.restart_with_tcmalloc(["generate", "--smoke"])


def test_without_ld_preload_it_restarts_with_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setattr(allocator, "find_tcmalloc", lambda: "/usr/lib/libtcmalloc_minimal.so.4")
    calls: list[tuple[str, list[str], dict[str, str]]] = []
    monkeypatch.setattr(os, "execve", lambda *call: calls.append(call))
    allocator.restart_with_tcmalloc(["generate", "--smoke"])
    ((program, args, env),) = calls
    assert (program, args) == (
        sys.executable,
        [sys.executable, "-m", "training", "generate", "--smoke"],
    )
    assert env["LD_PRELOAD"] == "/usr/lib/libtcmalloc_minimal.so.4"


def _no_restart(*args: Any) -> None:
    raise AssertionError("restarted although the caller set LD_PRELOAD")
