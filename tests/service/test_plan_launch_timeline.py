"""``GET /v1/plans/{id}/launch/{format}`` and ``GET /v1/plans/{id}/timeline.svg``: rendered
from the stored request of a plan (both databases)."""

from __future__ import annotations

import json
import re
import uuid
import xml.etree.ElementTree as ET

import pytest

import costmodel
from costmodel.estimate import pipeline_simulation
from costmodel.specs.request import EstimateRequest
from runtime import launch
from tests.service.support import Api, assert_problem, fields


@pytest.mark.parametrize("fmt", launch.FORMATS)
def test_launch_config_equals_the_emitter_on_the_stored_request(client: Api, plan_id: str,
                                                                fmt: str) -> None:
    """Checks: each format answers 200 with the emitter's output for the plan's stored
    request, or 422 naming a plan field when the framework cannot run the plan."""
    request = client.get(f"/v1/plans/{plan_id}").json()["request"]
    resp = client.get(f"/v1/plans/{plan_id}/launch/{fmt}")
    try:
        expected = launch.render(fmt, request)
    except launch.LaunchError as exc:
        body = assert_problem(resp, 422)
        assert set(fields(body)) == {p.field for p in exc.problems}
        return
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["plan_id"] == plan_id and out["format"] == fmt
    assert {k: out[k] for k in expected.model_dump()} == expected.model_dump()


def test_launch_file_download(client: Api, plan_id: str) -> None:
    """Checks: ?file= answers one file as is with its media type; the runtime plan JSON is the
    stored request tagged with its format; an unknown file name is a 422 on `file`."""
    out = client.get(f"/v1/plans/{plan_id}/launch/runtime").json()
    raw = client.get(f"/v1/plans/{plan_id}/launch/runtime", params={"file": out["filename"]})
    assert raw.status_code == 200
    assert raw.headers["content-type"].startswith("application/json")
    assert out["filename"] in raw.headers["content-disposition"]
    doc = json.loads(raw.text)
    assert doc["format"] == launch.PLAN_FORMAT
    assert doc["plan"] == client.get(f"/v1/plans/{plan_id}").json()["plan"]
    assert fields(assert_problem(client.get(f"/v1/plans/{plan_id}/launch/runtime",
                                            params={"file": "nope.txt"}), 422)) == {"file"}


def test_launch_version_query_picks_the_framework_release(client: Api, plan_id: str) -> None:
    """Checks: ?version= renders for that torchtitan release (the emitter's output with
    version=); an unknown release is a 422 on training.framework_version listing the
    supported ones; meshplan's own formats take no version."""
    request = client.get(f"/v1/plans/{plan_id}").json()["request"]
    for version in launch.SUPPORTED_VERSIONS["torchtitan"]:
        resp = client.get(f"/v1/plans/{plan_id}/launch/torchtitan", params={"version": version})
        try:
            expected = launch.render("torchtitan", request, version=version)
        except launch.LaunchError as exc:
            assert set(fields(assert_problem(resp, 422))) == {p.field for p in exc.problems}
            continue
        assert resp.status_code == 200, resp.text
        assert {k: resp.json()[k] for k in expected.model_dump()} == expected.model_dump()
    body = assert_problem(client.get(f"/v1/plans/{plan_id}/launch/torchtitan",
                                     params={"version": "0.1"}), 422)
    assert fields(body) == {"training.framework_version"}
    assert "0.3" in json.dumps(body) and "0.2" in json.dumps(body)
    assert fields(assert_problem(client.get(f"/v1/plans/{plan_id}/launch/runtime",
                                            params={"version": "0.3"}), 422)) == {
        "training.framework_version"}


def test_unknown_format_and_plan(client: Api, plan_id: str) -> None:
    body = assert_problem(client.get(f"/v1/plans/{plan_id}/launch/slurm"), 422)
    assert any(f.endswith("format") for f in fields(body))
    ident = str(uuid.uuid4())
    assert_problem(client.get(f"/v1/plans/{ident}/launch/torchrun"), 404)
    assert_problem(client.get(f"/v1/plans/{ident}/timeline.svg"), 404)


def test_timeline_svg_draws_the_plans_simulation(client: Api, plan_id: str) -> None:
    """Checks: the SVG is what costmodel.timeline_svg draws for the stored request, valid XML,
    one rect per simulated action."""
    resp = client.get(f"/v1/plans/{plan_id}/timeline.svg")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("image/svg+xml")
    request = client.get(f"/v1/plans/{plan_id}").json()["request"]
    assert resp.text == costmodel.timeline_svg(request)
    root = ET.fromstring(resp.text)
    assert root.tag.endswith("svg")


def test_timeline_html_is_the_plans_simulation_and_self_contained(client: Api,
                                                                  plan_id: str) -> None:
    """Checks: the page is what costmodel.timeline_html renders for the stored request, with
    every simulated action in its data, no external reference, and a policy that lets the
    browser fetch nothing; an unknown plan is a 404 problem."""
    resp = client.get(f"/v1/plans/{plan_id}/timeline.html")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/html")
    csp = resp.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src" not in csp
    request = client.get(f"/v1/plans/{plan_id}").json()["request"]
    assert resp.text == costmodel.timeline_html(request)
    assert not re.search(r"(src|href)\s*=|https?://|@import|url\(", resp.text)
    data = json.loads(re.search(r'id="timeline-data">(.*?)</script>', resp.text, re.S)[1])
    sim = pipeline_simulation(EstimateRequest.model_validate(request))
    assert data["n_actions"] == len(sim.timeline.start) == sum(len(r["d"]) for r in data["ranks"])
    assert_problem(client.get(f"/v1/plans/{uuid.uuid4()}/timeline.html"), 404)
