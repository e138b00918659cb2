"""The model registry: reads what every configured checkpoint is (config, tokenizer, card; the
engines load the weights, warm them up and compute on them), and knows which model answers each
task by default."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.config import CacheConfig, LanguageModelConfig
from models.format import CheckpointError, CheckpointInfo, read_info
from service.errors import ModelNotFound, ModelUnavailable, NotReady
from service.settings import Settings

logger = logging.getLogger("lstm_serve.registry")


class StartupError(Exception):
    """The service cannot start as configured (bad device or dtype, a required model failed)."""


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
    and answers; the engines hold the weights and compute on them."""

    checkpoint: CheckpointInfo

    @property
    def version(self) -> str:
        return self.checkpoint.version

    @property
    def task(self) -> str:
        return self.checkpoint.config.task


@dataclass
class Registry:
    settings: Settings
    device: str = "cpu"  # as the engines resolved the configured device
    models: dict[str, LoadedModel] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    ready: bool = False
    startup_error: str | None = None
    load_seconds: float = 0.0

    def load_all(self) -> dict[str, CheckpointInfo]:
        """Read and verify every configured checkpoint but its weights' values (the engines load
        those): the manifest, config, tokenizer and card."""
        infos = {}
        for name, path in self.settings.checkpoint_paths().items():
            try:
                info = read_info(path, name=name)
            except Exception as error:
                self._failed(name, path, error)
                continue
            self.models[name] = LoadedModel(info)
            infos[name] = info
            logger.info("read %s (%s, %s parameters)", name, info.config.task, info.parameters)
        return infos

    def _failed(self, name: str, path: Path, error: Exception) -> None:
        self.failures[name] = public_reason(error, path)
        logger.error(
            "model %s failed to load from %s: %s",
            name,
            path,
            error if isinstance(error, CheckpointError) else repr(error),
            exc_info=not isinstance(error, CheckpointError),
        )

    def finish(self, engine_failures: dict[str, str], seconds: float) -> None:
        """After the engines loaded the weights and warmed the models up: only a model that ran
        is given work. Raises StartupError unless allow_partial."""
        for name, reason in engine_failures.items():
            loaded = self.models.pop(name, None)
            # the file and the problem, never a directory of this machine
            self.failures[name] = _ABSOLUTE_PATH.sub(lambda m: m.group().rsplit("/", 1)[1], reason)
            path = loaded.checkpoint.path if loaded is not None else "?"
            logger.error("model %s failed to load from %s: %s", name, path, reason)
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

    def _continuous_cache(self, cache: CacheConfig | None) -> dict[str, Any] | None:
        """The continuous cache generation uses: the checkpoint's, unless the setting is off."""
        return cache.to_dict() if cache is not None and self.settings.continuous_cache else None

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
                    "parameters": checkpoint.parameters,
                    "vocab_size": model_config.vocab_size,
                    "max_length": checkpoint.config.max_length,
                    "labels": list(checkpoint.config.labels),
                    "metrics": checkpoint.card.get("metrics", {}).get("test", {}),
                    "dataset": checkpoint.card.get("dataset", {}).get("name"),
                    "device": self.device,
                    "dtype": self.settings.dtype,
                    "continuous_cache": self._continuous_cache(checkpoint.config.cache),
                    "reads_speakers": (
                        model_config.speaker_dim > 0
                        if isinstance(model_config, LanguageModelConfig)
                        else None
                    ),
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
