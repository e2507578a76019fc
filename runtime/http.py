"""The worker's HTTP calls to the meshplan service (standard library only; the runtime talks to
the service over HTTP and imports nothing of it)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class ServiceError(RuntimeError):
    """The server could not be reached or refused the request."""


def _call(method: str, url: str, body: Any | None = None, timeout: float = 30.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json",
                                          "accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            text = resp.read().decode()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:2000]
        raise ServiceError(f"{method} {url}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServiceError(f"{method} {url}: cannot reach the server ({exc})") from None
    return json.loads(text) if text else None


def post_calibration(server: str, profile: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/calibrations`` → ``{id, name, gpu, created}``."""
    return dict(_call("POST", f"{server.rstrip('/')}/v1/calibrations", profile))


def get_calibration(server: str, calibration_id: str) -> dict[str, Any]:
    """``GET /v1/calibrations/{id}``: the profile (accepts the profile itself or an object
    holding it under ``profile``)."""
    body = _call("GET", f"{server.rstrip('/')}/v1/calibrations/{calibration_id}")
    if isinstance(body, dict) and "format" not in body and isinstance(body.get("profile"), dict):
        body = body["profile"]
    if not isinstance(body, dict):
        raise ServiceError(f"GET /v1/calibrations/{calibration_id}: not a profile")
    return body


def post_run(server: str, plan_id: str, report: dict[str, Any]) -> Any:
    """``POST /v1/plans/{id}/runs`` with a :class:`~costmodel.runs.RunReport`."""
    return _call("POST", f"{server.rstrip('/')}/v1/plans/{plan_id}/runs", report)
