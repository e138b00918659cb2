"""An engine: one process (or, with `LSTM_SERVE_ENGINES=0`, one thread of the HTTP process) that
owns a copy of every model's compute, fed over a socket by the HTTP process.

Its loop: read every message that has arrived, compute one batch of the operation whose oldest
request waited longest (up to `max_batch_size`, every request queued behind it for the same
model and operation), advance every active generation by one token, send all answers of the turn
in one frame. A request waits only while the engine is busy, never when it is idle: requests that
arrive during a batch form the next one. Torch runs on this thread alone, with `torch_threads`
intra-op threads.
"""

from __future__ import annotations

import logging
import math
import os
import select
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from models import devices
from models.architectures import LanguageModel
from models.checkpoint import STORAGE_DTYPES, Checkpoint, load_checkpoint
from models.config import CacheConfig, SamplingParams
from models.format import WEIGHTS, CheckpointError
from service import inference
from service.allocator import release_free_memory
from service.engine import preload, protocol
from service.engine.operations import (
    BATCH_OPERATIONS,
    NEXT_WORD,
    SENTIMENT,
    Event,
    FinishEvent,
    NextWordResult,
    NextWordText,
    SentimentQuery,
    SentimentResult,
)
from service.engine.protocol import EngineSpec
from service.errors import ServiceError
from service.generation import GenerationRequest, GenerationScheduler
from service.prefix_cache import PrefixCache

logger = logging.getLogger("lstm_serve.engine")


@dataclass
class Served:
    """A model as an engine holds it: its own prefix cache and generation scheduler."""

    checkpoint: Checkpoint
    cache: PrefixCache | None = None
    scheduler: GenerationScheduler | None = None
    continuous: CacheConfig | None = None  # the checkpoint's continuous cache, if served


def _classify(served: Served, queries: Sequence[SentimentQuery]) -> list[SentimentResult]:
    return inference.classify_texts(served.checkpoint, queries)


def _next_words(served: Served, texts: Sequence[NextWordText]) -> list[NextWordResult]:
    return inference.next_words_of_texts(served.checkpoint, texts, served.cache, served.continuous)


# how an engine computes a batch of each operation of the table (service.engine.operations)
COMPUTE: dict[str, Callable[[Served, Sequence[Any]], list[Any]]] = {
    SENTIMENT.name: _classify,
    NEXT_WORD.name: _next_words,
}
assert COMPUTE.keys() == BATCH_OPERATIONS.keys(), "every batched operation is computed here"


def probe_device(device: str, dtype: str) -> protocol.DeviceReport:
    """Resolve the configured device and check the dtype, where torch is imported (an engine's
    process; the HTTP process asks one before it starts the engines)."""
    try:
        resolved = devices.resolve_device(device)
    except devices.DeviceError as error:
        return protocol.DeviceReport(device, 0, str(error))
    count = torch.cuda.device_count() if resolved.type == "cuda" else 0
    report = protocol.DeviceReport(str(resolved), count)
    if dtype == "float32":
        return report
    if resolved.type != "cuda":
        return replace(
            report, error=f"dtype {dtype} needs a CUDA device; on {resolved} use float32"
        )
    if dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        name = torch.cuda.get_device_name(resolved)
        return replace(report, error=f"dtype bfloat16 is not supported by {name}")
    return report


def checkpoint_for(name: str, files: protocol.ModelFiles) -> tuple[Checkpoint, bool]:
    """The checkpoint, and whether it is shared: from the server this engine was forked from when
    it loaded these exact weights (shared with every engine, copy-on-write), else read from its
    files."""
    loaded = preload.take(files.path, files.version)
    if loaded is not None:
        return replace(loaded, name=name), True
    checkpoint = load_checkpoint(files.path, name=name)
    if checkpoint.version != files.version:  # replaced on disk since the HTTP process read it
        raise CheckpointError(
            f"{WEIGHTS}: changed while the service started (version {checkpoint.version}, "
            f"expected {files.version})"
        )
    return checkpoint, False


