"""The engines: worker processes that compute the models, and the HTTP process's client of them.

- `operations`: the table of operations (typed requests and results) that routes call.
- `client`: `EngineClient`, the one way into the engines (routing, admission, restarts).
- `worker`: an engine's loop (micro-batching, continuous batching of generations).
- `protocol`: the messages between the two and their framing.
"""

from service.engine.client import EngineClient, EngineSettings, GenerationStream
from service.engine.operations import GENERATE, NEXT_WORD, SENTIMENT, BatchOperation
from service.engine.protocol import GenerationJob
from service.engine.worker import EngineSpec

__all__ = [
    "GENERATE",
    "NEXT_WORD",
    "SENTIMENT",
    "BatchOperation",
    "EngineClient",
    "EngineSettings",
    "EngineSpec",
    "GenerationJob",
    "GenerationStream",
]
