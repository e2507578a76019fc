"""Test support: a synchronous client over the ASGI app, and problem+json assertions."""

from __future__ import annotations

import json
from contextlib import ExitStack
from typing import Any

import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI

from service.errors import PROBLEM_JSON


class Api:
    """httpx.AsyncClient over ``ASGITransport(app)``, called synchronously through an anyio
    portal (the event loop runs in a helper thread), so tests and hypothesis stay plain."""

    def __init__(self, app: FastAPI, *, raise_app_exceptions: bool = True) -> None:
        self.app = app
        self._stack = ExitStack()
        self._portal: BlockingPortal = self._stack.enter_context(start_blocking_portal())
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://meshplan.test")

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self._portal.call(lambda: self._client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def post_raw(self, url: str, body: bytes, content_type: str | None = "application/json",
                 **kwargs: Any) -> httpx.Response:
        headers = {"content-type": content_type} if content_type else {}
        return self.request("POST", url, content=body, headers=headers, **kwargs)

    def close(self) -> None:
        self._portal.call(self._client.aclose)
        self._stack.close()


def assert_problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    """``resp`` is an RFC 9457 problem with ``status``; returns its body."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_JSON), resp.headers
    body: dict[str, Any] = json.loads(resp.content)
    for key in ("type", "title", "status", "detail", "instance"):
        assert key in body, body
    assert body["status"] == status
    assert isinstance(body["detail"], str) and body["detail"]
    assert "Traceback" not in resp.text
    if status == 422:
        assert body["errors"], body
        for e in body["errors"]:
            assert set(e) == {"field", "rule"}
            assert isinstance(e["field"], str) and e["field"]
            assert isinstance(e["rule"], str) and e["rule"]
            assert not e["field"].startswith("body.")
    return body


def fields(body: dict[str, Any]) -> set[str]:
    return {e["field"] for e in body["errors"]}


# ---------------------------------------------------------------------------- searches
SMALL_SEARCH: dict[str, Any] = {
    "model": {"preset": "llama3-8b"},
    "training": {"global_batch_size": 64, "seq_len": 2048},
    "cluster": {"pools": [{"name": "a100", "gpu": "A100-SXM-80GB", "gpus_per_node": 8,
                           "nodes": 1, "price_per_gpu_hour": 1.29}]},
    "top_k": 2, "time_limit_s": 20,
}
"""Llama-3-8B on one A100 node: a search of about half a second."""


def long_search(time_limit_s: float) -> dict[str, Any]:
    """Llama-3-405B on 2048 H100 + 2048 A100, cheapest per token: the branch and bound does not
    finish within ``time_limit_s`` (it runs for the whole limit, then refines)."""
    return {
        "model": {"preset": "llama3-405b"},
        "training": {"global_batch_size": 2048, "seq_len": 8192},
        "cluster": {"pools": [
            {"name": "h100", "gpu": "H100-SXM-80GB", "gpus_per_node": 8, "nodes": 256,
             "price_per_gpu_hour": 2.49},
            {"name": "a100", "gpu": "A100-SXM-80GB", "gpus_per_node": 8, "nodes": 256,
             "price_per_gpu_hour": 1.29}]},
        "objective": "cost", "top_k": 10, "time_limit_s": time_limit_s,
    }


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned) or fail after
    ``timeout`` seconds (a hang guard, not a timing assertion)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
