"""uvicorn's httptools protocol with the two limits it lacks: header size and header-read time.

Without them one client can send a 1 MiB header, or open a thousand connections that each send
half a request and then nothing, and keep them all open for ever (slowloris). With them:
- request line + headers over `max_header_bytes` answer 431 and close;
- a request whose headers are not complete `header_timeout` seconds after the connection opened
  (or after its first byte, on a kept-alive connection) answers 408 and closes; a connection that
  sent nothing at all is just closed, as browsers' pre-opened connections expect;
- bytes that are not HTTP/1.1 answer 400 as JSON, like every other error of the API.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

# After a refusal the client may still be sending (the rest of a 1 MiB header): closing at once
# would reset the connection and could destroy the answer in flight. Instead the answer and a FIN
# go out, what still arrives is discarded, and the socket closes when the client does or after this.
LINGER_SECONDS = 2.0


class HeadersTooLarge(Exception):
    """Raised from a parser callback: httptools stops, and uvicorn calls send_400_response."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    max_header_bytes = 16 * 1024
    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True  # between a request's first byte (or the connect) and its headers' end
        self._head_bytes = 0  # of the head being read: raw bytes, and then the parsed sizes
        self._parsed_bytes = 0
        self._too_large = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    # --- the head's deadline ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading_head, self._parsed_bytes = True, 0
        if self._head_timer is None:  # a kept-alive connection's next request: its own deadline
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._reading_head, self._head_bytes = False, 0
        super().on_headers_complete()

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm()  # a pipelined request behind one being answered: answering now would cut it
        elif self._head_bytes or self._parsed_bytes:
            self._refuse(408, f"The request headers took longer than {self.header_timeout:g} seconds.")
        else:
            self.transport.close()

    # --- the head's size ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._reading_head:
            self._head_bytes += len(data)  # also what httptools buffers of an unfinished header
        super().data_received(data)
        unfinished = self._reading_head and not (self._refused or self.transport.is_closing())
        if unfinished and self._head_bytes > self.max_header_bytes:
            self._too_large = True
            self.send_400_response("")

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._parsed_bytes += size
        if self._parsed_bytes > self.max_header_bytes:
            self._too_large = True
            raise HeadersTooLarge

    # --- answers that the app never sees ------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        if self._too_large:
            self._refuse(431, f"The request line and headers are larger than {self.max_header_bytes} bytes.")
        else:
            self._refuse(400, "The request is not valid HTTP/1.1.")

    def _refuse(self, status: int, detail: str) -> None:
        self._disarm()
        if self._refused:
            return
        body = json.dumps({"detail": detail}).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self._refused = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    def eof_received(self) -> bool | None:
        if self._refused:
            self.transport.close()
        return super().eof_received()


def limited_protocol(max_header_bytes: int, header_timeout: float) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for `uvicorn.run(http=...)` with these limits."""
    return type(
        "LimitedHttpToolsProtocol",
        (LimitedHttpToolsProtocol,),
        {"max_header_bytes": max_header_bytes, "header_timeout": header_timeout},
    )
