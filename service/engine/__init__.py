"""The engines: worker processes that compute the models, and the HTTP process's client of them.

- `operations`: the table of operations (typed requests and results) that routes call.
- `client`: `EngineClient`, the one way into the engines (routing, admission, restarts).
- `worker`: an engine's loop (micro-batching, continuous batching of generations) and how it
  computes each operation.
- `preload`: checkpoints loaded once in the server the engines are forked from.
- `protocol`: the messages between the two and their framing.

Only `worker` and `preload` import torch, and only engines import them: the HTTP process works
without torch (an engine on a thread of it, `LSTM_SERVE_ENGINES=0`, imports them when started).
"""

from service.engine.client import EngineClient, EngineSettings, GenerationStream
from service.engine.operations import GENERATE, NEXT_WORD, SENTIMENT, BatchOperation
from service.engine.protocol import EngineSpec, GenerationJob, ModelFiles

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
    "ModelFiles",
]
