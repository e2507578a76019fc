"""``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import re

import pytest

from service.health import service as health
from service.jobs.worker import Worker
from service.metrics import CONTENT_TYPE, Metrics, RouteTemplates
from tests.service.support import Api, assert_problem


def test_healthz(api: Api) -> None:
    resp = api.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


def test_readyz(api: Api) -> None:
    resp = api.get("/readyz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ready",
                           "checks": {"gpu_catalog": "ok", "default_profile": "ok",
                                      "database": "ok", "migrations": "ok"}}


def test_readyz_reports_a_failed_check(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise OSError("default.json: no such file")

    monkeypatch.setitem(health.CHECKS, "default_profile", broken)
    body = assert_problem(api.get("/readyz"), 503)
    assert body["detail"] == "not ready: default_profile failed"
    assert "default.json" not in body["detail"]


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_counts_requests(api: Api) -> None:
    for _ in range(3):
        api.get("/healthz")
    api.get("/v1/gpus/H100")
    api.get("/v1/gpus/nope")
    api.get("/no/such/path")
    api.post_raw("/v1/estimates", b"{" + b" " * (2 << 20) + b"}")
    resp = api.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == CONTENT_TYPE
    s = _samples(resp.text)
    total = "meshplan_http_requests_total"
    assert s[f'{total}{{method="GET",route="/healthz",status="200"}}'] == 3
    assert s[f'{total}{{method="GET",route="/v1/gpus/{{name}}",status="200"}}'] == 1
    assert s[f'{total}{{method="GET",route="/v1/gpus/{{name}}",status="404"}}'] == 1
    assert s[f'{total}{{method="GET",route="unmatched",status="404"}}'] == 1
    assert s[f'{total}{{method="POST",route="/v1/estimates",status="413"}}'] == 1
    hist = "meshplan_http_request_duration_seconds"
    labels = 'method="GET",route="/healthz",status="200"'
    assert s[f'{hist}_count{{{labels}}}'] == 3
    assert s[f'{hist}_bucket{{{labels},le="+Inf"}}'] == 3
    assert s[f'{hist}_sum{{{labels}}}'] > 0


def test_metrics_text_format(api: Api) -> None:
    api.get("/healthz")
    text = api.get("/metrics").text
    assert text.endswith("\n")
    assert "# TYPE meshplan_http_requests_total counter" in text
    assert "# TYPE meshplan_http_request_duration_seconds histogram" in text
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*"'
                        r',?)*\})? [-+0-9.eInf]+$')
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line


def test_histogram_is_cumulative_and_le_inclusive() -> None:
    m = Metrics(buckets=(0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 1.0, 3.0):
        m.observe("GET", "/x", 200, seconds)
    s = _samples(m.render())
    labels = 'method="GET",route="/x",status="200"'
    h = "meshplan_http_request_duration_seconds"
    assert s[f'{h}_bucket{{{labels},le="0.1"}}'] == 2
    assert s[f'{h}_bucket{{{labels},le="1.0"}}'] == 4
    assert s[f'{h}_bucket{{{labels},le="+Inf"}}'] == 5
    assert s[f'{h}_count{{{labels}}}'] == 5
    assert s[f'{h}_sum{{{labels}}}'] == pytest.approx(4.65)
    assert m.count("GET", "/x", 200) == 5


def test_label_values_are_escaped() -> None:
    m = Metrics()
    m.observe("GET", 'a"b\\c\nd', 200, 0.0)
    assert 'route="a\\"b\\\\c\\nd"' in m.render()


def test_unknown_methods_share_one_label(api: Api) -> None:
    api.request("BREW", "/healthz")
    assert 'method="other",route="/healthz",status="405"' in api.get("/metrics").text


def test_route_templates() -> None:
    routes = RouteTemplates(["/v1/gpus", "/v1/gpus/{name}", "/docs/assets/{path:path}"])
    assert routes.resolve("/v1/gpus") == "/v1/gpus"
    assert routes.resolve("/v1/gpus/H100") == "/v1/gpus/{name}"
    assert routes.resolve("/v1/gpus/a/b") == "unmatched"
    assert routes.resolve("/docs/assets/a/b.js") == "/docs/assets/{path:path}"


def test_metrics_count_the_search_queue(client: Api, worker: Worker) -> None:
    """The queue's gauges and the attempts counter come from the database (every replica
    reports the same), on both backends."""
    from tests.service.support import SMALL_SEARCH

    client.post("/v1/searches", json=SMALL_SEARCH)
    client.post("/v1/searches", json={**SMALL_SEARCH, "top_k": 1})
    s = _samples(client.get("/metrics").text)
    assert s["meshplan_database_up"] == 1
    assert s['meshplan_searches{status="queued"}'] == 2
    assert s['meshplan_searches{status="succeeded"}'] == 0
    assert s["meshplan_search_oldest_queued_seconds"] >= 0
    worker.run_until_idle()
    s = _samples(client.get("/metrics").text)
    assert s['meshplan_searches{status="queued"}'] == 0
    assert s['meshplan_searches{status="succeeded"}'] == 2
    assert s['meshplan_search_attempts_total{outcome="succeeded"}'] == 2
    assert s['meshplan_search_attempts_total{outcome="lease_expired"}'] == 0
    assert s["meshplan_search_oldest_queued_seconds"] == 0
