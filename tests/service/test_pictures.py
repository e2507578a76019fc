"""The pictures endpoints: ``GET /v1/searches/{id}/pareto.svg``, ``GET
/v1/plans/{id}/goodput.svg`` and ``POST /v1/plans/{id}/what-if/timeline.{svg,html}``, drawn
from the stored search result and plan request (both databases)."""

from __future__ import annotations

import copy
import re
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest

import costmodel
from costmodel.pictures import what_if_timeline
from service.jobs.worker import Worker
from tests.service.support import SMALL_SEARCH, Api, assert_problem, fields

SVG = "{http://www.w3.org/2000/svg}"
PICTURE_PATHS = {
    ("get", "/v1/searches/{search_id}/pareto.svg"): "image/svg+xml",
    ("get", "/v1/plans/{plan_id}/goodput.svg"): "image/svg+xml",
    ("get", "/v1/plans/{plan_id}/timeline.svg"): "image/svg+xml",
    ("get", "/v1/plans/{plan_id}/timeline.html"): "text/html",
    ("post", "/v1/plans/{plan_id}/what-if/timeline.svg"): "image/svg+xml",
    ("post", "/v1/plans/{plan_id}/what-if/timeline.html"): "text/html",
}


def _svg(resp: Any) -> ET.Element:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("image/svg+xml")
    return ET.fromstring(resp.content)


def test_pareto_svg_links_every_returned_plan(client: Api, worker: Worker) -> None:
    """Checks: 409 while the search is queued; once it has succeeded, one point per plan,
    each returned plan a link to its stored plan (which answers), marked with its rank; the
    Pareto front drawn through the undominated points; axes labelled with units."""
    search = client.post("/v1/searches", json={**SMALL_SEARCH, "top_k": 3}).json()
    sid = search["id"]
    body = assert_problem(client.get(f"/v1/searches/{sid}/pareto.svg"), 409)
    assert "not finished" in body["detail"]
    worker.run_until_idle()
    result = client.get(f"/v1/searches/{sid}").json()["result"]
    root = _svg(client.get(f"/v1/searches/{sid}/pareto.svg"))
    links = {a.get("href"): a for a in root.iter(f"{SVG}a") if a.get("class") == "plan-link"}
    assert set(links) == {f"/v1/plans/{p['id']}" for p in result["plans"]}
    for p in result["plans"]:
        circle = links[f"/v1/plans/{p['id']}"].find(f"{SVG}circle")
        assert circle is not None and "chosen" in (circle.get("class") or "")
        assert int(circle.get("data-rank", 0)) == p["rank"]
        assert float(circle.get("data-tokens-per-s", 0)) == pytest.approx(
            p["estimate"]["tokens_per_s"], rel=1e-5)
        assert client.get(f"/v1/plans/{p['id']}").status_code == 200
    points = [c for c in root.iter(f"{SVG}circle") if "point" in (c.get("class") or "")]
    front = [c for c in points if "front" in (c.get("class") or "").split()]
    assert front and len(points) >= len(result["plans"])
    pts = [(float(c.get("data-tokens-per-s", 0)), float(c.get("data-cost", 0))) for c in points]
    for c in front:  # nothing is both faster and cheaper than a front point
        t, k = float(c.get("data-tokens-per-s", 0)), float(c.get("data-cost", 0))
        assert not any(t2 >= t and k2 <= k and (t2, k2) != (t, k) for t2, k2 in pts)
    assert [p for p in root.iter(f"{SVG}path") if p.get("class") == "front"] or len(front) == 1
    labels = "".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "tokens/s" in labels and "$ per million tokens" in labels


def test_pareto_svg_of_unknown_failed_and_cancelled_searches(client: Api) -> None:
    assert_problem(client.get(f"/v1/searches/{uuid.uuid4()}/pareto.svg"), 404)
    assert_problem(client.get("/v1/searches/nope/pareto.svg"), 404)
    sid = client.post("/v1/searches", json={**SMALL_SEARCH, "top_k": 1}).json()["id"]
    client.request("DELETE", f"/v1/searches/{sid}")
    assert "cancelled" in assert_problem(client.get(f"/v1/searches/{sid}/pareto.svg"),
                                         409)["detail"]


