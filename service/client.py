"""The HTTP client of ``meshplan estimate|plan --server URL``.

A search is submitted with ``?wait=`` and then long-polled (``GET /v1/searches/{id}?wait=``)
until it finishes or the command's timeout passes; no request is held longer than
:data:`WAIT_CHUNK_S`, so proxies with idle timeouts do not cut it.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

WAIT_CHUNK_S = 20.0
FINISHED = ("succeeded", "failed", "cancelled")


class ClientError(Exception):
    """``kind``: ``invalid`` (the request, with ``problems``), ``auth``, ``unreachable``,
    ``error`` (anything else)."""

    def __init__(self, kind: str, message: str,
                 problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.problems = problems or []


class Client:
    def __init__(self, server: str, *, api_key: str | None = None, timeout: float = 120.0
                 ) -> None:
        self.base = server.rstrip("/")
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ requests
    def _request(self, method: str, path: str, *, timeout: float | None = None,
                 **kwargs: Any) -> httpx.Response:
        url = self.base + path
        try:
            return self._http.request(method, path, timeout=timeout or self.timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError("unreachable", f"cannot reach {url}: {exc}") from None

    def _body(self, resp: httpx.Response, ok: tuple[int, ...]) -> dict[str, Any]:
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code in ok and isinstance(body, dict):
            return body
        detail = body.get("detail") if isinstance(body, dict) else None
        where = f"{resp.request.method} {resp.request.url}"
        if resp.status_code in (400, 413, 422) and isinstance(body, dict):
            errors = body.get("errors") or []
            problems = [(str(e.get("field")), str(e.get("rule"))) for e in errors
                        if isinstance(e, dict)]
            raise ClientError("invalid", str(detail or resp.reason_phrase),
                              problems or [("body", str(detail or resp.reason_phrase))])
        if resp.status_code == 401:
            raise ClientError("auth", f"{where}: {detail or 'unauthorized'} (give the key with "
                                      "--api-key or MESHPLAN_API_KEY)")
        raise ClientError("error", f"{where} answered {resp.status_code}: "
                                   f"{detail or resp.text[:200]}")

    def estimate(self, data: Any) -> dict[str, Any]:
        return self._body(self._request("POST", "/v1/estimates", json=data), (200,))

    def plan(self, plan_id: str) -> dict[str, Any]:
        """``GET /v1/plans/{id}``: the stored plan with its estimate, explanation and request."""
        return self._body(self._request("GET", f"/v1/plans/{plan_id}"), (200,))

    def launch(self, plan_id: str, fmt: str, version: str | None = None) -> dict[str, Any]:
        """``GET /v1/plans/{id}/launch/{format}``: the stored plan's launch config (for the
        framework release ``version``, ``?version=``)."""
        params = {"version": version} if version is not None else None
        return self._body(self._request("GET", f"/v1/plans/{plan_id}/launch/{fmt}",
                                        params=params), (200,))

    def what_if(self, plan_id: str, scenario: Any) -> dict[str, Any]:
        """``POST /v1/plans/{id}/what-if``: the stored plan under ``scenario``."""
        return self._body(self._request("POST", f"/v1/plans/{plan_id}/what-if",
                                        json=scenario), (200,))

    def search(self, data: Any, *, timeout: float) -> dict[str, Any]:
        """Submit a search and wait for it to finish (at most ``timeout`` seconds); the final
        ``GET /v1/searches/{id}`` body. ClientError ``error`` if it is still running then."""
        deadline = time.monotonic() + timeout
        wait = min(WAIT_CHUNK_S, timeout)
        resp = self._request("POST", "/v1/searches", params={"wait": wait} if wait else None,
                             json=data, timeout=self.timeout + wait)
        if resp.status_code == 422 and _wait_refused(resp):  # server allows no long-poll
            wait = 0.0
            resp = self._request("POST", "/v1/searches", json=data)
        search = self._body(resp, (200, 202))
        while search.get("status") not in FINISHED:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClientError(
                    "error", f"search {search.get('id')} is still {search.get('status')} after "
                    f"{timeout:g} s; it goes on: GET {self.base}/v1/searches/{search.get('id')}")
            path = f"/v1/searches/{search['id']}"
            if wait:
                chunk = min(WAIT_CHUNK_S, left)
                search = self._body(self._request("GET", path, params={"wait": chunk},
                                                  timeout=self.timeout + chunk), (200, 202))
            else:
                time.sleep(min(1.0, left))
                search = self._body(self._request("GET", path), (200, 202))
        return search


def _wait_refused(resp: httpx.Response) -> bool:
    try:
        errors = resp.json().get("errors") or []
    except (ValueError, AttributeError):
        return False
    return any(isinstance(e, dict) and e.get("field") == "wait" for e in errors)
