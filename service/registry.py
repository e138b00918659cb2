"""The model registry: loads every configured checkpoint on the inference thread, warms it up,
wires it into the engine, and knows which model answers each task by default."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.architectures import LanguageModel, count_parameters
from models.checkpoint import MANIFEST, WEIGHTS, Checkpoint, CheckpointError, load_checkpoint
from models.decoding import SamplingParams
from service import inference
from service.engine import Engine
from service.errors import ModelNotFound, ModelUnavailable, NotReady
from service.generation import FinishEvent, GenerationRequest, GenerationScheduler
from service.prefix_cache import PrefixCache
from service.settings import Settings

logger = logging.getLogger("lstm_serve.registry")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class StartupError(Exception):
    """The service cannot start as configured (bad device or dtype, a required model failed)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise StartupError(f"device {name!r} is not one of auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise StartupError(f"device {name!r} requested but no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise StartupError(f"device {name!r}: only {torch.cuda.device_count()} CUDA devices")
    elif device.type != "cpu":
        raise StartupError(f"device {name!r} is not one of auto, cpu, cuda, cuda:N")
    return device


def check_dtype(device: torch.device, dtype: str) -> torch.dtype:
    """Half precision only where the device computes it natively."""
    if dtype == "float32":
        return torch.float32
    if device.type != "cuda":
        raise StartupError(f"dtype {dtype} needs a CUDA device; on {device} use float32")
    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        raise StartupError(
            f"dtype bfloat16 is not supported by {torch.cuda.get_device_name(device)}"
        )
    return DTYPES[dtype]


_ABSOLUTE_PATH = re.compile(r"(?:/[^/\s'\"():,;]+){2,}")


def public_reason(error: Exception, path: Path) -> str:
    """Why a checkpoint failed, as clients may read it (/models, /health, error bodies): the file
    and the problem, never a directory of this machine. The log has the path and, for an
    unexpected error, the traceback."""
    if isinstance(error, CheckpointError):
        reason = str(error)  # these name the file, not its directory
    elif isinstance(error, OSError) and error.filename:
        reason = f"{Path(str(error.filename)).name}: {error.strerror or type(error).__name__}"
    else:
        reason = repr(error)
    for directory in sorted({str(path), str(path.resolve())}, key=len, reverse=True):
        reason = reason.replace(directory, path.name)
    return _ABSOLUTE_PATH.sub(lambda found: found.group().rsplit("/", 1)[1], reason)


@dataclass
class LoadedModel:
    checkpoint: Checkpoint
    version: str
    cache: PrefixCache | None = None
    scheduler: GenerationScheduler | None = None

    @property
    def task(self) -> str:
        return self.checkpoint.config.task


@dataclass
class Registry:
    settings: Settings
    engine: Engine
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    models: dict[str, LoadedModel] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    ready: bool = False
    startup_error: str | None = None
    load_seconds: float = 0.0

    def load_all(self) -> None:
        """Runs on the inference thread. Raises StartupError unless allow_partial."""
        started = time.perf_counter()
        self.device = resolve_device(self.settings.device)
        self.dtype = check_dtype(self.device, self.settings.dtype)
        for name, path in self.settings.checkpoint_paths().items():
            try:
                self._load(name, path)
            except Exception as error:  # a checkpoint that loads but cannot run fails here too
                self.failures[name] = public_reason(error, path)
                logger.error(
                    "model %s failed to load from %s: %s",
                    name,
                    path,
                    error if isinstance(error, CheckpointError) else repr(error),
                    exc_info=not isinstance(error, CheckpointError),
                )
        if self.failures and not self.settings.allow_partial:
            detail = "; ".join(f"{n}: {r}" for n, r in self.failures.items())
            raise StartupError(f"checkpoints failed to load ({detail})")
        if not self.models:
            raise StartupError("no model loaded")
        self.load_seconds = time.perf_counter() - started
        self.ready = True

    def _load(self, name: str, path: Path) -> None:
        checkpoint = load_checkpoint(path, device=self.device, dtype=self.dtype, name=name)
        manifest = (path / MANIFEST).read_text().splitlines()
        version = next(line[:12] for line in manifest if line.endswith(WEIGHTS))  # weights' sha256
        loaded = LoadedModel(checkpoint, version)
        cache_bytes = self.settings.cache_mb * 2**20
        if isinstance(checkpoint.model, LanguageModel):
            loaded.cache = PrefixCache(cache_bytes) if cache_bytes else None
            loaded.scheduler = GenerationScheduler(
                checkpoint.model,
                checkpoint.tokenizer,
                self.settings.max_active_generations,
                loaded.cache,
            )
        self._warm_up(loaded)
        self._wire(name, loaded)  # only a model that ran its warm-up is given work
        self.models[name] = loaded
        logger.info(
            "loaded %s (%s, %d parameters) on %s",
            name,
            loaded.task,
            count_parameters(checkpoint.model),
            self.device,
        )

    def _wire(self, name: str, loaded: LoadedModel) -> None:
        checkpoint = loaded.checkpoint
        if loaded.task == "sentiment":
            self.engine.register(
                f"{name}:sentiment", lambda items: inference.classify(checkpoint, items)
            )
        elif loaded.scheduler is not None:
            self.engine.register(
                f"{name}:next-word",
                lambda queries: inference.next_words(checkpoint, queries, loaded.cache),
            )
            self.engine.add_scheduler(loaded.scheduler)

    def _warm_up(self, loaded: LoadedModel) -> None:
        """One pass of each operation, so the first request does not pay for lazy initialisation."""
        checkpoint = loaded.checkpoint
        if loaded.task == "sentiment":
            inference.classify(checkpoint, [inference.encode_review(checkpoint, "warm up", True)])
        elif isinstance(checkpoint.model, LanguageModel):
            query = inference.build_query(checkpoint, "warm up", 3, 16)
            inference.next_word_distributions(checkpoint.model, [query], None)
            scheduler = loaded.scheduler
            assert scheduler is not None
            finished: list[FinishEvent] = []
            request = GenerationRequest(
                [checkpoint.tokenizer.unk_id],
                2,
                SamplingParams(),
                0,
                (),
                emit=lambda event: (
                    finished.append(event) if isinstance(event, FinishEvent) else None
                ),
            )
            scheduler.submit(request)
            while scheduler.active():
                scheduler.admit()
                scheduler.step()
            ends = [
                f"{e.finish_reason} ({e.error})" if e.error else e.finish_reason for e in finished
            ]
            if ends != ["length"]:  # a step failed: the scheduler ended the sequence, not raised
                raise RuntimeError(f"warm-up generation ended with {', '.join(ends) or 'nothing'}")

    def get(self, name: str | None, task: str) -> tuple[str, LoadedModel]:
        """The named model, or the default for `task` (the first configured model of that task)."""
        if self.startup_error is not None:
            raise NotReady(f"the service failed to start: {self.startup_error}")
        if not self.ready:
            raise NotReady("models are still loading; retry shortly")
        if name is None:
            # a model trained for the task first, then any other that can serve it
            ranked = sorted(self.models.items(), key=lambda item: item[1].task != task)
            for model_name, loaded in ranked:
                if _serves(loaded, task):
                    return model_name, loaded
            raise ModelNotFound(f"no loaded model serves {task}")
        if name in self.failures:
            raise ModelUnavailable(f"model {name!r} failed to load: {self.failures[name]}")
        loaded_model = self.models.get(name)
        if loaded_model is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelNotFound(f"model {name!r} is not loaded; loaded models: {known}")
        if not _serves(loaded_model, task):
            raise ModelNotFound(
                f"model {name!r} is a {loaded_model.task} model; it cannot serve {task}"
            )
        return name, loaded_model

    def describe(self) -> list[dict[str, Any]]:
        out = []
        for name, loaded in self.models.items():
            checkpoint = loaded.checkpoint
            model_config = checkpoint.config.model
            out.append(
                {
                    "name": name,
                    "task": loaded.task,
                    "version": loaded.version,
                    "architecture": checkpoint.config.to_dict()["architecture"],
                    "cell": model_config.cell,
                    "parameters": count_parameters(checkpoint.model),
                    "vocab_size": model_config.vocab_size,
                    "max_length": checkpoint.config.max_length,
                    "labels": list(checkpoint.config.labels),
                    "metrics": checkpoint.card.get("metrics", {}).get("test", {}),
                    "dataset": checkpoint.card.get("dataset", {}).get("name"),
                    "device": str(self.device),
                    "dtype": str(self.dtype).removeprefix("torch."),
                    "status": "ready",
                }
            )
        for name, reason in self.failures.items():
            out.append({"name": name, "status": "unavailable", "error": reason})
        return out


def _serves(loaded: LoadedModel, task: str) -> bool:
    """Any word-level LM can suggest next words; any LM can generate."""
    if task == "sentiment":
        return loaded.task == "sentiment"
    if task == "next-word":
        return loaded.task == "next-word"
    return loaded.task in ("generate", "next-word")
