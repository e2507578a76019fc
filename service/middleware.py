"""ASGI middleware: request-body size limit (413 problem+json)."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PROBLEM_JSON, problem_body


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the body grows past the limit.

    A Starlette ``HTTPException`` so that FastAPI's body reader re-raises it as it is and the
    app's problem+json handler answers 413 (any other exception there becomes a 400).
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


class BodySizeLimitMiddleware:
    """Answer 413 to bodies over ``max_bytes``: at once from ``Content-Length``, and while
    reading for bodies without one (chunked) or longer than announced."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = _content_length(scope)
        if declared == -1:
            await _send_problem(scope, send, 400, "Content-Length must be a non-negative integer")
            return
        if declared is not None and declared > limit:
            await _send_problem(scope, send, 413,
                                f"request body of {declared} bytes exceeds the limit of "
                                f"{limit} bytes")
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as exc:  # read outside a route (its handler did not run)
            if started:
                raise
            await _send_problem(scope, send, 413, str(exc.detail))


def _content_length(scope: Scope) -> int | None:
    """The declared length; None when absent, -1 when unparseable."""
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            try:
                n = int(value)
            except ValueError:
                return -1
            return n if n >= 0 else -1
    return None


async def _send_problem(scope: Scope, send: Send, status: int, detail: str) -> None:
    body = json.dumps(problem_body(status, detail, scope.get("path", "/")),
                      separators=(",", ":"), ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", PROBLEM_JSON.encode()),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
