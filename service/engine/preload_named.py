"""Imported by the engines' fork server as it starts: loads the checkpoints it was started with
(service.engine.preload)."""

from service.engine import preload

preload.load_named()
