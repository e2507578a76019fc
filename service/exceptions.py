"""Errors a service function raises for the HTTP layer to answer as problem+json.

Invalid input is :class:`costmodel.errors.SpecError` (422 with ``errors``); these are the other
outcomes a client can cause: a resource that does not exist (or is not theirs), a state that
forbids the operation, a missing or wrong API key.
"""

from __future__ import annotations

from collections.abc import Mapping


class ServiceError(Exception):
    status = 500

    def __init__(self, detail: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = dict(headers) if headers else None


class NotFound(ServiceError):
    """404. Also what a key gets for another key's resource: existence is not revealed."""

    status = 404


class Conflict(ServiceError):
    """409: the resource's state forbids the operation (cancelling a finished search)."""

    status = 409


class Unauthorized(ServiceError):
    """401 with ``WWW-Authenticate: Bearer`` (RFC 6750 §3)."""

    status = 401

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="meshplan"'})


class Busy(ServiceError):
    """503 with ``Retry-After``: a bounded queue for this kind of work is full; nothing was
    started, so the client may send the same request again later."""

    status = 503

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})
