"""The HTTP server around the app: uvicorn (uvloop + httptools) with two changes. A request head
still incomplete after MAX_HEAD_BYTES is refused, so it cannot grow in memory; and a graceful
shutdown on SIGTERM or SIGINT ends the process with exit status 0."""

from __future__ import annotations

import json
import uuid
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# The middleware answers a complete head with over 100 headers or 32 KiB of them (431 envelope);
# this bound is for a head that never ends.
MAX_HEAD_BYTES = 64 * 1024


class BoundedHeadProtocol(HttpToolsProtocol):
    """httptools keeps the head of a request until its end arrives, however long: measured, one
    connection sending 100 MB of a single header grew the process by 100 MB. Past MAX_HEAD_BYTES
    of an unfinished head the connection is answered 431 and closed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head, self._head_bytes = True, 0

    def data_received(self, data: bytes) -> None:
        if self._reading_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._reading_head and self._head_bytes > MAX_HEAD_BYTES:
            self._refuse()

    def on_headers_complete(self) -> None:
        self._reading_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head, self._head_bytes = True, 0

    def _refuse(self) -> None:
        if self.transport.is_closing():
            return
        body = json.dumps(
            {
                "error": f"the request head is over the limit of {MAX_HEAD_BYTES:,} bytes",
                "error_type": "headers_too_large",
                "request_id": uuid.uuid4().hex,
            }
        ).encode()
        head = (
            "HTTP/1.1 431 Request Header Fields Too Large\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()


class Server(uvicorn.Server):
    """uvicorn re-raises the signal it shut down for once it is done, so a clean shutdown on
    SIGTERM ended as 'killed by SIGTERM' (exit status 143) outside a container's PID 1. Here the
    signal starts the same graceful shutdown and is then forgotten: the process exits 0."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()
