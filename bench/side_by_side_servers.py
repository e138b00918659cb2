"""The three servers bench/side_by_side.py compares, each started on loopback as a user would run
it, waited on until it serves, and stopped with everything it started.

- lstm-serve: `python -m service` (as `make serve` runs it), ready when /health/ready says so;
- TorchServe 0.12 in its own virtual environment (bench/setup_torchserve.sh), the handler in
  bench/torchserve/handler.py, ready when the management API lists every worker READY;
- naive: bench/naive_server.py under uvicorn workers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from training.allocator import find_tcmalloc

BENCH = Path(__file__).resolve().parent
# as bench/setup_torchserve.sh reads it
TORCHSERVE_VENV = Path(
    os.environ.get("TORCHSERVE_VENV", BENCH.parent / ".bench" / "torchserve-venv")
)
TCMALLOC = find_tcmalloc() or ""  # as `make serve` finds it
READY_TIMEOUT_S = 180.0  # a loaded machine takes long to import torch in several processes


@dataclass(frozen=True)
class Options:
    project: Path  # the checkout whose service and inference functions are served
    port: int  # first of the ports the server may use (TorchServe takes five)
    workers: int  # processes for the servers that take a count (TorchServe, naive)
    logs: Path  # each server's output goes to a file here


@dataclass(frozen=True)
class Target:
    """Where a started server answers sentiment requests."""

    url: str


class StartError(RuntimeError):
    """A server did not come up (the message ends with its log's last lines) or did not answer
    as the others do."""


def one_thread_env(project: Path, **extra: str) -> dict[str, str]:
    """The environment of every server: one torch (OpenMP) thread per process, the project
    importable, the checkpoint named for the benchmark's own servers."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": str(project),
        "LSTM_SERVE_BENCH_CHECKPOINT": str(project / "artifacts" / "sentiment"),
        **extra,
    }


def http_get(url: str) -> tuple[int, bytes]:
    """(status, body); status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (OSError, ValueError):
        return 0, b""


def log_tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    ready: Callable[[], bool], name: str, log: Path, alive: Callable[[], bool] = lambda: True
) -> None:
    """Poll `ready` until it holds; fail early when the server's process has died."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready():
        if not alive():
            raise StartError(f"{name} exited before it was ready; {log}:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise StartError(
                f"{name} not ready after {READY_TIMEOUT_S:.0f} s; {log}:\n{log_tail(log)}"
            )
        time.sleep(0.1)


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, exited but not yet reaped, does not)."""
    with suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0]:  # our own child: reap it
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def stop_pid(pid: int, grace_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL if `pid` still runs after `grace_s`; returns once it is gone."""
    with suppress(ProcessLookupError):
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            os.kill(pid, sig)
            deadline = time.monotonic() + wait_s
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if not alive(pid):
                return