def failure_reason(error: Exception) -> str:
    """Why a model failed in an engine, as the HTTP process reports it."""
    return str(error) if isinstance(error, CheckpointError) else repr(error)[:500]


@dataclass
class _Queued:
    id: int
    item: object
    enqueued: float
    deadline: float


def engine_main(sock: socket.socket, spec: EngineSpec, own_process: bool = True) -> None:
    """Entry point of an engine process (or thread)."""
    if own_process:
        # The HTTP process decides when engines stop (after draining); a Ctrl-C sent to the whole
        # process group must not kill them first. They exit when the HTTP process closes the
        # socket, however it ended.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        # below the HTTP process, whose short waited-on work must not queue behind a batch
        os.nice(spec.nice)
    run_worker(Worker(sock, spec))


def run_worker(worker: Worker) -> None:
    torch.set_num_threads(worker.spec.threads)
    try:
        worker.run()
    finally:
        worker.sock.close()


class Worker:
    def __init__(self, sock: socket.socket, spec: EngineSpec) -> None:
        self.sock, self.spec = sock, spec
        self.served: dict[str, Served] = {}
        self.queues: dict[tuple[str, str], deque[_Queued]] = {}
        self.generations: dict[int, GenerationRequest] = {}
        self.outbox: list[object] = []
        self.reader = protocol.FrameReader()
        self.held = self.stopping = False
        self._cache_seen: dict[str, tuple[int, int, int]] = {}

    # ---- start ----

    def _load(self) -> protocol.Ready:
        """Load and warm up every model: the Ready message, with what failed and what is shared."""
        failures: dict[str, str] = {}
        shared: list[str] = []
        device, dtype = torch.device(self.spec.device), STORAGE_DTYPES[self.spec.dtype]
        for name, files in self.spec.models.items():
            try:
                checkpoint, preloaded = checkpoint_for(name, files)
                if device.type != "cpu" or dtype != torch.float32:
                    checkpoint.model.to(device=device, dtype=dtype)
                served = Served(checkpoint)
                if isinstance(checkpoint.model, LanguageModel):
                    bytes_ = self.spec.cache_bytes
                    served.cache = PrefixCache(bytes_) if bytes_ else None
                    if self.spec.continuous_cache:
                        served.continuous = checkpoint.config.cache
                    served.scheduler = GenerationScheduler(
                        checkpoint.model,
                        checkpoint.tokenizer,
                        self.spec.max_active_generations,
                        served.cache,
                        served.continuous,
                    )
                warm_up(served)
            except Exception as error:  # reported to the HTTP process, which decides
                # a checkpoint that cannot be read is said in one line; a model that cannot run
                # is a bug, with its traceback
                failures[name] = failure_reason(error)
                logger.error(
                    "engine %d: model %s failed to load: %s",
                    self.spec.index,
                    name,
                    failures[name],
                    exc_info=not isinstance(error, CheckpointError),
                )
                continue
            self.served[name] = served
            if preloaded:
                shared.append(name)
            for operation in BATCH_OPERATIONS:
                self.queues[(name, operation)] = deque()
        release_free_memory()  # what the warm-ups allocated and freed
        return protocol.Ready(os.getpid(), failures, tuple(shared))

    # ---- the loop ----

    def run(self) -> None:
        self.outbox.append(self._load())
        self._flush()
        while not self.stopping:
            if not self._receive(self._wait_time()):
                return  # the HTTP process is gone
            if self.held or self._filling():
                continue
            key, batch = self._take_batch()
            if batch:
                self._run_batch(key, batch)
                self._flush()  # its answers go out now, not after the generations' step
            for name, served in self.served.items():
                if served.scheduler is not None:
                    self._step(name, served.scheduler)
            self._flush()
        self._fail_queued("the service is shutting down")
        self._flush()

    def _busy(self) -> bool:
        if self.held:
            return False
        return any(self.queues.values()) or self._generating()

    def _wait_time(self) -> float | None:
        """How long to wait for messages: not at all with work to do, else until one arrives;
        with max_wait_s, a short idle queue may wait for more requests to join its batch."""
        if not self._busy():
            return None
        if self.spec.max_wait_s <= 0 or self._generating():
            return 0.0
        waiting = [q for q in self.queues.values() if q]
        if max(len(q) for q in waiting) >= self.spec.max_batch_size:
            return 0.0
        oldest = min(q[0].enqueued for q in waiting)
        return max(0.0, oldest + self.spec.max_wait_s - time.monotonic())

    def _filling(self) -> bool:
        """A short queue still inside its max_wait_s (the loop waits for more to join it)."""
        return self.spec.max_wait_s > 0 and self._busy() and (self._wait_time() or 0.0) > 0

    def _generating(self) -> bool:
        return any(s.scheduler.active() for s in self.served.values() if s.scheduler is not None)

    def _receive(self, timeout: float | None) -> bool:
        """Read what has arrived (waiting up to `timeout`); False at end of stream."""
        readable, _, _ = select.select([self.sock], [], [], timeout)
        while readable:
            data = self.sock.recv(1 << 20)
            if not data:
                return False
            for message in self.reader.feed(data):
                self._handle(message)
            readable, _, _ = select.select([self.sock], [], [], 0)
        return True

    def _handle(self, message: object) -> None:
        if isinstance(message, protocol.Submit):
            queue = self.queues.get((message.model, message.operation))
            if queue is None:
                self._fail(message.id, "InferenceFailed", f"{message.model} is not served here")
                return
            queue.append(_Queued(message.id, message.item, time.monotonic(), message.deadline))
        elif isinstance(message, protocol.Generate):
            self._start_generation(message)
        elif isinstance(message, protocol.Cancel):
            self._cancel(message.id)
        elif isinstance(message, protocol.Control):
            self.held = message.command == "hold"
            self.stopping = message.command == "stop"

    def _flush(self) -> None:
        if self.outbox:
            self.sock.sendall(protocol.frame(self.outbox))
            self.outbox = []

    # ---- batched operations ----

    def _take_batch(self) -> tuple[tuple[str, str], list[_Queued]]:
        """The queue whose oldest request waited longest, with up to a batch of it."""
        heads = [(q[0].enqueued, key) for key, q in self.queues.items() if q]
        if not heads:
            return ("", ""), []
        _, key = min(heads)
        waiting = self.queues[key]
        size = min(self.spec.max_batch_size, len(waiting))
        return key, [waiting.popleft() for _ in range(size)]

    def _run_batch(self, key: tuple[str, str], batch: list[_Queued]) -> None:
        model, operation = key
        now = time.monotonic()
        live = []
        for request in batch:
            if now > request.deadline:
                self._fail(request.id, "DeadlineExceeded", "the deadline passed in the queue")
            else:
                live.append(request)
        if not live:
            return
        compute = COMPUTE[operation]
        served = self.served[model]
        started = time.monotonic()
        try:
            results = compute(served, [r.item for r in live])
        except ServiceError as error:
            for request in live:
                self._fail(request.id, type(error).__name__, error.message)
            return
        except Exception:
            logger.exception("batch of %d on %s:%s failed", len(live), model, operation)
            self._retry_alone(served, operation, live)
            return
        elapsed = time.monotonic() - started
        queue_s = sum(started - r.enqueued for r in live) / len(live)
        self.outbox.append(protocol.BatchReport(model, operation, len(live), queue_s, elapsed))
        if operation == NEXT_WORD.name:  # ahead of the answers: whoever reads one sees its figures
            self._report_cache(model, served)
        self.outbox.extend(
            protocol.Done(r.id, result) for r, result in zip(live, results, strict=True)
        )

    def _retry_alone(self, served: Served, operation: str, failed: list[_Queued]) -> None:
        """After a failed batch, compute each request alone: only the one that breaks fails."""
        compute = COMPUTE[operation]
        for request in failed:
            try:
                (result,) = compute(served, [request.item])
            except ServiceError as error:
                self._fail(request.id, type(error).__name__, error.message)
            except Exception:
                logger.exception("request on %s failed alone too", operation)
                self._fail(request.id, "InferenceFailed", "the model failed on this request")
            else:
                self.outbox.append(protocol.Done(request.id, result))

    def _fail(self, id_: int, error: str, message: str) -> None:
        self.outbox.append(protocol.Done(id_, error=(error, message)))

    def _cancel(self, id_: int) -> None:
        generation = self.generations.get(id_)
        if generation is not None:
            generation.cancelled.set()
            return
        for queue in self.queues.values():
            for request in queue:
                if request.id == id_:
                    queue.remove(request)
                    return

    def _fail_queued(self, message: str) -> None:
        for queue in self.queues.values():
            while queue:
                self._fail(queue.popleft().id, "Overloaded", message)
        for request in self.generations.values():
            request.cancelled.set()
        for served in self.served.values():
            if served.scheduler is not None:
                while served.scheduler.active():
                    served.scheduler.admit()
                    served.scheduler.step()

    # ---- generation ----

    def _start_generation(self, message: protocol.Generate) -> None:
        served = self.served.get(message.model)
        if served is None or served.scheduler is None:
            error = FinishEvent("", 0, "error", f"{message.model} is not served here")
            self.outbox.append(protocol.Emitted(message.id, error))
            return
        request = generation_request(message.job, self._emitter(message.id))
        self.generations[message.id] = request
        served.scheduler.submit(request)

    def _emitter(self, id_: int) -> Callable[[Event], None]:
        def emit(event: Event) -> None:
            self.outbox.append(protocol.Emitted(id_, event))
            if isinstance(event, FinishEvent):
                self.generations.pop(id_, None)

        return emit

    def _step(self, name: str, scheduler: GenerationScheduler) -> None:
        try:
            admitted = scheduler.waiting()
            scheduler.admit()
            if admitted:  # the prompts' cache lookups, reported ahead of their first tokens
                self._report_cache(name, self.served[name])
            if scheduler.active():
                # the tokens go out now, not after the next cell step; a new stream's first one
                # even before the running streams are sampled
                scheduler.sample(joined_sent=self._flush)
                self._flush()
                scheduler.forward()
        except Exception:  # the scheduler fails its own sequences; the engine keeps running
            logger.exception("generation step failed")

    def _report_cache(self, name: str, served: Served) -> None:
        cache = served.cache
        if cache is None:
            return
        figures = (cache.hits, cache.misses, cache.bytes)
        if self._cache_seen.get(name) != figures:
            self._cache_seen[name] = figures
            self.outbox.append(protocol.CacheReport(name, *figures))


