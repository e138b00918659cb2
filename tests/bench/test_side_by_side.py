"""bench/side_by_side.py and its servers: wrk's output read right, the report's ratios, the
TorchServe settings the comparison promises, the handler and the naive server on the shipped
sentiment checkpoint, and stopping a process that ignores SIGTERM."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi.testclient import TestClient

from models.checkpoint import load_checkpoint
from service.inference import classify, encode_review

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
CHECKPOINT = ROOT / "artifacts" / "sentiment"
sys.path.append(str(BENCH))  # the benchmark's modules import each other as scripts do

import side_by_side  # noqa: E402
import side_by_side_servers as servers  # noqa: E402

# wrk 4.1's output (Debian package), the socket errors line as wrk prints it when there are any
WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:18450/
  1 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     9.31ms   13.27ms  81.76ms   88.06%
    Req/Sec   734.40    368.44     1.16k    50.00%
  Latency Distribution
     50%    3.68ms
     75%    9.68ms
     90%   26.11ms
     99%    1.21s
  737 requests in 1.01s, 399.45KB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 12
Requests/sec:    730.31
Transfer/sec:    395.82KB
"""


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wrk_output_is_read_with_units_and_errors() -> None:
    measure = side_by_side.parse_wrk(WRK_OUTPUT)
    assert measure == side_by_side.Measure(
        rps=730.31, p50_ms=3.68, p99_ms=1210.0, refused=12, socket_errors=5, requests=737
    )


def test_wrk_output_without_errors_counts_none() -> None:
    clean = "\n".join(
        line for line in WRK_OUTPUT.splitlines() if "errors" not in line and "Non-2xx" not in line
    )
    measure = side_by_side.parse_wrk(clean)
    assert (measure.refused, measure.socket_errors) == (0, 0)


def measure(rps: float, p50: float, p99: float, refused: int = 0) -> side_by_side.Measure:
    return side_by_side.Measure(rps, p50, p99, refused, 0, int(rps), client_cpu=rps / 1000)


def test_refused_answers_are_not_throughput() -> None:
    measure = side_by_side.parse_wrk(WRK_OUTPUT)  # 737 answers, 12 of them refused
    assert measure.served_rps == pytest.approx(730.31 * 725 / 737)


def test_report_gives_ratios_against_each_other_server() -> None:
    results = {
        "lstm-serve": {1: measure(200, 5.0, 10.0), 64: measure(800, 100.0, 150.0, refused=200)},
        "torchserve": {1: measure(100, 10.0, 20.0), 64: measure(400, 150.0, 200.0)},
        "naive": {1: measure(250, 4.0, 8.0), 64: measure(300, 200.0, 400.0)},
    }
    labels = {name: ["positive", "negative"] for name in results}
    args = Namespace(texts=["a"] * 2000, duration=20.0, warmup=5.0)
    text = side_by_side.report(results, labels, args)
    assert "| TorchServe 0.12 | 64 | 400 | 400 | 150.0 | 200.0 | 0 | 0 |" in text
    assert "| lstm-serve | 64 | 800 | 600 | 100.0 | 150.0 | 200 | 0 |" in text  # 200 refused
    torchserve_table = text.split("lstm-serve / TorchServe 0.12")[1].split("\n\n")[0]
    assert "| 1 | 2.00 | 0.50 | 0.50 |" in torchserve_table
    assert "| 64 | 1.50 | 0.67 | 0.75 |" in torchserve_table
    assert "| 64 | 2.00 | 0.50 | 0.38 |" in text.split("lstm-serve / naive FastAPI")[1]
    assert "asked before the load: the same." in text
    assert "busy" not in text
    assert "wrk's own CPU: 10.0% to 80.0% of one core per measured run." in text


def test_report_warns_when_the_machine_was_busy_before_the_run() -> None:
    args = Namespace(texts=[], duration=1, warmup=0)
    results = {"naive": {1: measure(1, 1, 1)}}
    busy = side_by_side.report(results, {}, args, load_before=(os.cpu_count() or 1) + 1.0)
    assert busy.startswith("**The machine was busy before the run")


def test_a_run_without_answers_has_no_latency_and_no_ratio() -> None:
    silent = side_by_side.Measure(0.0, 0.0, 0.0, 0, 0, 0)  # wrk's figures when nothing came back
    results = {"lstm-serve": {64: silent}, "naive": {64: measure(300, 200.0, 400.0)}}
    text = side_by_side.report(results, {}, Namespace(texts=[], duration=1, warmup=0))
    assert "| lstm-serve | 64 | 0 | 0 | - | - | 0 | 0 |" in text
    assert "| 64 | - | - | - |" in text


