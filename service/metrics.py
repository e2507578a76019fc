"""Request metrics in the Prometheus text exposition format (version 0.0.4).

Written by hand (``prometheus_client`` is not a dependency): a counter of requests and a
histogram of their latency, both labelled by method, route template and status. Route templates
(``/v1/gpus/{name}``), not raw paths, keep the label set bounded; paths that match no route
share ``route="unmatched"``.

Format: https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
"""prometheus_client's default latency buckets, extended to a minute for long estimates."""

REQUESTS = "meshplan_http_requests_total"
DURATION = "meshplan_http_request_duration_seconds"
UNMATCHED = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Other request methods share ``method="other"`` (clients choose them freely)."""

Key = tuple[str, str, str]  # method, route, status


class _Histogram:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self, n: int) -> None:
        self.buckets = [0] * n  # non-cumulative; made cumulative on render
        self.count = 0
        self.sum = 0.0


class Metrics:
    """Thread-safe request counters and latency histograms (one instance per app)."""

    def __init__(self, buckets: Sequence[float] = DEFAULT_BUCKETS) -> None:
        if list(buckets) != sorted(buckets) or not buckets:
            raise ValueError("buckets must be a non-empty increasing sequence")
        self.bounds = tuple(float(b) for b in buckets)
        self._lock = threading.Lock()
        self._series: dict[Key, _Histogram] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        i = bisect_left(self.bounds, seconds)  # first bound >= seconds (le is inclusive)
        with self._lock:
            h = self._series.get(key)
            if h is None:
                h = self._series[key] = _Histogram(len(self.bounds) + 1)
            h.buckets[i] += 1
            h.count += 1
            h.sum += seconds

    def count(self, method: str, route: str, status: int) -> int:
        with self._lock:
            h = self._series.get((method, route, str(status)))
            return h.count if h else 0

    def render(self) -> str:
        with self._lock:
            series = sorted(
                (k, list(h.buckets), h.count, h.sum) for k, h in self._series.items())
        lines = [
            f"# HELP {REQUESTS} HTTP requests served, by method, route template and status.",
            f"# TYPE {REQUESTS} counter",
        ]
        for key, _, count, _ in series:
            lines.append(f"{REQUESTS}{{{_labels(key)}}} {count}")
        lines += [
            f"# HELP {DURATION} Time from request start to response end, in seconds.",
            f"# TYPE {DURATION} histogram",
        ]
        for key, buckets, count, total in series:
            labels = _labels(key)
            cumulative = 0
            for bound, n in zip(self.bounds, buckets, strict=False):
                cumulative += n
                lines.append(f'{DURATION}_bucket{{{labels},le="{_num(bound)}"}} {cumulative}')
            lines.append(f'{DURATION}_bucket{{{labels},le="+Inf"}} {count}')
            lines.append(f"{DURATION}_sum{{{labels}}} {_num(total)}")
            lines.append(f"{DURATION}_count{{{labels}}} {count}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(key: Key) -> str:
    method, route, status = key
    return f'method="{_escape(method)}",route="{_escape(route)}",status="{_escape(status)}"'


def _num(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x))


class RouteTemplates:
    """Maps a request path to the template of the route it addresses (``/v1/gpus/{name}``).

    Built from the templates themselves (``compile_path``), not from the router's internals,
    so it also names the route of a request answered before routing (a 413) or with 405.
    Templates without parameters are tried first.
    """

    def __init__(self, templates: Iterable[str]) -> None:
        ordered = sorted(set(templates), key=lambda t: ("{" in t, t))
        self._patterns = [(compile_path(t)[0], t) for t in ordered]

    def resolve(self, path: str) -> str:
        for regex, template in self._patterns:
            if regex.match(path):
                return template
        return UNMATCHED


class MetricsMiddleware:
    """Times every HTTP request and records it in ``metrics`` (500 for a raised exception)."""

    def __init__(self, app: ASGIApp, metrics: Metrics,
                 templates: Callable[[], Iterable[str]]) -> None:
        self.app = app
        self.metrics = metrics
        self._templates = templates
        self._routes: RouteTemplates | None = None

    @property
    def routes(self) -> RouteTemplates:
        # Built on the first request, once every route of the app is registered.
        if self._routes is None:
            self._routes = RouteTemplates(self._templates())
        return self._routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        route = self.routes.resolve(scope.get("path", ""))
        method = scope.get("method", "GET")
        method = method if method in KNOWN_METHODS else "other"

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.observe(method, route, status, time.perf_counter() - start)