def test_what_if_timeline_marks_the_slowed_rank(client: Api, plan_id: str) -> None:
    """Checks: the SVG is costmodel's what-if timeline of the stored request, the slowed
    rank's row marked, the step change printed; the HTML variant the same simulation; a
    scenario naming a rank the plan lacks is a 422 on that field."""
    request = client.get(f"/v1/plans/{plan_id}").json()["request"]
    scenario = {"stages": {"0": 1.5}}
    resp = client.post(f"/v1/plans/{plan_id}/what-if/timeline.svg", json=scenario)
    root = _svg(resp)
    assert resp.text == what_if_timeline(request, scenario)
    marked = {int(r.get("data-rank", -1)) for r in root.iter(f"{SVG}rect")
              if r.get("class") == "row" and r.get("data-mark") == "1"}
    assert marked == {0}  # pipeline stage 0 is pipeline rank 0
    note = next(t.text or "" for t in root.iter(f"{SVG}text") if t.get("class") == "note")
    assert "what-if: step" in note and "×1.50" in note
    html = client.post(f"/v1/plans/{plan_id}/what-if/timeline.html", json=scenario)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert html.text == what_if_timeline(request, scenario, "html")
    assert "default-src 'none'" in html.headers["content-security-policy"]
    bad = client.post(f"/v1/plans/{plan_id}/what-if/timeline.svg", json={"stages": {"99": 2}})
    assert fields(assert_problem(bad, 422)) == {"stages.99"}
    assert_problem(client.post(f"/v1/plans/{uuid.uuid4()}/what-if/timeline.svg", json={}), 404)


RELIABLE = copy.deepcopy(SMALL_SEARCH)
RELIABLE["training"]["reliability"] = {"gpu_mtbf_hours": 20000, "restart_s": 600,
                                       "checkpoint_GBps_per_node": 2}
RELIABLE["top_k"] = 1


def test_goodput_svg_marks_the_estimates_optimum(client: Api, worker: Worker,
                                                 plan_id: str) -> None:
    """Checks: a plan searched with training.reliability draws its goodput curve with the
    optimum at the estimate's checkpoint interval and goodput; one without is a 409."""
    assert "reliability" in assert_problem(client.get(f"/v1/plans/{plan_id}/goodput.svg"),
                                           409)["detail"]
    sid = client.post("/v1/searches", json=RELIABLE).json()["id"]
    worker.run_until_idle()
    plan = client.get(f"/v1/searches/{sid}").json()["result"]["plans"][0]
    root = _svg(client.get(f"/v1/plans/{plan['id']}/goodput.svg"))
    gp = plan["estimate"]["goodput"]
    opt = [c for c in root.iter(f"{SVG}circle") if c.get("class") == "optimum"]
    assert len(opt) == 1
    assert float(opt[0].get("data-interval-s", 0)) == pytest.approx(
        gp["checkpoint_interval_s"], rel=1e-5)
    assert float(opt[0].get("data-goodput", 0)) == pytest.approx(gp["goodput"], rel=1e-5)
    curve = [p for p in root.iter(f"{SVG}path") if p.get("class") == "curve"]
    assert len(curve) == 1 and curve[0].get("d", "").count("L") > 100
    labels = "".join(t.text or "" for t in root.iter(f"{SVG}text"))
    assert "checkpoint interval (minutes" in labels and "goodput (%" in labels
    assert_problem(client.get(f"/v1/plans/{uuid.uuid4()}/goodput.svg"), 404)


def test_picture_endpoints_are_documented(api: Api) -> None:
    """Checks: each picture endpoint is in the OpenAPI document with a summary, its media
    type with an example, and the same auth as its neighbours (none declared per operation:
    the API key applies to every /v1 route alike)."""
    doc = api.get("/openapi.json").json()
    for (method, path), media in PICTURE_PATHS.items():
        op = doc["paths"][path][method]
        assert op["summary"], path
        content = op["responses"]["200"]["content"]
        assert media in content and content[media].get("example"), path
        assert "404" in op["responses"], path
        neighbour = doc["paths"]["/v1/plans/{plan_id}"]["get"]
        assert op.get("security") == neighbour.get("security"), path
    assert re.search(r"<svg", doc["paths"]["/v1/searches/{search_id}/pareto.svg"]["get"]
                     ["responses"]["200"]["content"]["image/svg+xml"]["example"])
    assert costmodel.timeline_html  # the page renderer is part of the cost model's API