def generation_request(
    job: protocol.GenerationJob, emit: Callable[[Event], None]
) -> GenerationRequest:
    return GenerationRequest(
        job.prompt_ids,
        job.max_new_tokens,
        job.params,
        job.seed,
        job.stop,
        emit=emit,
        deadline=job.deadline,
        logprobs=job.logprobs,
    )


def warm_up(served: Served) -> None:
    """One pass of each operation, so the first request does not pay for lazy initialisation,
    and a model that loads but cannot run is found before it is given work."""
    checkpoint = served.checkpoint
    if checkpoint.config.task == "sentiment":
        _classify(served, [SentimentQuery("warm up", explain=True)])
        return
    if served.scheduler is None:
        return
    if checkpoint.config.task == "next-word":  # a char model is never asked for next words
        query = inference.build_query(checkpoint, "warm up", 3, 16)
        model = checkpoint.model
        inference.next_word_distributions(model, [query], None, served.continuous)  # type: ignore[arg-type]
    finished: list[FinishEvent] = []
    job = protocol.GenerationJob(
        [checkpoint.tokenizer.unk_id], 2, SamplingParams(), 0, (), math.inf
    )
    served.scheduler.submit(
        generation_request(
            job, lambda event: finished.append(event) if isinstance(event, FinishEvent) else None
        )
    )
    while served.scheduler.active():
        served.scheduler.admit()
        served.scheduler.step()
    ends = [f"{e.finish_reason} ({e.error})" if e.error else e.finish_reason for e in finished]
    if ends != ["length"]:  # a step failed: the scheduler ended the sequence, not raised
        raise RuntimeError(f"warm-up generation ended with {', '.join(ends) or 'nothing'}")
