"""Limits on an HTTP/1.1 request head that uvicorn does not set: a deadline and a size.

uvicorn's httptools protocol starts no timer when a connection opens, nor while a
request head arrives: its keep-alive timer runs only between a response and the next
byte. A connection that sends nothing, or a head one byte at a time, is held for
ever. llhttp, httptools' parser, has no limit on the size of a head either (uvicorn's
``h11_max_incomplete_event_size`` binds only its h11 protocol), so a header that
never ends grows the server's memory without bound. `LimitedHttpToolsProtocol` is
uvicorn's httptools protocol with both limits:

- **header timeout**: the request line and headers must have arrived within
  `header_timeout` seconds of the connection opening, or of the end of the previous
  response on it; otherwise the connection is closed. Time the server spends on a
  request is not counted.
- **header size**: a request line and headers of more than `max_header_bytes` bytes
  are answered ``431 Request Header Fields Too Large`` and the connection is closed.
  At most one read from the socket beyond the limit is ever buffered.

`http_protocol` gives uvicorn the protocol with the limits bound (``Config(http=...)``);
it pickles, so uvicorn's worker processes get it too.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_HEADER_BYTES",
    "LimitedHttpToolsProtocol",
    "http_protocol",
]

#: Seconds a client has to send a request head; see the module docstring.
DEFAULT_HEADER_TIMEOUT = 10.0
#: The largest request head (request line and headers) accepted, in bytes.
DEFAULT_MAX_HEADER_BYTES = 64 * 1024


def http_protocol(
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
) -> functools.partial[LimitedHttpToolsProtocol]:
    """uvicorn's ``http`` setting for `LimitedHttpToolsProtocol` with these limits.

    Args:
        header_timeout: seconds a connection may take to send a request head.
            Defaults to `10`.
        max_header_bytes: the largest request head, in bytes. Defaults to `65536`.

    Returns:
        A callable that uvicorn calls to make each connection's protocol.

    Raises:
        ValueError: a limit is not positive.

    Example:

    >>> import uvicorn
    >>> config = uvicorn.Config("app:app", http=http_protocol(header_timeout=5.0))
    """
    if (
        isinstance(header_timeout, bool)
        or not isinstance(header_timeout, (int, float))
        or not (0 < header_timeout < float("inf"))
    ):
        raise ValueError(
            f"`header_timeout` should be a positive number of seconds. Received: {header_timeout!r}"
        )
    if (
        isinstance(max_header_bytes, bool)
        or not isinstance(max_header_bytes, int)
        or (max_header_bytes < 1)
    ):
        raise ValueError(
            f"`max_header_bytes` should be a positive integer. Received: {max_header_bytes!r}"
        )
    return functools.partial(
        LimitedHttpToolsProtocol,
        header_timeout=float(header_timeout),
        max_header_bytes=max_header_bytes,
    )


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit on request heads.

    Args:
        *args: uvicorn's arguments for `HttpToolsProtocol`.
        header_timeout: seconds a connection may take to send a request head.
        max_header_bytes: the largest request head, in bytes.
        **kwargs: uvicorn's keyword arguments for `HttpToolsProtocol`.
    """

    def __init__(
        self, *args: Any, header_timeout: float, max_header_bytes: int, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.max_header_bytes = max_header_bytes
        self._head_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True  # From the end of one request to the end of the next head.
        self._head_bytes = 0  # Received while awaiting a head (one read over, at most).
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._awaiting_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._refused or (self._awaiting_head and self._head_bytes > self.max_header_bytes):
            self._refuse()

    def on_headers_complete(self) -> None:
        if self._refused:  # A pipelined request after the refused one: not started.
            return
        self._awaiting_head = False
        self._stop_head_timer()
        # A head that arrived whole in one read: its size, separators not counted.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_header_bytes:
            self._refused = True  # Answered after the parser returns; no request starts.
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        super().on_message_complete()
        self._awaiting_head = True
        self._head_bytes = 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The deadline for the next head starts now, unless it has already arrived
        # (pipelined) or the connection is closing.
        if self._awaiting_head and not self.transport.is_closing():
            self._start_head_timer()

    def _start_head_timer(self) -> None:
        self._stop_head_timer()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._awaiting_head and not self.transport.is_closing():
            self.transport.close()

    def _refuse(self) -> None:
        """Answers 431 and closes the connection (the head is over the limit)."""
        self._refused = True
        self._stop_head_timer()
        if self.transport.is_closing():
            return
        body = json.dumps(
            {
                "error": f"The request line and headers are larger than {self.max_header_bytes} "
                "bytes, the most this server accepts (--max-header-bytes)."
            }
        ).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()
