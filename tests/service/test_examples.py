"""Every request body documented in the OpenAPI document works as it is: Swagger UI's "Try it
out" succeeds with one click (the search example is run by a worker to ranked plans)."""

from __future__ import annotations

from typing import Any

from service.db.engine import Database
from service.jobs.worker import Worker
from service.settings import Settings
from tests.service.support import Api


def examples(api: Api) -> dict[tuple[str, str, str], Any]:
    out = {}
    for path, ops in api.get("/openapi.json").json()["paths"].items():
        for method, op in ops.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            for name, ex in body.get("examples", {}).items():
                out[(method.upper(), path, name)] = ex["value"]
    return out


def test_every_request_body_has_a_working_example(api: Api, sqlite_db: Database,
                                                  settings: Settings) -> None:
    found = examples(api)
    posts = {(m, p) for m, p, _ in found}
    assert posts == {("POST", "/v1/estimates"), ("POST", "/v1/searches"),
                     ("POST", "/v1/calibrations"), ("POST", "/v1/plans/{plan_id}/runs"),
                     ("POST", "/v1/plans/{plan_id}/what-if"),
                     ("POST", "/v1/plans/{plan_id}/what-if/timeline.svg"),
                     ("POST", "/v1/plans/{plan_id}/what-if/timeline.html")}
    by_path = {p: v for (_, p, name), v in found.items() if name != "spot-goodput"}
    assert by_path["/v1/estimates"]["model"] == {"preset": "llama3-70b"}
    gpus = {pool["gpu"] for pool in by_path["/v1/searches"]["cluster"]["pools"]}
    assert gpus == {"H100-SXM-80GB", "A100-SXM-80GB"}  # a mixed inventory

    est = api.post("/v1/estimates", json=by_path["/v1/estimates"])
    assert est.status_code == 200 and est.json()["fits"] is True
    cal = api.post("/v1/calibrations", json=by_path["/v1/calibrations"])
    assert cal.status_code == 201, cal.text
    search = api.post("/v1/searches", json=by_path["/v1/searches"])
    assert search.status_code == 202, search.text
    assert Worker(sqlite_db, settings).run_until_idle() == ["succeeded"]
    result = api.get(f"/v1/searches/{search.json()['id']}").json()["result"]
    assert result["plans"]
    plan_id = result["plans"][0]["id"]
    run = api.post(f"/v1/plans/{plan_id}/runs", json=by_path["/v1/plans/{plan_id}/runs"])
    assert run.status_code == 201, run.text
    for (_, path, _name), value in found.items():
        if path.startswith("/v1/plans/{plan_id}/what-if"):
            what_if = api.post(path.replace("{plan_id}", plan_id), json=value)
            assert what_if.status_code == 200, what_if.text
    # the second search example: goodput-aware time to train on spot nodes, robust plans
    spot = api.post("/v1/searches", json=found[("POST", "/v1/searches", "spot-goodput")])
    assert spot.status_code == 202, spot.text
    assert Worker(sqlite_db, settings).run_until_idle() == ["succeeded"]
    result = api.get(f"/v1/searches/{spot.json()['id']}").json()["result"]
    assert result["plans"] and result["optimality"]["objective"] == "time_to_train"
    for rp in result["plans"]:
        goodput = rp["estimate"]["goodput"]
        assert goodput["preemptions_per_day"] > 0 and 0 < goodput["goodput"] < 1
        assert abs(rp["objective_value"] - goodput["time_to_train_s"]) <= 1e-9 * abs(
            goodput["time_to_train_s"])
        assert rp["explanation"]["straggler_sensitivity"]["increase_fraction"] <= 0.097
