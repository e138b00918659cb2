"""The engine: one dedicated inference thread per process that owns every model.

Requests reach it through per-(model, operation) queues. When the thread is free it takes the
oldest waiting request together with every request queued behind it for the same operation (up to
`max_batch_size`) and computes them as one batch, so a request waits only while the thread is busy
and never when the model is idle. Generation advances every active sequence by one token per batched
step, between batches of other work; new sequences join at the next step, finished or cancelled
ones leave at once. Torch runs only on this thread: with several intra-op threads, calls from
changing threads were measured about 10x slower on a small CPU.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from service.errors import DeadlineExceeded, InferenceFailed, Overloaded, ServiceError

logger = logging.getLogger("lstm_serve.engine")

BatchHandler = Callable[[Sequence[Any]], Sequence[Any]]


@dataclass
class _Request:
    payload: Any
    future: Future[Any]
    enqueued: float
    deadline: float


@dataclass
class BatchStats:
    """Running figures the queue uses to compute Retry-After."""

    batches: int = 0
    seconds_per_item: float = 0.001

    def record(self, items: int, seconds: float) -> None:
        self.batches += 1
        per_item = seconds / max(1, items)
        self.seconds_per_item = 0.9 * self.seconds_per_item + 0.1 * per_item


class StepScheduler(Protocol):
    """Generation: advances its active sequences by one token per call to `step`."""

    def active(self) -> int: ...

    def admit(self) -> None: ...

    def step(self) -> None: ...


class Observer(Protocol):
    def batch(self, key: str, size: int, queue_s: float, compute_s: float) -> None: ...


@dataclass
class Engine:
    """Owns the inference thread and its queues."""

    threads: int = 1
    max_batch_size: int = 32
    max_wait_s: float = 0.0
    max_queue: int = 64
    observer: Observer | None = None
    _handlers: dict[str, BatchHandler] = field(default_factory=dict)
    _queues: dict[str, deque[_Request]] = field(default_factory=dict)
    _stats: dict[str, BatchStats] = field(default_factory=dict)
    _schedulers: list[StepScheduler] = field(default_factory=list)
    _calls: deque[tuple[Callable[[], Any], Future[Any]]] = field(default_factory=deque)
    _wake: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None
    _stopping: bool = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def register(self, key: str, handler: BatchHandler) -> None:
        self._handlers[key] = handler
        self._queues[key] = deque()
        self._stats[key] = BatchStats()

    def add_scheduler(self, scheduler: StepScheduler) -> None:
        self._schedulers.append(scheduler)

    def wake(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def pending(self, key: str) -> int:
        return len(self._queues[key])

    # ---- called from the event loop ----

    async def call(self, function: Callable[[], Any]) -> Any:
        """Run `function` on the inference thread (loading, warm-up, one-off work)."""
        future: Future[Any] = Future()
        with self._wake:
            self._calls.append((function, future))
            self._wake.notify_all()
        return await asyncio.wrap_future(future)

    async def submit(self, key: str, payload: Any, timeout: float) -> Any:
        """Queue one item for batched computation; raises Overloaded when the queue is full."""
        now = time.perf_counter()
        future: Future[Any] = Future()
        with self._wake:
            waiting = self._queues[key]
            if len(waiting) >= self.max_queue:
                raise self._full(key)
            waiting.append(_Request(payload, future, now, now + timeout))
            self._wake.notify_all()
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            future.cancel()
            raise DeadlineExceeded(f"no result within the {timeout:g} s deadline") from None

    def refusal(self, operation: str) -> tuple[str, Overloaded] | None:
        """When every queue of `operation` (e.g. "sentiment") is full: the queue's key and the
        error to answer at once, before any work is spent on the request. None when one has
        room."""
        keys = [key for key in self._queues if key.endswith(f":{operation}")]
        if not keys or any(len(self._queues[key]) < self.max_queue for key in keys):
            return None
        key = min(keys, key=self.retry_after)
        return key, self._full(key)

    def _full(self, key: str) -> Overloaded:
        message = f"the {key} queue is full ({self.max_queue} requests waiting); retry later"
        return Overloaded(message, self.retry_after(key))

    def retry_after(self, key: str) -> int:
        """Seconds until the queue ahead would drain at the measured rate (at least 1)."""
        seconds = len(self._queues[key]) * self._stats[key].seconds_per_item
        return max(1, math.ceil(seconds))

    # ---- the inference thread ----

    def _run(self) -> None:
        torch.set_num_threads(self.threads)
        while True:
            with self._wake:
                while not self._stopping and not self._has_work():
                    self._wake.wait()
                if self._stopping:
                    self._fail_pending()
                    return
                call = self._calls.popleft() if self._calls else None
                self._gather()
                key, batch = self._take_batch()
            if call is not None:
                self._run_call(*call)
            if batch:
                self._run_batch(key, batch)
            for scheduler in self._schedulers:
                self._run_step(scheduler)

    def _gather(self) -> None:
        """With max_wait_s > 0, let a short queue fill for up to that long after its oldest
        request arrived (only while nothing else needs the thread). 0, the default, never waits:
        requests that arrive while a batch computes form the next batch anyway."""
        if self.max_wait_s <= 0 or any(s.active() for s in self._schedulers):
            return
        while not self._stopping:
            heads = [q[0].enqueued for q in self._queues.values() if q]
            if not heads or max(len(q) for q in self._queues.values()) >= self.max_batch_size:
                return
            remaining = min(heads) + self.max_wait_s - time.perf_counter()
            if remaining <= 0:
                return
            self._wake.wait(remaining)

    def _has_work(self) -> bool:
        return (
            bool(self._calls)
            or any(self._queues.values())
            or any(s.active() for s in self._schedulers)
        )

    def _take_batch(self) -> tuple[str, list[_Request]]:
        """The operation whose oldest request waited longest, with up to a batch of its queue."""
        heads = [(q[0].enqueued, key) for key, q in self._queues.items() if q]
        if not heads:
            return "", []
        _, key = min(heads)
        waiting = self._queues[key]
        batch = [waiting.popleft() for _ in range(min(self.max_batch_size, len(waiting)))]
        return key, batch

    def _run_call(self, function: Callable[[], Any], future: Future[Any]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(function())
        except BaseException as error:  # handed to the awaiting coroutine
            future.set_exception(error)

    def _run_batch(self, key: str, batch: list[_Request]) -> None:
        now = time.perf_counter()
        live = []
        for request in batch:
            if not request.future.set_running_or_notify_cancel():
                continue  # the client gave up: no work for nobody
            if now > request.deadline:
                request.future.set_exception(
                    DeadlineExceeded("the request's deadline passed in the queue")
                )
                continue
            live.append(request)
        if not live:
            return
        started = time.perf_counter()
        try:
            results = self._handlers[key]([r.payload for r in live])
        except ServiceError as error:
            for request in live:
                request.future.set_exception(error)
            return
        except Exception:
            logger.exception("batch of %d on %s failed", len(live), key)
            self._retry_alone(key, live)
            return
        compute = time.perf_counter() - started
        self._stats[key].record(len(live), compute)
        if self.observer is not None:
            queue_s = sum(started - r.enqueued for r in live) / len(live)
            self.observer.batch(key, len(live), queue_s, compute)
        for request, result in zip(live, results, strict=True):
            if isinstance(result, BaseException):
                request.future.set_exception(result)
            else:
                request.future.set_result(result)

    def _retry_alone(self, key: str, failed: list[_Request]) -> None:
        """After a failed batch, compute each request alone: only the one that breaks fails."""
        for request in failed:
            try:
                (result,) = self._handlers[key]([request.payload])
            except ServiceError as error:
                request.future.set_exception(error)
            except Exception:
                logger.exception("request on %s failed alone too", key)
                request.future.set_exception(InferenceFailed("the model failed on this request"))
            else:
                request.future.set_result(result)

    def _run_step(self, scheduler: StepScheduler) -> None:
        try:
            scheduler.admit()
            if scheduler.active():
                scheduler.step()
        except Exception:  # the scheduler fails its own sequences; the thread keeps running
            logger.exception("generation step failed")

    def _fail_pending(self) -> None:
        while self._calls:
            _, future = self._calls.popleft()
            if future.set_running_or_notify_cancel():
                future.set_exception(RuntimeError("the inference thread stopped"))
        for waiting in self._queues.values():
            while waiting:
                request = waiting.popleft()
                if request.future.set_running_or_notify_cancel():
                    request.future.set_exception(Overloaded("the service is shutting down", 1))
