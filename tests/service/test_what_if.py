"""``POST /v1/plans/{id}/what-if`` and ``meshplan what-if PLAN SCENARIO_FILE``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import costmodel
from service.app import create_app
from service.cli import EXIT_INVALID, EXIT_OK, main
from service.db.engine import Database
from service.plans.schemas import WHAT_IF_EXAMPLE
from service.settings import Settings
from tests.service.support import Api, assert_problem, fields


def test_empty_scenario_is_the_stored_estimate(client: Api, plan_id: str) -> None:
    stored = client.get(f"/v1/plans/{plan_id}").json()
    resp = client.post(f"/v1/plans/{plan_id}/what-if", json={})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["plan_id"] == plan_id
    expected = costmodel.estimate(stored["request"]).step_time_s
    assert out["step_time_s"] == expected == out["baseline_step_time_s"]
    assert out["change"] == 0.0
    assert out["straggler_sensitivity"]["increase_s"] >= 0
    assert len(out["idle_s"]) == stored["plan"]["pp"]


def test_example_runs_and_slows_the_plan(client: Api, plan_id: str) -> None:
    resp = client.post(f"/v1/plans/{plan_id}/what-if", json=WHAT_IF_EXAMPLE)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["change"] > 0
    assert out["jitter"]["steps"] == 16
    stored = client.get(f"/v1/plans/{plan_id}").json()
    direct = costmodel.what_if(stored["request"], WHAT_IF_EXAMPLE)
    assert out["step_time_s"] == direct.step_time_s  # seeded: the same answer


@pytest.mark.parametrize(("scenario", "field"), [
    ({"ranks": {"4096": 1.1}}, "ranks.4096"),
    ({"stages": {"0": 0}}, "stages.0"),
    ({"nodes": {"9": 1.2}}, "nodes.9"),
    ({"pools": {"h100": 1.2}}, "pools.h100"),
    ({"jitter": {"cv": -1}}, "jitter.cv"),
    ({"links": {"inter_node": -2}}, "links.inter_node"),
    ({"ranks": {"x": 1.1}}, "ranks.x"),
    ({"unknown": 1}, "unknown"),
])
def test_bad_scenario_is_422_naming_the_field(client: Api, plan_id: str,
                                              scenario: dict[str, Any], field: str) -> None:
    body = assert_problem(client.post(f"/v1/plans/{plan_id}/what-if", json=scenario), 422)
    assert any(f == field or f.startswith(field + ".") for f in fields(body)), body


def test_unknown_plan_is_404(client: Api) -> None:
    assert_problem(client.post("/v1/plans/00000000-0000-0000-0000-000000000000/what-if",
                               json={}), 404)


def test_cli_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                        client: Api, plan_id: str) -> None:
    stored = client.get(f"/v1/plans/{plan_id}").json()
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(stored))
    good = tmp_path / "scenario.json"
    good.write_text(json.dumps({"stages": {"0": 1.2}}))
    assert main(["what-if", str(plan), str(good), "--json"]) == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    assert out["change"] > 0
    assert main(["what-if", str(plan), str(good)]) == EXIT_OK
    assert "critical path" in capsys.readouterr().out

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"ranks": {"0": -1}}))
    assert main(["what-if", str(plan), str(bad)]) == EXIT_INVALID
    assert "ranks.0" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    assert main(["what-if", str(plan), str(broken)]) == EXIT_INVALID


def test_cli_against_the_server(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                client: Api, plan_id: str,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`meshplan what-if ID FILE --server URL` goes through Client.what_if (routed to the app
    in-process here): the server's answer printed; a bad scenario is exit 2 naming the field."""
    from service.client import Client

    def routed(self: Client, method: str, path: str, **kw: Any) -> Any:
        kw.pop("timeout", None)
        return client.request(method, path, **kw)

    monkeypatch.setattr(Client, "_request", routed)
    good = tmp_path / "scenario.json"
    good.write_text(json.dumps(WHAT_IF_EXAMPLE))
    server = ["--server", "http://meshplan.test"]
    assert main(["what-if", plan_id, str(good), "--json", *server]) == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    direct = client.post(f"/v1/plans/{plan_id}/what-if", json=WHAT_IF_EXAMPLE).json()
    direct.pop("plan_id")
    assert out == direct
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nodes": {"7": 1.5}}))
    assert main(["what-if", plan_id, str(bad), *server]) == EXIT_INVALID
    assert "nodes.7" in capsys.readouterr().err


def test_jitter_steps_over_the_admission_limit_is_422(db: Database, db_settings: Settings,
                                                       plan_id: str) -> None:
    """Each jittered step simulates the schedule once: steps × cells over
    MESHPLAN_MAX_SCHEDULE_CELLS is refused on `jitter.steps` (the compute stays bounded)."""
    small = Api(create_app(db_settings.model_copy(update={"max_schedule_cells": 10}), db=db))
    try:
        resp = small.post(f"/v1/plans/{plan_id}/what-if", json={"jitter": {"steps": 100}})
        assert fields(assert_problem(resp, 422)) == {"jitter.steps"}
        assert small.post(f"/v1/plans/{plan_id}/what-if", json={}).status_code == 200
    finally:
        small.close()
