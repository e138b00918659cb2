"""The messages between the HTTP process and an engine, and their framing on a stream socket.

Each frame is a 4-byte big-endian length and a pickle of a list of messages: an engine sends
everything one loop turn produced (the results of a batch, one token for each of 32 streams) in
one write. Both ends are this package's own code on one machine; nothing from a client is ever
unpickled (requests arrive as validated, tokenised dataclasses).
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from typing import Literal

from models.config import SamplingParams
from service.engine.operations import Event

HEADER = struct.Struct(">I")


def frame(messages: list[object]) -> bytes:
    body = pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


class FrameReader:
    """Cuts a byte stream into frames (a socket read may end anywhere)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[object]:
        self._buffer += data
        messages: list[object] = []
        while len(self._buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buffer)
            if len(self._buffer) < HEADER.size + size:
                break
            body = bytes(self._buffer[HEADER.size : HEADER.size + size])
            del self._buffer[: HEADER.size + size]
            messages.extend(pickle.loads(body))
        return messages


# ---- what an engine starts with ----


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """A checkpoint an engine serves: its directory, and the version of its weights the HTTP
    process verified (an engine never computes on other weights than the ones it describes)."""

    path: str
    version: str


@dataclass(frozen=True)
class EngineSpec:
    """Everything an engine needs to start, pickled into its process: where the checkpoints are
    (the engine loads them, or finds them already loaded by the server it forked from), the
    resolved device, and the batching limits."""

    index: int
    models: dict[str, ModelFiles]
    device: str  # resolved: cpu, cuda or cuda:N (DeviceReport.device)
    dtype: str  # float32, float16 or bfloat16
    threads: int
    max_batch_size: int
    max_wait_s: float
    max_active_generations: int
    cache_bytes: int
    nice: int = 0  # added to an engine process's nice value: a lower priority than the HTTP one
    continuous_cache: bool = True  # generate with a checkpoint's continuous cache, if it has one


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """What a process that imported torch found: the device `device` resolves to, the CUDA devices
    there are, and why the device or dtype cannot be used (None: they can)."""

    device: str
    cuda_devices: int
    error: str | None = None


# ---- HTTP process -> engine ----


@dataclass(frozen=True, slots=True)
class Submit:
    """One item of a batched operation (sentiment, next-word)."""

    id: int
    operation: str
    model: str
    item: object  # the operation's typed request (service.engine.operations)
    deadline: float  # time.monotonic(): the same clock in every process of the machine


@dataclass(frozen=True, slots=True)
class GenerationJob:
    """What a generation needs, without the callbacks of the engine side."""

    prompt_ids: list[int]
    max_new_tokens: int
    params: SamplingParams
    seed: int
    stop: tuple[str, ...]
    deadline: float  # time.monotonic(); reaching it ends the text with "time_limit"
    logprobs: int | None = None  # each token's log-probability and this many alternatives


@dataclass(frozen=True, slots=True)
class Generate:
    id: int
    model: str
    job: GenerationJob


@dataclass(frozen=True, slots=True)
class Cancel:
    """The client went away or its deadline passed: drop it from the queue, or end its stream."""

    id: int


@dataclass(frozen=True, slots=True)
class Control:
    """hold: compute nothing until release (queues still fill); stop: exit."""

    command: Literal["hold", "release", "stop"]


# ---- engine -> HTTP process ----


@dataclass(frozen=True, slots=True)
class Ready:
    pid: int
    failures: dict[str, str]  # model -> why its warm-up failed
    shared: tuple[str, ...] = ()  # models found loaded in the fork server (service.engine.preload)


@dataclass(frozen=True, slots=True)
class Done:
    """A batched item's answer: `result`, or an error as (class name, message)."""

    id: int
    result: object = None
    error: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Emitted:
    id: int
    event: Event


@dataclass(frozen=True, slots=True)
class BatchReport:
    model: str
    operation: str
    size: int
    queue_s: float
    compute_s: float


@dataclass(frozen=True, slots=True)
class CacheReport:
    model: str
    hits: int
    misses: int
    bytes: int
