"""uvicorn's HTTP protocol with a deadline on reading a request's head.

uvicorn times out idle keep-alive connections (``timeout_keep_alive``) but not a client that
connects and sends its request line and headers slowly, a byte at a time ("slowloris"): each
such connection holds a socket and a protocol object for as long as the client likes. Here a
connection that has not completed a request head within ``MESHPLAN_HEADER_TIMEOUT_S`` of
connecting, or of the previous response, is closed (as nginx's ``client_header_timeout`` and
Apache's ``mod_reqtimeout`` do). Bodies are bounded in size by
:class:`service.middleware.BodySizeLimitMiddleware`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import Settings

__all__ = ["HeaderTimeoutProtocol", "uvicorn_options"]


class HeaderTimeoutProtocol(HttpToolsProtocol):
    header_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.pipeline and not self.transport.is_closing():
            self._arm()  # the next request on this keep-alive connection


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` / ``uvicorn.Config`` that every way of serving
    the API uses: the header deadline and the keep-alive timeout from ``settings``."""
    protocol = type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,),
                    {"header_timeout_s": settings.header_timeout_s})
    return {"http": protocol, "timeout_keep_alive": settings.keep_alive_timeout_s}
