"""The HTTP server around the app: uvicorn (uvloop + httptools) with the limits a hostile client
meets before any app runs. A request head must arrive within the head timeout and stay under
MAX_HEAD_BYTES; past the connection limit an idle connection makes room, or the newcomer gets a
503; malformed HTTP gets the error envelope. On SIGTERM or SIGINT the server stops accepting,
answers every connection it accepted, and the process exits 0."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import uuid
from types import FrameType
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.api.responses import error_bytes, error_response
from service.errors import (
    ERROR_TABLE,
    BadRequest,
    ErrorKind,
    HeadersTooLarge,
    Overloaded,
    RequestTimeout,
)

logger = logging.getLogger("lstm_serve.server")
# The middleware answers a complete head with over 100 headers or 32 KiB of them (431 envelope);
# this bound is for a head that never ends.
MAX_HEAD_BYTES = 64 * 1024
# At shutdown, a connection accepted but still silent is given this long to send its request.
DRAIN_GRACE_S = 2.0
OPEN_FILES_KEPT = 64  # file descriptors left for the process's own use under the connection limit


async def _at_limit(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer of a connection over the limit that no idle one could make room for."""
    limit = BoundedHeadProtocol.max_connections
    message = f"the server holds its limit of {limit:,} connections; retry shortly"
    headers = {"Retry-After": "1", "Connection": "close"}
    response = error_response(ERROR_TABLE[Overloaded], message, uuid.uuid4().hex, headers=headers)
    await response(scope, receive, send)


class BoundedHeadProtocol(HttpToolsProtocol):
    """httptools keeps a request head until its end arrives, however long and however late:
    measured, one connection sending 100 MB of a single header grew the process by 100 MB, and
    silent connections stayed open for good (260 of them exhausted an open-file limit of 256)."""

    head_timeout_s = 10.0
    max_connections = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head, self._head_bytes, self._answered = True, 0, 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._draining = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer(self.head_timeout_s)
        if len(self.connections) > self.max_connections and not self._make_room():
            self.app = _at_limit  # this connection's request is answered 503

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._reading_head and self._head_bytes > MAX_HEAD_BYTES:
            message = f"the request head is over the limit of {MAX_HEAD_BYTES:,} bytes"
            self._answer_and_close(ERROR_TABLE[HeadersTooLarge], message)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._cancel_head_timer()
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False  # answered, then closed: the server is stopping

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head, self._head_bytes = True, 0

    def on_response_complete(self) -> None:
        self._answered += 1
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer(self.head_timeout_s)  # for the next request's head

    def send_400_response(self, msg: str) -> None:
        del msg  # uvicorn's "Invalid HTTP request received."
        message = (
            "the request is not valid HTTP/1.1 (its request line, a header or Content-Length "
            "could not be read)"
        )
        self._answer_and_close(ERROR_TABLE[BadRequest], message)

    def shutdown(self) -> None:
        """A connection accepted but whose request has not arrived yet is answered, then closed
        (uvicorn closed it at once: a client that opens a connection per request lost it)."""
        in_cycle = self.cycle is not None and not self.cycle.response_complete
        # (after a request's body, _reading_head is already True again while its answer is
        # still being computed: that one is finished by uvicorn's own shutdown, not cut)
        if not in_cycle and self._reading_head and (self._head_bytes or not self._answered):
            self._draining = True
            if not self._head_bytes:
                self._arm_head_timer(min(self.head_timeout_s, DRAIN_GRACE_S))
            return
        super().shutdown()

    def _idle(self) -> bool:
        """Between requests with nothing of the next one received (or none at all yet)."""
        in_cycle = self.cycle is not None and not self.cycle.response_complete
        return self._reading_head and not self._head_bytes and not in_cycle

    def _make_room(self) -> bool:
        """Close an idle connection (one that has been answered first) for this new one."""
        idle = [
            c
            for c in self.connections
            if c is not self and isinstance(c, BoundedHeadProtocol) and c._idle()
        ]
        if not idle:
            logger.warning("connection limit (%d) reached; refusing", self.max_connections)
            return False
        min(idle, key=lambda c: (not c._answered, id(c))).transport.close()
        return True

    def _arm_head_timer(self, seconds: float) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(seconds, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        if self.transport.is_closing() or not self._reading_head:
            return
        if not self._head_bytes:  # nothing sent: closed, as an idle keep-alive connection is
            self.transport.close()
            return
        message = f"the request head did not arrive within {self.head_timeout_s:g} s"
        self._answer_and_close(ERROR_TABLE[RequestTimeout], message)

    def _answer_and_close(self, kind: ErrorKind, message: str) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(error_bytes(kind, message, uuid.uuid4().hex))
        self.transport.close()


def protocol_for(head_timeout_s: float, max_connections: int) -> type[BoundedHeadProtocol]:
    """The protocol class with these limits; the connection limit stays below the open-file
    limit (an accept that fails for want of a file descriptor fails every new client)."""
    try:
        import resource

        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError):  # pragma: no cover - not Linux
        open_files = -1
    if 0 < open_files - OPEN_FILES_KEPT < max_connections:
        logger.warning(
            "LSTM_SERVE_MAX_CONNECTIONS=%d is over the open-file limit (%d) less %d; using %d",
            max_connections,
            open_files,
            OPEN_FILES_KEPT,
            open_files - OPEN_FILES_KEPT,
        )
        max_connections = open_files - OPEN_FILES_KEPT
    limits = {"head_timeout_s": head_timeout_s, "max_connections": max_connections}
    BoundedHeadProtocol.max_connections = max_connections  # read by _at_limit's message
    return type("Protocol", (BoundedHeadProtocol,), limits)


def _accept_queue(listener: socket.socket) -> int:
    """Connections the kernel completed that the server has not accepted yet (Linux TCP_INFO of
    a listening socket: tcpi_unacked)."""
    try:
        info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return 0
    return int(struct.unpack_from("I", info, 24)[0])


class Server(uvicorn.Server):
    """uvicorn re-raises the signal it shut down for once it is done, so a clean shutdown on
    SIGTERM ended as 'killed by SIGTERM' (exit status 143) outside a container's PID 1. Here the
    signal starts the same graceful shutdown and is then forgotten: the process exits 0.

    Shutdown first stops the kernel from completing new connections, accepts those it already
    completed (closing the listening socket reset them: 7 and 16 of 32 clients that connect per
    request lost a request in two runs), and only then closes it."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self._drain_accept_queue()
        await super().shutdown(sockets)

    async def _drain_accept_queue(self, timeout_s: float = 2.0) -> None:
        listeners = []
        for server in self.servers:
            for transport_socket in server.sockets:
                listener = socket.socket(fileno=os.dup(transport_socket.fileno()))
                listener.listen(0)  # the queue is full at once: new handshakes are not completed
                listeners.append(listener)
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            while any(_accept_queue(listener) for listener in listeners):
                if asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.005)  # the event loop accepts them meanwhile
        finally:
            for listener in listeners:
                listener.close()  # the duplicate only; the server closes its own
