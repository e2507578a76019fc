"""``GET /v1/plans/{id}``, ``POST`` / ``GET /v1/plans/{id}/runs``: stored plans, runs beside
them, measured against predicted (both databases)."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest

from service.auth.service import ANONYMOUS
from service.db.engine import Database
from service.plans import service as plans
from service.runs.schemas import RUN_EXAMPLE
from tests.service.support import Api, assert_problem, fields


def report(measured: float, predicted: float | None = None, **extra: Any) -> dict[str, Any]:
    body = copy.deepcopy(RUN_EXAMPLE)
    body["measured"]["step_time_s"] = measured
    if predicted is None:
        body.pop("predicted")
    else:
        body["predicted"]["step_time_s"] = predicted
    body.update(extra)
    return body


def test_get_plan(client: Api, plan_id: str) -> None:
    resp = client.get(f"/v1/plans/{plan_id}")
    assert resp.status_code == 200
    plan = resp.json()
    assert plan["id"] == plan_id and plan["rank"] == 1
    assert plan["estimate"]["fits"] is True
    assert plan["explanation"]["binding_constraint"]
    assert plan["objective"] == "throughput"
    assert plan["objective_value"] == pytest.approx(plan["estimate"]["tokens_per_s"])
    assert plan["runs"] == [] and plan["runs_summary"] == {
        "count": 0, "mean_relative_error": None, "mean_abs_relative_error": None}
    search = client.get(f"/v1/searches/{plan['search_id']}").json()
    assert search["result"]["plans"][0]["id"] == plan_id


@pytest.mark.parametrize("ident", [str(uuid.uuid4()), "nope", "0"])
def test_unknown_plan_is_404(client: Api, ident: str) -> None:
    assert "no plan" in assert_problem(client.get(f"/v1/plans/{ident}"), 404)["detail"]
    assert_problem(client.get(f"/v1/plans/{ident}/runs"), 404)
    assert_problem(client.post(f"/v1/plans/{ident}/runs", json=report(10.0)), 404)


def test_runs_measured_against_predicted(client: Api, plan_id: str) -> None:
    # the runtime's own prediction for what ran
    first = client.post(f"/v1/plans/{plan_id}/runs", json=report(10.0, 9.0))
    assert first.status_code == 201, first.text
    run = first.json()
    assert run["plan_id"] == plan_id and run["predicted_source"] == "report"
    assert run["measured_step_time_s"] == 10.0 and run["predicted_step_time_s"] == 9.0
    assert run["relative_error"] == pytest.approx(-0.1)
    assert run["report"]["environment"]["world_size"] == 512

    # no prediction in the report, the plan's model as planned: the plan's estimate
    plan = client.get(f"/v1/plans/{plan_id}").json()
    predicted = plan["estimate"]["step_time_s"]
    second = client.post(f"/v1/plans/{plan_id}/runs",
                         json=report(predicted * 1.25)).json()
    assert second["predicted_source"] == "plan"
    assert second["predicted_step_time_s"] == pytest.approx(predicted)
    assert second["relative_error"] == pytest.approx(-0.2)

    # a scaled-down model without a prediction: nothing to compare with
    third = client.post(f"/v1/plans/{plan_id}/runs",
                        json=report(1.0, model_overrides={"num_hidden_layers": 4})).json()
    assert third["predicted_step_time_s"] is None and third["relative_error"] is None

    plan = client.get(f"/v1/plans/{plan_id}").json()
    assert [r["id"] for r in plan["runs"]] == [run["id"], second["id"], third["id"]]
    assert plan["runs_summary"]["count"] == 3
    assert plan["runs_summary"]["mean_relative_error"] == pytest.approx(-0.15)
    assert plan["runs_summary"]["mean_abs_relative_error"] == pytest.approx(0.15)
    listed = client.get(f"/v1/plans/{plan_id}/runs").json()
    assert [r["id"] for r in listed] == [r["id"] for r in plan["runs"]]


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda r: r.pop("measured"), "measured"),
    (lambda r: r["measured"].update(step_time_s=-1), "measured.step_time_s"),
    (lambda r: r["measured"].update(step_times_s=[]), "measured.step_times_s"),
    (lambda r: r["environment"].update(world_size=0), "environment.world_size"),
    (lambda r: r.update(steps="many"), "steps"),
    (lambda r: r.update(surprise=1), "surprise"),
    (lambda r: r["model_overrides"].update(hidden_size="big") if "model_overrides" in r
     else r.update(model_overrides={"hidden_size": "big"}), "model_overrides.hidden_size"),
])
def test_invalid_run_is_422(client: Api, plan_id: str, mutate: Any, field: str) -> None:
    body = report(10.0, 9.0)
    mutate(body)
    problem = assert_problem(client.post(f"/v1/plans/{plan_id}/runs", json=body), 422)
    assert field in fields(problem), problem
    assert client.get(f"/v1/plans/{plan_id}/runs").json() == []


def test_infinite_measurement_is_422(client: Api, plan_id: str) -> None:
    raw = (b'{"measured": {"step_time_s": Infinity, "step_times_s": [1.0], "tokens_per_s": 1},'
           b' "environment": {"device": "cpu", "backend": "gloo", "world_size": 1,'
           b' "torch": "2"}, "steps": 1}')
    problem = assert_problem(client.post_raw(f"/v1/plans/{plan_id}/runs", raw), 422)
    assert "measured.step_time_s" in fields(problem)


def test_estimate_request_seam(client: Api, db: Database, plan_id: str) -> None:
    """What launch-config emitters and the timeline renderer take: the validated estimate
    request of a stored plan."""
    with db.session() as session:
        req = plans.estimate_request(session, plan_id, ANONYMOUS)
    plan = client.get(f"/v1/plans/{plan_id}").json()
    assert req.plan.model_dump(mode="json") == plan["plan"]
    assert req.model.name == "llama3-8b" and req.calibration is None
    import costmodel

    assert costmodel.estimate(req).model_dump(mode="json") == plan["estimate"]


def test_plan_json_fast_path_equals_the_schema(client: Api, plan_id: str, db: Database) -> None:
    """Checks: GET /v1/plans/{id} (serialised from the stored JSON without validating it
    again) answers exactly what PlanOut's validation and serialisation would, with runs."""
    assert client.post(f"/v1/plans/{plan_id}/runs", json=report(10.0, 9.0)).status_code == 201
    assert client.post(f"/v1/plans/{plan_id}/runs", json=report(12.0)).status_code == 201
    answer = client.get(f"/v1/plans/{plan_id}").json()
    with db.read_session() as s:
        stored = plans.get(s, plan_id, ANONYMOUS, with_runs=True)
        reference = plans.to_out(stored).model_dump(mode="json")
    assert answer == reference
    assert len(answer["runs"]) == 2


