"""A small HTTP/1.1 load generator for the benchmarks: closed loop (N connections, each sends its
next request when the last one is answered) or open loop (requests sent on a fixed schedule,
whatever the server does, each on a free keep-alive connection or a new one).

Open-loop latency runs from the moment the schedule says a request is due, not from when it was
written, so a server that falls behind is charged for the wait (no coordinated omission).
Bodies must come back with Content-Length (every non-streamed route of the service does).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One request: when it was due, how long until its answer ended, and what came back."""

    due: float
    latency: float
    status: int  # 0: no answer (connection refused, reset or closed early)
    retry_after: str | None
    label: str


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def encode(method: str, path: str, body: bytes = b"", host: str = "127.0.0.1") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status and the headers (names in lower case) of a response head."""
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return int(lines[0].split(" ", 2)[1]), headers


class Connection:
    """One keep-alive connection; `send` writes a request and reads its whole answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        self.writer.write(raw)
        status, headers = parse_head(await self.reader.readuntil(b"\r\n\r\n"))
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    def close(self) -> None:
        self.writer.close()


Request = tuple[str, bytes]  # (label, raw HTTP request)


async def _one(
    pool: deque[Connection], host: str, port: int, request: Request, due: float
) -> Sample:
    label, raw = request
    connection = None
    try:
        connection = pool.pop() if pool else await Connection.open(host, port)
        status, headers, _ = await connection.send(raw)
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
        if connection is not None:
            connection.close()
        return Sample(due, time.perf_counter() - due, 0, None, label)
    if headers.get("connection", "").lower() == "close":
        connection.close()
    else:
        pool.append(connection)
    return Sample(due, time.perf_counter() - due, status, headers.get("retry-after"), label)


class _Client(asyncio.Protocol):
    """A keep-alive connection for the open loop: parses answers as bytes arrive and reports
    each through `done`, with no task or future per request (the loop must stay cheap: it
    shares the machine with the server it measures)."""

    def __init__(self, done: Callable[[_Client, int, str | None], None]) -> None:
        self.done = done
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.buffer = b""
        self.busy = False
        self.request: tuple[float, str] = (0.0, "")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def send(self, raw: bytes, due: float, label: str) -> None:
        assert self.transport is not None
        self.busy, self.request = True, (due, label)
        self.transport.write(raw)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        status, headers = parse_head(self.buffer[:end])
        length = int(headers.get("content-length", "0"))
        if len(self.buffer) < end + 4 + length:
            return
        self.buffer = self.buffer[end + 4 + length :]
        self.busy = False
        self.done(self, status, headers.get("retry-after"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.busy:
            self.busy = False
            self.done(self, 0, None)


async def open_loop(
    host: str,
    port: int,
    make: Callable[[int], Request],
    rate: float,
    seconds: float,
    warm_connections: int = 64,
) -> list[Sample]:
    """Send `make(i)` at `rate` requests/s for `seconds`; every request is answered or failed."""
    loop = asyncio.get_running_loop()
    samples: list[Sample] = []
    idle: deque[_Client] = deque()
    finished = asyncio.Event()
    total = int(rate * seconds)

    def done(client: _Client, status: int, retry_after: str | None) -> None:
        due, label = client.request
        samples.append(Sample(due, time.perf_counter() - due, status, retry_after, label))
        if client.transport is not None and status:
            idle.append(client)
        if len(samples) == total:
            finished.set()

    async def fresh(raw: bytes, due: float, label: str) -> None:
        try:
            _, client = await loop.create_connection(lambda: _Client(done), host, port)
        except OSError:
            samples.append(Sample(due, time.perf_counter() - due, 0, None, label))
            if len(samples) == total:
                finished.set()
            return
        client.send(raw, due, label)

    for _ in range(warm_connections):
        idle.append((await loop.create_connection(lambda: _Client(done), host, port))[1])
    pending = set()
    started = time.perf_counter()
    for index in range(total):
        due = started + index / rate
        delay = due - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        label, raw = make(index)
        while idle and idle[-1].transport is None:
            idle.pop()
        if idle:
            idle.pop().send(raw, due, label)
        else:
            task = asyncio.create_task(fresh(raw, due, label))
            pending.add(task)
            task.add_done_callback(pending.discard)
    if total:
        await finished.wait()
    for client in idle:
        if client.transport is not None:
            client.transport.close()
    return samples


async def closed_loop(
    host: str, port: int, make: Callable[[int], Request], connections: int, seconds: float
) -> list[Sample]:
    """`connections` clients, each sending its next request as soon as the last is answered."""
    samples: list[Sample] = []
    counter = iter(range(1 << 62))
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        pool: deque[Connection] = deque([await Connection.open(host, port)])
        while time.perf_counter() < deadline:
            samples.append(await _one(pool, host, port, make(next(counter)), time.perf_counter()))
        for connection in pool:
            connection.close()

    await asyncio.gather(*(client() for _ in range(connections)))
    return samples


async def probe(
    host: str, port: int, request: Request, interval: float, stop: asyncio.Event
) -> list[Sample]:
    """One request every `interval` seconds on its own connection until `stop` is set."""
    pool: deque[Connection] = deque()
    samples = []
    while not stop.is_set():
        samples.append(await _one(pool, host, port, request, time.perf_counter()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
    return samples
