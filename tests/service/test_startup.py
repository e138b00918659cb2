"""Startup: a checkpoint that fails to load fails the service, or with allow_partial is reported
as unavailable while the others serve; impossible devices fail clearly; CUDA serves when present."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from models.architectures import LanguageModel
from models.checkpoint import save_checkpoint
from models.config import LanguageModelConfig
from models.format import WEIGHTS, CheckpointConfig
from models.tokenizers import CharTokenizer
from service.app import create_app
from service.registry import Registry
from tests.service.conftest import Checkpoints, SettingsFactory
from tests.service.support import assert_error, serve, state_of, wait_until

ALL = ["sentiment", "next-word", "generate"]


def _tampered(checkpoints: Checkpoints, directory: Path) -> Path:
    """A copy of the sentiment checkpoint whose weights gained one byte after signing."""
    broken = shutil.copytree(checkpoints.path("sentiment"), directory / "broken")
    with (broken / WEIGHTS).open("ab") as weights:
        weights.write(b"\0")
    return broken


def _failed(client: TestClient) -> bool:
    return bool(client.get("/health/ready").json()["status"] == "failed")


def test_a_tampered_checkpoint_fails_startup(
    make_settings: SettingsFactory, checkpoints: Checkpoints, tmp_path: Path
) -> None:
    broken = _tampered(checkpoints, tmp_path)
    fatal: list[str] = []
    app = create_app(make_settings(models=[*ALL, f"broken={broken}"]), fatal.append)
    with TestClient(app) as client:
        wait_until(lambda: _failed(client), 10, "startup to fail")
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["models"]["broken"] == "unavailable"
        live = client.get("/health/live")
        assert (live.status_code, live.json()) == (503, {"status": "failed"})
        assert len(fatal) == 1
        assert "broken: model.safetensors: sha256 does not match" in fatal[0]
        assert state_of(client).failed == fatal[0]
        # nothing is served by a service that failed to start
        assert_error(client.post("/sentiment", json={"text": "a film"}), 503, "not_ready")


def test_allow_partial_serves_the_models_that_loaded(
    make_settings: SettingsFactory, checkpoints: Checkpoints, tmp_path: Path
) -> None:
    broken = _tampered(checkpoints, tmp_path)
    settings = make_settings(models=[*ALL, f"broken={broken}"], allow_partial=True)
    with serve(settings) as client:
        ready = client.get("/health/ready").json()
        assert ready == {
            "status": "ok",
            "models": {name: "ready" for name in ALL} | {"broken": "unavailable"},
            "engines": {"engines": 1, "alive": 1, "restarts": 0},
        }
        assert client.get("/health/live").status_code == 200
        models = {m["name"]: m for m in client.get("/models").json()["models"]}
        assert [models[name]["status"] for name in ALL] == ["ready"] * 3
        unavailable = models["broken"]
        assert unavailable["status"] == "unavailable"
        assert unavailable["error"].startswith(f"{WEIGHTS}: sha256 does not match")
        assert unavailable["task"] is None
        answer = assert_error(
            client.post("/sentiment", json={"text": "a film", "model": "broken"}),
            503,
            "model_unavailable",
        )
        assert "'broken'" in answer["error"] and WEIGHTS in answer["error"]
        assert client.post("/sentiment", json={"text": "a film"}).status_code == 200
        assert client.post("/next-word", json={"text": "the "}).status_code == 200
        assert client.post("/generate", json={"prompt": "to", "max_new_tokens": 2}).is_success


def test_a_missing_checkpoint_directory_is_named(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(
        models=["sentiment", f"ghost={tmp_path / 'ghost'}"], allow_partial=True
    )
    with serve(settings) as client:
        models = {m["name"]: m for m in client.get("/models").json()["models"]}
        assert models["ghost"]["error"] == "ghost: checkpoint directory not found"


def test_no_loadable_model_fails_even_with_allow_partial(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(models=[f"ghost={tmp_path / 'ghost'}"], allow_partial=True)
    with serve(settings, ready=False) as client:
        wait_until(lambda: _failed(client), 10, "startup to fail")
        assert state_of(client).failed == "no model loaded"


def _odd_checkpoint(tmp_path: Path) -> Path:
    """A language model labelled as a sentiment checkpoint: file checks pass, warm-up fails."""
    chars = CharTokenizer.fit("abc ")
    model = LanguageModel(
        LanguageModelConfig(vocab_size=chars.vocab_size, embed_dim=4, hidden_dim=4, num_layers=1)
    )
    config = CheckpointConfig(
        task="sentiment", model=model.config, tokenizer="char", max_length=8, labels=("n", "p")
    )
    return save_checkpoint(tmp_path / "odd", model, config, chars, {})


def test_a_checkpoint_that_loads_but_cannot_run_fails_startup(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """A language model labelled as a sentiment checkpoint passes every file check but breaks in
    its warm-up: the service must report failed, not stay 'loading' for ever."""
    odd = _odd_checkpoint(tmp_path)
    fatal: list[str] = []
    app = create_app(make_settings(models=["sentiment", f"odd={odd}"]), fatal.append)
    with TestClient(app) as client:
        wait_until(lambda: _failed(client), 10, "startup to fail")
        assert client.get("/health/live").status_code == 503
        assert fatal == ["checkpoints failed to load (odd: AssertionError())"]


def test_with_allow_partial_a_model_that_cannot_run_is_unavailable_and_given_no_work(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    odd = _odd_checkpoint(tmp_path)
    settings = make_settings(models=["sentiment", f"odd={odd}"], allow_partial=True)
    with serve(settings) as client:
        assert state_of(client).registry.failures == {"odd": "AssertionError()"}
        assert "odd" not in state_of(client).registry.models  # no engine is given its work
        response = client.post("/sentiment", json={"text": "abc", "model": "odd"})
        assert_error(response, 503, "model_unavailable")
        assert client.post("/sentiment", json={"text": "a fine film"}).status_code == 200


@pytest.mark.parametrize(
    "error",
    [
        OSError(2, "No such file or directory", "/srv/private/models/x.bin"),
        RuntimeError("cannot map /srv/private/models/x.bin"),
    ],
    ids=["os-error", "runtime-error"],
)
def test_an_unexpected_startup_error_is_told_to_clients_without_its_path(
    make_settings: SettingsFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
) -> None:
    """An error outside any one checkpoint (not a StartupError) fails startup; what clients read
    names the file and the problem, never the directory or a traceback; the log has both."""

    def load_all(self: Registry) -> None:
        raise error

    monkeypatch.setattr(Registry, "load_all", load_all)
    fatal: list[str] = []
    app = create_app(make_settings(), fatal.append)
    with caplog.at_level("ERROR", logger="lstm_serve"), TestClient(app) as client:
        wait_until(lambda: _failed(client), 10, "startup to fail")
        answer = assert_error(client.post("/sentiment", json={"text": "a film"}), 503, "not_ready")
    assert fatal == [state_of(client).failed]
    assert "x.bin" in fatal[0] and "/srv/private" not in fatal[0], fatal[0]
    assert answer["error"] == f"the service failed to start: {fatal[0]}"
    assert "/srv/private" not in answer["error"] and "Traceback" not in answer["error"]
    assert "/srv/private/models/x.bin" in caplog.text and "Traceback" in caplog.text


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"device": "cuda"}, "device 'cuda' requested but no CUDA device is available"),
        ({"device": "tpu"}, "device 'tpu' is not one of auto, cpu, cuda, cuda:N"),
        ({"dtype": "float16"}, "dtype float16 needs a CUDA device; on cpu use float32"),
    ],
)
def test_an_impossible_device_or_dtype_fails_startup(
    make_settings: SettingsFactory, overrides: dict[str, Any], reason: str
) -> None:
    with serve(make_settings(**overrides), ready=False) as client:
        wait_until(lambda: _failed(client), 10, "startup to fail")
        assert state_of(client).failed == reason
        assert client.get("/health/live").status_code == 503


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_serves_on_cuda(make_settings: SettingsFactory) -> None:
    with serve(make_settings(device="cuda")) as client:
        response = client.post("/sentiment", json={"text": "A great film", "explain": True})
        assert response.status_code == 200, response.text
        body = response.json()
        assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert len(body["explanation"]) == body["tokens"] == 3
        batch = client.post("/sentiment/batch", json={"texts": ["A great film", "dull"]})
        assert batch.status_code == 200, batch.text
        assert client.post("/next-word", json={"text": "the hist"}).json()["completing"] is True
        generated = client.post("/generate", json={"prompt": "to", "max_new_tokens": 5, "seed": 1})
        assert generated.json()["tokens"] == 5
        devices = {m["device"] for m in client.get("/models").json()["models"]}
        assert devices == {"cuda"}


def test_with_the_sentiment_model_broken_both_ways_of_asking_get_one_503(
    make_settings: SettingsFactory, checkpoints: Checkpoints, tmp_path: Path
) -> None:
    """Omitting `model` (the default is the broken one) and naming it give the same answer: 503
    model_unavailable with Retry-After (it was a 404 when omitted, and a 503 without the header)."""
    broken = _tampered(checkpoints, tmp_path)
    settings = make_settings(models=[f"sentiment={broken}", "next-word"], allow_partial=True)
    with serve(settings) as client:
        for body in ({"text": "a film"}, {"text": "a film", "model": "sentiment"}):
            response = client.post("/sentiment", json=body)
            answer = assert_error(response, 503, "model_unavailable")
            assert int(response.headers["retry-after"]) >= 1
            assert "sentiment" in answer["error"]
        assert client.post("/next-word", json={"text": "the"}).status_code == 200
