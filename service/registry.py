"""The model registry: reads every configured checkpoint (the engines warm them up and compute
on them), and knows which model answers each task by default."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from models import devices
from models.architectures import count_parameters
from models.checkpoint import STORAGE_DTYPES, Checkpoint, load_checkpoint
from models.format import CheckpointError
from service.allocator import release_free_memory
from service.errors import ModelNotFound, ModelUnavailable, NotReady
from service.settings import Settings

logger = logging.getLogger("lstm_serve.registry")


class StartupError(Exception):
    """The service cannot start as configured (bad device or dtype, a required model failed)."""


def resolve_device(name: str) -> torch.device:
    """The configured device, or StartupError naming it and what this machine has."""
    try:
        return devices.resolve_device(name)
    except devices.DeviceError as error:
        raise StartupError(str(error)) from None


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
    return STORAGE_DTYPES[dtype]


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
    """A checkpoint as the HTTP process holds it: its tokenizer, config and card for requests
    and answers; the weights, in shared memory, are computed on by the engines."""

    checkpoint: Checkpoint

    @property
    def version(self) -> str:
        return self.checkpoint.version

    @property
    def task(self) -> str:
        return self.checkpoint.config.task


@dataclass
class Registry:
    settings: Settings
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    models: dict[str, LoadedModel] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    ready: bool = False
    startup_error: str | None = None
    load_seconds: float = 0.0

    def load_all(self, share: bool) -> dict[str, Checkpoint]:
        """Read every configured checkpoint into this process (on the CPU, in float32; the
        engines move them to their device). With `share`, the weights go to shared memory, so
        engine processes map them instead of holding a copy each. Raises StartupError for a bad
        device or dtype."""
        self.device = resolve_device(self.settings.device)
        self.dtype = check_dtype(self.device, self.settings.dtype)
        checkpoints = {}
        for name, path in self.settings.checkpoint_paths().items():
            try:
                checkpoint = load_checkpoint(path, name=name)
            except Exception as error:
                self._failed(name, path, error)
                continue
            if share:
                checkpoint.model.share_memory()
            self.models[name] = LoadedModel(checkpoint)
            checkpoints[name] = checkpoint
            logger.info(
                "loaded %s (%s, %d parameters)",
                name,
                checkpoint.config.task,
                count_parameters(checkpoint.model),
            )
        if share:
            # the weights moved to shared memory: their first copies, and the stored half
            # precision read on the way, are free now; give them back to the system
            release_free_memory()
        return checkpoints

    def _failed(self, name: str, path: Path, error: Exception) -> None:
        self.failures[name] = public_reason(error, path)
        logger.error(
            "model %s failed to load from %s: %s",
            name,
            path,
            error if isinstance(error, CheckpointError) else repr(error),
            exc_info=not isinstance(error, CheckpointError),
        )

    def finish(self, warm_up_failures: dict[str, str], seconds: float) -> None:
        """After the engines warmed the models up: only a model that ran is given work. Raises
        StartupError unless allow_partial."""
        for name, reason in warm_up_failures.items():
            self.models.pop(name, None)
            # the file and the problem, never a directory of this machine
            self.failures[name] = _ABSOLUTE_PATH.sub(lambda m: m.group().rsplit("/", 1)[1], reason)
            logger.error("model %s failed its warm-up: %s", name, reason)
        if self.failures and not self.settings.allow_partial:
            detail = "; ".join(f"{n}: {r}" for n, r in self.failures.items())
            raise StartupError(f"checkpoints failed to load ({detail})")
        if not self.models:
            raise StartupError("no model loaded")
        self.load_seconds = seconds
        self.ready = True

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
            if self.failures:  # the model for this task may be one that failed
                failed = ", ".join(sorted(self.failures))
                raise ModelUnavailable(f"no loaded model serves {task}; failed to load: {failed}")
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