def test_a_run_with_per_rank_times_reports_its_stragglers(client: Api, plan_id: str) -> None:
    plan = client.get(f"/v1/plans/{plan_id}").json()
    n = plan["estimate"]["num_gpus"]
    times = [0.5] * n
    times[n - 1] = 0.5 * 1.4  # the last GPU 40 % slower
    body = report(10.0)
    body["measured"]["rank_compute_s"] = times
    resp = client.post(f"/v1/plans/{plan_id}/runs", json=body)
    assert resp.status_code == 201, resp.text
    found = resp.json()["stragglers"]
    assert found["slowdown"] > 0
    assert [r["rank"] for r in found["responsible"]] == [n - 1]
    assert found["without_stragglers_step_time_s"] == pytest.approx(10.0 / (1 + found["slowdown"]))
    stored = client.get(f"/v1/plans/{plan_id}/runs").json()
    assert stored[-1]["stragglers"] == found
    # without per-rank times there is nothing to attribute
    assert client.post(f"/v1/plans/{plan_id}/runs", json=report(10.0)).json()["stragglers"] is None


def test_per_rank_times_of_the_wrong_count_are_a_422(client: Api, plan_id: str) -> None:
    body = report(10.0)
    body["measured"]["rank_compute_s"] = [1.0, 1.0, 1.0]
    resp = client.post(f"/v1/plans/{plan_id}/runs", json=body)
    assert "measured.rank_compute_s" in fields(assert_problem(resp, 422))