def test_report_says_when_servers_disagree() -> None:
    results = {"lstm-serve": {1: measure(1, 1, 1)}, "naive": {1: measure(1, 1, 1)}}
    labels = {"lstm-serve": ["positive"], "naive": ["negative"]}
    text = side_by_side.report(results, labels, Namespace(texts=[], duration=1, warmup=0))
    assert "DIFFERENT" in text
    assert "TorchServe" not in text  # no ratio against a server that did not run


def test_torchserve_config_batches_32_within_5_ms_on_our_ports() -> None:
    text = servers.torchserve_config(18420, Path("/tmp/store"), workers=2)
    properties = dict(line.split("=", 1) for line in text.splitlines())
    assert properties["disable_token_authorization"] == "true"
    assert properties["inference_address"] == "http://127.0.0.1:18420"
    assert properties["management_address"] == "http://127.0.0.1:18421"
    ports = [int(properties[k]) for k in ("grpc_inference_port", "grpc_management_port")]
    assert all(18420 <= port < 18425 for port in ports)
    model = side_by_side.json.loads(properties["models"])["sentiment"]["1.0"]
    assert (model["batchSize"], model["maxBatchDelay"]) == (32, 5)
    assert (model["minWorkers"], model["maxWorkers"]) == (2, 2)


class FakeContext:
    """What the handler uses of TorchServe's Context: per-request response statuses."""

    def __init__(self) -> None:
        self.statuses: dict[int, tuple[int, str]] = {}

    def set_response_status(self, code: int, phrase: str, idx: int) -> None:
        self.statuses[idx] = (code, phrase)


def test_torchserve_handler_answers_as_classify_and_refuses_bad_bodies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LSTM_SERVE_BENCH_CHECKPOINT", str(CHECKPOINT))
    handler = load_module(BENCH / "torchserve" / "handler.py").SentimentHandler()
    context = FakeContext()
    handler.initialize(context)
    good = "A moving film, wonderfully acted."
    batch: list[dict[str, Any]] = [
        {"body": {"text": good}},
        {"data": b"not json"},
        {"body": {"text": ""}},
        {"body": {"text": "x" * 20_001}},
        {"body": b'{"text": "Dull and far too long."}'},
    ]
    answers = handler.handle(batch, context)
    assert sorted(context.statuses) == [1, 2, 3]
    assert all(code == 400 for code, _ in context.statuses.values())
    assert context.statuses[3][1] == "`text` has 20,001 characters; the limit is 20,000"
    checkpoint = load_checkpoint(CHECKPOINT)
    expected = classify(checkpoint, [encode_review(checkpoint, good, explain=False)])[0]
    # batched with another review here, alone there: equal up to float rounding
    probabilities = list(answers[0]["probabilities"].values())
    assert probabilities == pytest.approx(expected.probabilities, rel=1e-4, abs=1e-6)
    assert answers[0]["label"] in checkpoint.config.labels
    assert answers[4]["label"] in checkpoint.config.labels


def test_naive_server_classifies_one_review_and_names_a_missing_text() -> None:
    client = TestClient(load_module(BENCH / "naive_server.py").app)
    answer = client.post("/sentiment", json={"text": "A moving film, wonderfully acted."})
    assert answer.status_code == 200
    assert set(answer.json()["probabilities"]) == set(load_checkpoint(CHECKPOINT).config.labels)
    missing = client.post("/sentiment", json={"review": "x"})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "text"]
    assert client.get("/health").json() == {"pid": os.getpid()}


def test_a_server_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
    started = time.monotonic()
    servers.stop_pid(stubborn.pid, grace_s=0.3)
    assert not servers.alive(stubborn.pid)
    assert 0.3 <= time.monotonic() - started < 5  # it outlived SIGTERM for the whole grace


def test_torchserve_without_java_is_refused_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(servers.shutil, "which", lambda name: None)
    options = servers.Options(ROOT, 18420, 2, tmp_path)
    with pytest.raises(servers.StartError, match="needs Java 17"), servers.torchserve(options):
        pass
    assert list(tmp_path.iterdir()) == []  # no log: nothing was started
