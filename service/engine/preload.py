"""Checkpoints loaded once, before any engine exists, in the server that engines are forked from
(service.engine_launch). Every engine forked afterwards, restarts included, finds them in memory:
it neither reads the files again nor holds a copy of its own, as the pages of the weights stay
shared (copy-on-write) between the server and all the engines.

The server loads the checkpoints it was started with. An engine that finds no loaded checkpoint
with the weights it was told to serve reads the files itself: the files changed since, or the
server was already running for another app of the same process when this one started.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from models.checkpoint import Checkpoint, load_checkpoint
from service.allocator import release_free_memory
from service.engine_launch import CHECKPOINTS_VARIABLE

logger = logging.getLogger("lstm_serve.engine")

LOADED: dict[Path, Checkpoint] = {}


def take(path: str, version: str) -> Checkpoint | None:
    """The checkpoint loaded from `path`, if its weights are that version."""
    checkpoint = LOADED.get(Path(path).resolve())
    return checkpoint if checkpoint is not None and checkpoint.version == version else None


def load_named() -> None:
    """Load the checkpoints the starting process named ({name: path} as JSON in the variable
    CHECKPOINTS_VARIABLE, service.engine_launch), on the CPU in float32.
    Nothing here may fail the server: a checkpoint that does not load is left to the engines,
    which report why."""
    try:
        paths: dict[str, str] = json.loads(os.environ.get(CHECKPOINTS_VARIABLE) or "{}")
    except ValueError:
        return
    # one thread: no OpenMP pool may exist in a process that forks (the engines set their own)
    torch.set_num_threads(1)
    for name, path in paths.items():
        try:
            LOADED[Path(path).resolve()] = load_checkpoint(path, name=name)
        except Exception:
            logger.debug("checkpoint %s not preloaded", name, exc_info=True)
    release_free_memory()  # the stored half precision, read on the way
