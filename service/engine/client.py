"""The HTTP process's side of the engines: starts them, routes each request to one, admits or
refuses work (the one overload check), notices a dead engine at once and restarts it.

Routing: a batched request goes to the engine with the least outstanding work; a next-word
request prefers the engine chosen by its text's first tokens (its prefix state is cached there)
unless that engine is a full batch busier than the least loaded one. A generation goes to the
engine with the fewest running. An engine that dies (killed, out of memory) is seen as the end of
its socket: what it had not answered is sent to another engine when nothing of it has reached
the client yet, and otherwise ends with an error; the engine is restarted and readiness says
`degraded` until it is back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import socket
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar, cast

from service.engine import protocol
from service.engine.operations import GENERATE, BatchOperation, Event, FinishEvent, TokenEvent
from service.engine.protocol import EngineSpec
from service.engine_launch import engine_context, probe_device, run_engine
from service.errors import (
    DeadlineExceeded,
    EngineFailed,
    InferenceFailed,
    Overloaded,
    ServiceError,
)

logger = logging.getLogger("lstm_serve.engine")

Req = TypeVar("Req")
Res = TypeVar("Res")

ERRORS: dict[str, Callable[[str], ServiceError]] = {
    "DeadlineExceeded": DeadlineExceeded,
    "InferenceFailed": InferenceFailed,
    "Overloaded": lambda message: Overloaded(message, 1),
}
START_TIMEOUT_S = 120.0


class Observer(Protocol):
    def batch(self, key: str, size: int, queue_s: float, compute_s: float) -> None: ...


@dataclass
class _Pending:
    id: int
    operation: str
    model: str
    item: object
    deadline: float
    future: asyncio.Future[object]
    engine: int = -1
    retried: bool = False


def _device(device: str, index: int, count: int) -> str:
    """On CUDA without an index, engine i computes on GPU i (one engine per GPU)."""
    return f"cuda:{index}" if device == "cuda" and count > 1 else device


class GenerationStream:
    """One generation's events as they arrive; `cancel` ends it at the engine's next step."""

    def __init__(
        self, client: EngineClient, id_: int, model: str, job: protocol.GenerationJob
    ) -> None:
        self.client, self.id, self.model, self.job = client, id_, model, job
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.engine = -1
        self.tokens_sent = 0  # events the client may have seen: after one, no retry elsewhere
        self.finished = False

    def cancel(self) -> None:
        self.client._cancel_stream(self)


@dataclass
class _Engine:
    index: int
    spec: EngineSpec
    writer: asyncio.StreamWriter | None = None
    process: Any = None  # an engine process (forked from the fork server), or an in-process thread
    local: Any = None  # the in-process engine itself, a Worker (LSTM_SERVE_ENGINES=0)
    reader: asyncio.Task[None] | None = None
    ready: asyncio.Future[protocol.Ready] | None = None
    alive: bool = False
    pid: int = 0
    restarts: int = 0
    answered: int = 0  # batched requests and generations it finished
    outstanding: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    streams: int = 0
    cache: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    outbox: list[object] = field(default_factory=list)  # messages for the next write

    @property
    def load(self) -> int:
        return sum(self.outstanding.values()) + self.streams


@dataclass
class EngineSettings:
    max_batch_size: int
    max_queue: int
    max_active_generations: int


class EngineClient:
    def __init__(self, settings: EngineSettings, observer: Observer | None = None) -> None:
        self.settings, self.observer = settings, observer
        self.engines: list[_Engine] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._streams: dict[int, GenerationStream] = {}
        self._seconds_per_item: dict[str, float] = defaultdict(lambda: 0.001)
        self._stopping = False
        self._in_process = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._restarting: set[asyncio.Task[None]] = set()

    # ---- start and stop ----

    async def start(self, base: EngineSpec, engines: int) -> dict[str, str]:
        """Start `engines` engine processes (0: one engine on a thread of this process) and wait
        until each has warmed up its models; returns the models that failed their warm-up
        (model -> reason)."""
        self._loop = asyncio.get_running_loop()
        self._in_process = engines == 0
        count = max(1, engines)
        self.engines = [
            _Engine(i, replace(base, index=i, device=_device(base.device, i, count)))
            for i in range(count)
        ]
        readies = await asyncio.gather(*(self._launch(engine) for engine in self.engines))
        failures: dict[str, str] = {}
        for ready in readies:
            failures.update(ready.failures)
        return failures

    async def probe(self, device: str, dtype: str, in_process: bool) -> protocol.DeviceReport:
        """What the configured device resolves to, and whether the dtype runs there, asked where
        torch is imported: a short-lived process of the engines' context, or this process when
        its engine will run on a thread of it."""
        if in_process:
            from service.engine.worker import probe_device as probe_here

            return probe_here(device, dtype)
        report: protocol.DeviceReport = await asyncio.to_thread(probe_device, device, dtype)
        return report

    async def _launch(self, engine: _Engine) -> protocol.Ready:
        ours, theirs = socket.socketpair()
        if self._in_process:
            from service.engine.worker import Worker, run_worker  # torch, in this process

            engine.local = Worker(theirs, engine.spec)
            engine.process = threading.Thread(
                target=run_worker, args=(engine.local,), name="engine", daemon=True
            )
            engine.process.start()
        else:
            context: Any = engine_context()
            engine.process = context.Process(
                target=run_engine,
                args=(theirs, engine.spec),
                name=f"lstm-serve-engine-{engine.index}",
                daemon=True,
            )
            await asyncio.to_thread(engine.process.start)
            theirs.close()  # the child holds its end: its death is our end of stream
        reader, engine.writer = await asyncio.open_unix_connection(sock=ours)
        engine.ready = asyncio.get_running_loop().create_future()
        engine.reader = asyncio.create_task(self._read(engine, reader))
        try:
            ready = await asyncio.wait_for(asyncio.shield(engine.ready), START_TIMEOUT_S)
        except TimeoutError:
            message = f"engine {engine.index} did not start in {START_TIMEOUT_S:g} s"
            raise RuntimeError(message) from None
        engine.pid, engine.alive = ready.pid, True
        if ready.shared:
            logger.info(
                "engine %d (pid %d): %s shared from the fork server",
                engine.index,
                ready.pid,
                ", ".join(ready.shared),
            )
        return ready

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop every engine (after the server has drained its requests)."""
        self._stopping = True
        for task in self._restarting:
            task.cancel()
        for engine in self.engines:
            self._send(engine, protocol.Control("stop"))
        for engine in self.engines:
            if engine.process is not None:
                await asyncio.to_thread(engine.process.join, timeout)
                if getattr(engine.process, "is_alive", lambda: False)() and hasattr(
                    engine.process, "kill"
                ):
                    engine.process.kill()
            if engine.writer is not None:
                engine.writer.close()
        self._fail_all(Overloaded("the service is shutting down", 1))

    # ---- batched operations ----

    async def run(
        self, operation: BatchOperation[Req, Res], model: str, item: Req, timeout: float
    ) -> Res:
        """Compute one request on an engine; raises Overloaded (every engine's queue for this
        operation is full), DeadlineExceeded, or the engine's error."""
        refusal = self.refusal(operation.name)
        if refusal is not None:
            raise refusal
        loop = asyncio.get_running_loop()
        pending = _Pending(
            next(self._ids),
            operation.name,
            model,
            item,
            time.monotonic() + timeout,
            loop.create_future(),
        )
        self._pending[pending.id] = pending
        self._dispatch(pending, self._pick(operation.affinity(item)))
        try:
            async with asyncio.timeout(timeout):
                return cast(Res, await asyncio.shield(pending.future))
        except TimeoutError:
            raise DeadlineExceeded(f"no result within the {timeout:g} s deadline") from None
        finally:
            if not pending.future.done():  # timed out, or the awaiting task was cancelled
                self._forget(pending)
                engine = self.engines[pending.engine]
                if engine.alive:
                    self._send(engine, protocol.Cancel(pending.id))

    def _dispatch(self, pending: _Pending, engine: _Engine) -> None:
        pending.engine = engine.index
        engine.outstanding[pending.operation] += 1
        self._send(
            engine,
            protocol.Submit(
                pending.id, pending.operation, pending.model, pending.item, pending.deadline
            ),
        )

    def _forget(self, pending: _Pending) -> None:
        if self._pending.pop(pending.id, None) is not None:
            self.engines[pending.engine].outstanding[pending.operation] -= 1

    def _pick(self, affinity: int | None) -> _Engine:
        alive = [e for e in self.engines if e.alive]
        if not alive:
            raise EngineFailed("no engine is running (one is restarting); retry shortly")
        least = min(alive, key=lambda e: e.load)
        if affinity is None:
            return least
        preferred = self.engines[affinity % len(self.engines)]
        if preferred.alive and preferred.load <= least.load + self.settings.max_batch_size:
            return preferred
        return least

    # ---- generation ----

    def generate(self, model: str, job: protocol.GenerationJob) -> GenerationStream:
        refusal = self.refusal(GENERATE)
        if refusal is not None:
            raise refusal
        stream = GenerationStream(self, next(self._ids), model, job)
        self._streams[stream.id] = stream
        self._start_stream(stream, self._pick(None))
        return stream

    def _start_stream(self, stream: GenerationStream, engine: _Engine) -> None:
        stream.engine = engine.index
        engine.streams += 1
        self._send(engine, protocol.Generate(stream.id, stream.model, stream.job))

    def _cancel_stream(self, stream: GenerationStream) -> None:
        if stream.finished:
            return
        engine = self.engines[stream.engine]
        if engine.alive:
            self._send(engine, protocol.Cancel(stream.id))

    def _end_stream(self, stream: GenerationStream, event: FinishEvent | None = None) -> None:
        stream.finished = True
        self._streams.pop(stream.id, None)
        self.engines[stream.engine].streams -= 1
        if event is not None:
            stream.events.put_nowait(event)

    # ---- admission: the one overload check ----

    def refusal(self, operation: str) -> ServiceError | None:
        """The error to answer at once when `operation` has no room on any engine (before any
        work is spent on the request), or None. Room per engine: `max_queue` requests sent and
        not yet answered; for generation, `max_queue` waiting beyond the running ones."""
        alive = [e for e in self.engines if e.alive]
        if not alive:
            if not self.engines:
                return None  # not started: the registry answers not_ready
            return EngineFailed("no engine is running (one is restarting); retry shortly")
        settings = self.settings
        if operation == GENERATE:
            room = settings.max_active_generations + settings.max_queue
            running = sum(e.streams for e in alive)
            if running < room * len(alive):
                return None
            return Overloaded(f"{running} generations are running or waiting; retry later", 1)
        waiting = sum(e.outstanding[operation] for e in alive)
        if waiting < settings.max_queue * len(alive):
            return None
        seconds = waiting * self._seconds_per_item[operation] / len(alive)
        engines = f"{len(alive)} engines" if len(alive) > 1 else "1 engine"
        message = (
            f"the {operation} queue is full ({waiting} requests waiting on {engines}); retry later"
        )
        return Overloaded(message, max(1, math.ceil(seconds)))

    def pending(self, operation: str, model: str | None = None) -> int:
        """Requests of `operation` sent to an engine and not yet answered."""
        return sum(
            1
            for p in self._pending.values()
            if p.operation == operation and (model is None or p.model == model)
        )

    # ---- holding the engines (drain checks, tests) ----

    def control(self, command: str) -> None:
        """hold | release every engine; callable from any thread."""
        assert command in ("hold", "release")
        message = protocol.Control(command)  # type: ignore[arg-type]
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._broadcast, message)

    def _broadcast(self, message: object) -> None:
        for engine in self.engines:
            if engine.alive:
                self._send(engine, message)

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        self.control("hold")
        try:
            yield
        finally:
            self.control("release")

    # ---- status ----

    def status(self) -> dict[str, Any]:
        return {
            "engines": len(self.engines),
            "alive": sum(1 for e in self.engines if e.alive),
            "restarts": sum(e.restarts for e in self.engines),
            "pids": [e.pid for e in self.engines],
            "answered": [e.answered for e in self.engines],
        }

    def local_worker(self) -> Any:
        """The engine running on a thread of this process (LSTM_SERVE_ENGINES=0), to inspect."""
        (engine,) = self.engines
        assert engine.local is not None, "engines run in their own processes"
        return engine.local

    def generating(self) -> int:
        """Generations running or waiting on the engines."""
        return len(self._streams)

    def cache_figures(self, model: str) -> tuple[int, int, int]:
        """(hits, misses, bytes) of a model's prefix caches, summed over the engines."""
        figures = [e.cache[model] for e in self.engines if model in e.cache]
        return (
            sum(f[0] for f in figures),
            sum(f[1] for f in figures),
            sum(f[2] for f in figures),
        )

    # ---- the wire ----

    def _send(self, engine: _Engine, message: object) -> None:
        """Queue a message; the messages queued during one turn of the event loop go out in one
        frame and one write (at 64 connections, many requests arrive per turn: one system call
        and one pickling for all of them, not one each). Called on the event loop's thread."""
        if engine.writer is None or engine.writer.is_closing():
            return
        engine.outbox.append(message)
        if len(engine.outbox) == 1:
            asyncio.get_running_loop().call_soon(self._flush, engine)

    def _flush(self, engine: _Engine) -> None:
        messages, engine.outbox = engine.outbox, []
        if messages and engine.writer is not None and not engine.writer.is_closing():
            engine.writer.write(protocol.frame(messages))

    async def _read(self, engine: _Engine, reader: asyncio.StreamReader) -> None:
        frames = protocol.FrameReader()
        try:
            while data := await reader.read(1 << 20):
                for message in frames.feed(data):
                    self._receive(engine, message)
        except (ConnectionError, OSError):
            pass
        except Exception:  # a bug here must not leave requests waiting forever
            logger.exception("engine %d: reading its answers failed", engine.index)
        self._engine_ended(engine)

    def _receive(self, engine: _Engine, message: object) -> None:
        if isinstance(message, protocol.Done):
            pending = self._pending.get(message.id)
            if pending is None or pending.engine != engine.index:
                return  # cancelled meanwhile, or already sent elsewhere
            self._forget(pending)
            engine.answered += 1
            if message.error is None:
                pending.future.set_result(message.result)
            else:
                kind, text = message.error
                pending.future.set_exception(ERRORS.get(kind, InferenceFailed)(text))
        elif isinstance(message, protocol.Emitted):
            stream = self._streams.get(message.id)
            if stream is None or stream.engine != engine.index:
                return
            if isinstance(message.event, FinishEvent):
                engine.answered += 1
                self._end_stream(stream)
            elif isinstance(message.event, TokenEvent):
                stream.tokens_sent += 1
            stream.events.put_nowait(message.event)
        elif isinstance(message, protocol.BatchReport):
            per_item = message.compute_s / max(1, message.size)
            old = self._seconds_per_item[message.operation]
            self._seconds_per_item[message.operation] = 0.9 * old + 0.1 * per_item
            if self.observer is not None:
                key = f"{message.model}:{message.operation}"
                self.observer.batch(key, message.size, message.queue_s, message.compute_s)
        elif isinstance(message, protocol.CacheReport):
            engine.cache[message.model] = (message.hits, message.misses, message.bytes)
        elif isinstance(message, protocol.Ready) and engine.ready is not None:
            engine.ready.set_result(message)

    def _engine_ended(self, engine: _Engine) -> None:
        """The engine's socket closed: requeue or fail what it held, and restart it."""
        was_alive, engine.alive = engine.alive, False
        if engine.ready is not None and not engine.ready.done():
            engine.ready.set_exception(RuntimeError(f"engine {engine.index} exited while starting"))
        if self._stopping or not was_alive:
            return
        logger.error(
            "engine %d (pid %d) stopped unexpectedly; restarting it", engine.index, engine.pid
        )
        others = [e for e in self.engines if e.alive]
        for pending in [p for p in self._pending.values() if p.engine == engine.index]:
            if not pending.retried and others:  # nothing was answered: computed elsewhere
                pending.retried = True
                engine.outstanding[pending.operation] -= 1
                self._dispatch(pending, min(others, key=lambda e: e.load))
            else:
                self._forget(pending)
                pending.future.set_exception(
                    EngineFailed("the engine computing this request stopped; retry")
                )
        for stream in [s for s in self._streams.values() if s.engine == engine.index]:
            if stream.tokens_sent == 0 and others:  # nothing reached the client: start again
                engine.streams -= 1
                self._start_stream(stream, min(others, key=lambda e: e.load))
            else:
                error = FinishEvent("", stream.tokens_sent, "error", "engine stopped")
                self._end_stream(stream, error)
        task = asyncio.create_task(self._restart(engine))
        self._restarting.add(task)
        task.add_done_callback(self._restarting.discard)

    async def _restart(self, engine: _Engine) -> None:
        engine.restarts += 1
        engine.outstanding.clear()
        engine.streams = 0
        engine.cache.clear()
        delay = 0.0
        while not self._stopping:
            await asyncio.sleep(delay)
            try:
                ready = await self._launch(engine)
            except Exception:
                logger.exception("engine %d failed to restart", engine.index)
                delay = min(30.0, max(1.0, delay * 2))
                continue
            logger.warning("engine %d restarted (pid %d)", engine.index, ready.pid)
            return

    def _fail_all(self, error: ServiceError) -> None:
        for pending in list(self._pending.values()):
            self._forget(pending)
            if not pending.future.done():
                pending.future.set_exception(error)
        for stream in list(self._streams.values()):
            self._end_stream(stream, FinishEvent("", stream.tokens_sent, "error", "shutting down"))