@contextmanager
def process_group(
    command: list[str], env: dict[str, str], cwd: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A server in its own process group: on exit its leader gets SIGTERM (a graceful stop),
    then whatever of the group is left gets SIGKILL."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_pid(process.pid)
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@contextmanager
def lstm_serve(options: Options) -> Iterator[Target]:
    """`python -m service` with only the sentiment checkpoint, as `make serve` runs it."""
    env = one_thread_env(
        options.project, LSTM_SERVE_MODELS="sentiment", LSTM_SERVE_LOG_LEVEL="warning"
    )
    if TCMALLOC and "LD_PRELOAD" not in env:
        env["LD_PRELOAD"] = TCMALLOC
    base = f"http://127.0.0.1:{options.port}"
    log = options.logs / "lstm-serve.log"
    command = [sys.executable, "-m", "service", "--port", str(options.port)]
    with process_group(command, env, options.project, log) as process:
        ready = lambda: http_get(f"{base}/health/ready")[0] == 200  # noqa: E731
        wait_until(ready, "lstm-serve", log, lambda: process.poll() is None)
        yield Target(f"{base}/sentiment")


@contextmanager
def naive(options: Options) -> Iterator[Target]:
    """bench/naive_server.py under uvicorn with `workers` processes."""
    base = f"http://127.0.0.1:{options.port}"
    log = options.logs / "naive.log"
    command = [
        sys.executable, "-m", "uvicorn", "naive_server:app", "--app-dir", str(BENCH),
        "--workers", str(options.workers), "--port", str(options.port), "--log-level", "warning",
        "--no-access-log",
    ]  # fmt: skip
    with process_group(command, one_thread_env(options.project), options.project, log) as process:
        # a worker answers once its checkpoint is loaded; wait until every one has answered
        seen: set[bytes] = set()

        def ready() -> bool:
            status, body = http_get(f"{base}/health")
            if status == 200:
                seen.add(body)
            return len(seen) == options.workers

        wait_until(ready, "naive", log, lambda: process.poll() is None)
        yield Target(f"{base}/sentiment")


# TorchServe's frontend: batches of up to 32 within 5 ms, `workers` Python workers; gRPC and
# metrics on ports of our range (it opens them whether used or not); no token auth, no snapshot.
TORCHSERVE_CONFIG = """\
inference_address=http://127.0.0.1:{port}
management_address=http://127.0.0.1:{management}
metrics_address=http://127.0.0.1:{metrics}
grpc_inference_address=127.0.0.1
grpc_inference_port={grpc}
grpc_management_address=127.0.0.1
grpc_management_port={grpc_management}
disable_token_authorization=true
disable_system_metrics=true
model_store={store}
load_models=sentiment.mar
models={models}
"""


def torchserve_config(port: int, store: Path, workers: int) -> str:
    model = {
        "defaultVersion": True,
        "marName": "sentiment.mar",
        "minWorkers": workers,
        "maxWorkers": workers,
        "batchSize": 32,
        "maxBatchDelay": 5,
        "responseTimeout": 120,
    }
    ports = {"management": port + 1, "metrics": port + 2, "grpc": port + 3}
    return TORCHSERVE_CONFIG.format(
        port=port,
        **ports,
        grpc_management=port + 4,
        store=store,
        models=json.dumps({"sentiment": {"1.0": model}}),
    )


def ensure_torchserve() -> Path:
    """The TorchServe virtual environment's bin/, set up on first use."""
    if not (TORCHSERVE_VENV / ".installed-torchserve-0.12").exists():
        print(f"setting up TorchServe in {TORCHSERVE_VENV} (once)", file=sys.stderr)
        subprocess.run(["bash", str(BENCH / "setup_torchserve.sh")], check=True)
    return TORCHSERVE_VENV / "bin"


def ready_workers(management: str) -> list[int]:
    """PIDs of the sentiment model's READY workers, from the management API."""
    status, body = http_get(f"{management}/models/sentiment")
    if status != 200:
        return []
    workers = json.loads(body)[0].get("workers", [])
    return [int(w.get("pid", 0)) for w in workers if w.get("status") == "READY"]


@contextmanager
def torchserve(options: Options) -> Iterator[Target]:
    """TorchServe with the handler archived into a temporary model store. Its launcher starts
    the Java frontend and exits: the frontend is stopped by the PID file it leaves in TMPDIR."""
    if shutil.which("java") is None:
        raise StartError(
            "TorchServe needs Java 17 (Debian: apt-get install openjdk-17-jre-headless)"
        )
    bin_dir = ensure_torchserve()
    with tempfile.TemporaryDirectory(prefix="side-by-side-torchserve-") as temp:
        home, store = Path(temp), Path(temp) / "model-store"
        store.mkdir()
        log = options.logs / "torchserve.log"
        archive = [
            str(bin_dir / "torch-model-archiver"), "--model-name", "sentiment",
            "--version", "1.0", "--handler", str(BENCH / "torchserve" / "handler.py"),
            "--export-path", str(store),
        ]  # fmt: skip
        subprocess.run(archive, check=True, cwd=home)
        config = home / "config.properties"
        config.write_text(torchserve_config(options.port, store, options.workers))
        env = one_thread_env(
            options.project,
            TMPDIR=temp,  # where the launcher writes .model_server.pid
            LOG_LOCATION=str(home / "logs"),
            METRICS_LOCATION=str(home / "logs"),
            PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        )
        start = [
            str(bin_dir / "torchserve"), "--start", "--ncs", "--disable-token-auth",
            "--model-store", str(store), "--ts-config", str(config),
        ]  # fmt: skip
        with log.open("wb") as output:
            subprocess.run(start, cwd=home, env=env, stdout=output, stderr=subprocess.STDOUT)
        pid_file = home / ".model_server.pid"
        frontend = int(pid_file.read_text().strip()) if pid_file.exists() else 0
        management = f"http://127.0.0.1:{options.port + 1}"
        workers: list[int] = []
        try:
            if not frontend:
                raise StartError(f"TorchServe left no PID file; {log}:\n{log_tail(log)}")

            def ready() -> bool:
                workers[:] = ready_workers(management)
                return len(workers) == options.workers

            ts_log = home / "logs" / "ts_log.log"
            wait_until(ready, "TorchServe", ts_log, lambda: alive(frontend))
            yield Target(f"http://127.0.0.1:{options.port}/predictions/sentiment")
        finally:
            if frontend:
                stop_pid(frontend)
            for pid in workers:  # the frontend stops its workers; make sure
                stop_pid(pid, grace_s=5)
            for name in ("ts_log.log", "model_log.log"):
                if (home / "logs" / name).exists():
                    (options.logs / f"torchserve-{name}").write_bytes(
                        (home / "logs" / name).read_bytes()
                    )


SERVERS = {"lstm-serve": lstm_serve, "torchserve": torchserve, "naive": naive}
