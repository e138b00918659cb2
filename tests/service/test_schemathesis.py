"""schemathesis against a real `python -m service`: every check, every phase, from the served
/openapi.json, without and with an API key. Short here (deterministic generation, a few examples
per operation, offline); the long run is a documented command in docs/RELIABILITY.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.conftest import Checkpoints
from tests.service.test_hardening import service_process

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
KEY = "test-key-0123456789"


@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis is in the dev extras")
@pytest.mark.parametrize("api_key", [None, KEY], ids=["open", "api-key"])
def test_schemathesis_finds_no_failure(
    checkpoints: Checkpoints, tmp_path: Path, api_key: str | None
) -> None:
    env = {"LSTM_SERVE_API_KEY": api_key} if api_key else {}
    with service_process(checkpoints, tmp_path, **env) as (_, url):
        command = [
            str(SCHEMATHESIS),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--phases",
            # with a key, the phases that send it (and omit or spoil it); coverage once, open
            "examples,fuzzing" if api_key else "examples,coverage,fuzzing",
            "--max-examples",
            "2",
            "--generation-deterministic",
            "--workers",
            "1",
            "--max-response-time",
            "20",
        ]
        if api_key:
            command += ["--header", f"Authorization: Bearer {api_key}"]
        run = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-6000:]
