"""``/v1/searches`` on SQLite and PostgreSQL: submit (202), read, wait, list, cancel, the
content-hash reuse, effort limits and bad input. Searches run in a real worker loop
(``Worker`` in this process: the code a worker process runs)."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

import costmodel
from service.db.engine import Database
from service.db.models import Plan, SearchAttempt, SearchJob
from service.jobs.worker import Worker
from service.searches.schemas import LLAMA3_70B_SEARCH_EXAMPLE
from service.versioning import cost_model_version
from tests.service.support import SMALL_SEARCH, Api, assert_problem, fields, long_search


def small(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(SMALL_SEARCH)
    body.update(changes)
    return body


def count(db: Database, model: Any) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


# ---------------------------------------------------------------------------- the example
def test_documented_example_runs_to_a_result(client: Api, worker: Worker, db: Database
                                             ) -> None:
    """Swagger's "Try it out" body: stored (202), then run by a worker to ranked plans."""
    resp = client.post("/v1/searches", json=LLAMA3_70B_SEARCH_EXAMPLE)
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["status"] == "queued"
    assert resp.headers["location"] == f"/v1/searches/{body['id']}"
    assert body["result"] is None and body["attempts"] == 0
    assert body["cost_model_version"] == cost_model_version()
    # stored before the answer: the row is there
    with db.session() as s:
        assert s.get(SearchJob, uuid.UUID(body["id"])) is not None

    pending = client.get(f"/v1/searches/{body['id']}")
    assert pending.status_code == 202 and pending.json()["status"] == "queued"

    assert worker.run_until_idle() == ["succeeded"]
    done = client.get(f"/v1/searches/{body['id']}")
    assert done.status_code == 200
    out = done.json()
    assert out["status"] == "succeeded" and out["attempts"] == 1
    result = out["result"]
    assert 1 <= len(result["plans"]) <= LLAMA3_70B_SEARCH_EXAMPLE["top_k"]
    assert result["optimality"]["objective"] == "cost"
    assert out["progress"]["phase"] == "done"
    assert out["progress"]["plans_evaluated"] == result["stats"]["simulated"]
    for ranked in result["plans"]:
        assert ranked["estimate"]["fits"] is True
        assert ranked["estimate"]["cost_per_hour"] <= 1000
        plan = client.get(f"/v1/plans/{ranked['id']}")
        assert plan.status_code == 200
        assert plan.json()["rank"] == ranked["rank"]
    assert count(db, Plan) == len(result["plans"])


def test_identical_request_is_answered_from_the_stored_result(client: Api, worker: Worker,
                                                               db: Database) -> None:
    first = client.post("/v1/searches", json=small()).json()
    # the same request again, even written differently (key order, an alias, defaults
    # spelled out), is the same search while it is queued ...
    same = small()
    same["cluster"]["pools"][0]["gpu"] = "A100-80GB"
    same = {"objective": "throughput", **dict(reversed(list(same.items())))}
    again = client.post("/v1/searches", json=same)
    assert again.status_code == 202 and again.json()["id"] == first["id"]
    assert again.json()["request_hash"] == first["request_hash"]
    worker.run_until_idle()
    # ... and once it has succeeded, the stored result answers at once (200)
    third = client.post("/v1/searches", json=small())
    assert third.status_code == 200
    assert third.json()["id"] == first["id"] and third.json()["status"] == "succeeded"
    assert third.json()["result"]["plans"]
    assert count(db, SearchJob) == 1 and count(db, SearchAttempt) == 1

    # a different request is a different search
    other = client.post("/v1/searches", json=small(top_k=1)).json()
    assert other["id"] != first["id"] and other["request_hash"] != first["request_hash"]


def test_a_cancelled_search_is_not_reused(client: Api, worker: Worker) -> None:
    first = client.post("/v1/searches", json=small()).json()
    assert client.request("DELETE", f"/v1/searches/{first['id']}").status_code == 200
    second = client.post("/v1/searches", json=small())
    assert second.status_code == 202 and second.json()["id"] != first["id"]


def test_wait_answers_with_the_finished_search(client: Api, background_worker: Worker) -> None:
    resp = client.post("/v1/searches", params={"wait": 60}, json=small(seed=1))
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "succeeded" and resp.json()["result"]["plans"]
    search_id = resp.json()["id"]
    again = client.get(f"/v1/searches/{search_id}", params={"wait": 5})
    assert again.status_code == 200 and again.json()["status"] == "succeeded"


def test_wait_that_runs_out_answers_202(client: Api) -> None:
    # no worker: the search stays queued, and the answer comes after the wait
    resp = client.post("/v1/searches", params={"wait": 0.3}, json=small())
    assert resp.status_code == 202 and resp.json()["status"] == "queued"
    resp = client.get(f"/v1/searches/{resp.json()['id']}", params={"wait": 0.3})
    assert resp.status_code == 202


@pytest.mark.parametrize("wait", ["61", "-1", "soon", "nan"])
def test_bad_wait(client: Api, wait: str) -> None:
    body = assert_problem(client.post("/v1/searches", params={"wait": wait}, json=small()), 422)
    assert any("wait" in f for f in fields(body))
    if wait == "61":
        assert "60 s (MESHPLAN_MAX_WAIT_S)" in body["detail"]
    assert client.get("/v1/searches").json() == []


def test_infeasible_search_succeeds_with_the_reason(client: Api, worker: Worker) -> None:
    body = small(model={"preset": "llama3-405b"},
                 cluster={"pools": [{"name": "l4", "gpu": "L4", "nodes": 1}]})
    search_id = client.post("/v1/searches", json=body).json()["id"]
    worker.run_until_idle()
    out = client.get(f"/v1/searches/{search_id}").json()
    assert out["status"] == "succeeded"
    assert out["result"]["plans"] == []
    assert "needs at least" in out["result"]["infeasible_reason"]


def test_list(client: Api, worker: Worker) -> None:
    a = client.post("/v1/searches", json=small()).json()["id"]
    worker.run_until_idle()
    b = client.post("/v1/searches", json=small(top_k=1, objective="cost")).json()["id"]
    listed = client.get("/v1/searches").json()
    assert [s["id"] for s in listed] == [b, a]  # newest first
    assert listed[0]["objective"] == "cost" and listed[0]["status"] == "queued"
    assert [s["id"] for s in client.get("/v1/searches?status=succeeded").json()] == [a]
    assert [s["id"] for s in client.get("/v1/searches?limit=1&offset=1").json()] == [a]
    assert_problem(client.get("/v1/searches?status=done"), 422)
    assert_problem(client.get("/v1/searches?limit=0"), 422)
    assert_problem(client.get("/v1/searches?limit=abc"), 422)


# ---------------------------------------------------------------------------- cancel
def test_cancel_a_queued_search(client: Api, worker: Worker) -> None:
    search_id = client.post("/v1/searches", json=small()).json()["id"]
    resp = client.request("DELETE", f"/v1/searches/{search_id}")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    assert worker.run_until_idle() == []  # nothing to run
    assert client.request("DELETE", f"/v1/searches/{search_id}").status_code == 200


def test_cancel_a_running_search_stops_its_solver(client: Api, background_worker: Worker,
                                                  db: Database) -> None:
    """DELETE marks it; the worker's heartbeat sees the mark and the solver stops (long before
    its 120 s limit); the search ends ``cancelled``."""
    search_id = client.post("/v1/searches", json=long_search(120)).json()["id"]

    def running_with_progress() -> dict[str, Any] | None:
        resp = client.get(f"/v1/searches/{search_id}")
        body: dict[str, Any] = resp.json()
        return body if resp.status_code == 202 and body["progress"] else None

    from tests.service.support import wait_until

    # progress is visible while it runs (written by the worker's heartbeat)
    seen = wait_until(running_with_progress, 60, "the search to run and report progress")
    assert seen["status"] == "running" and seen["progress"]["updated"]
    assert seen["progress"]["phase"] in ("enumerating", "simulating", "refining")
    resp = client.request("DELETE", f"/v1/searches/{search_id}")
    assert resp.status_code == 202
    assert resp.json()["status"] == "running" and resp.json()["cancel_requested"] is True
    done = client.get(f"/v1/searches/{search_id}", params={"wait": 60}).json()
    assert done["status"] == "cancelled" and done["result"] is None
    with db.session() as s:
        attempt = s.scalars(select(SearchAttempt)).one()
        assert attempt.outcome == "cancelled"
        assert (attempt.ended_at - attempt.claimed_at).total_seconds() < 100  # hang guard


def test_cancel_a_finished_search_is_a_conflict(client: Api, worker: Worker) -> None:
    search_id = client.post("/v1/searches", json=small()).json()["id"]
    worker.run_until_idle()
    body = assert_problem(client.request("DELETE", f"/v1/searches/{search_id}"), 409)
    assert "succeeded" in body["detail"]


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("ident", [str(uuid.uuid4()), "not-a-uuid", "1", "%00"])
def test_unknown_search_is_404(client: Api, method: str, ident: str) -> None:
    body = assert_problem(client.request(method, f"/v1/searches/{ident}"), 404)
    assert "no search" in body["detail"]


# ---------------------------------------------------------------------------- bad input
def test_effort_limits_name_the_field_and_the_limit(client: Api) -> None:
    body = assert_problem(client.post("/v1/searches", json=small(time_limit_s=500, top_k=40)),
                          422)
    by_field = {e["field"]: e["rule"] for e in body["errors"]}
    assert "120 s (MESHPLAN_MAX_SEARCH_TIME_S)" in by_field["time_limit_s"]
    assert "limit of 20 (MESHPLAN_MAX_TOP_K)" in by_field["top_k"]
    huge = small(cluster={"pools": [{"name": f"p{i}", "gpu": "H100", "nodes": 1024}
                                    for i in range(17)]})
    body = assert_problem(client.post("/v1/searches", json=huge), 422)
    rules = " ".join(e["rule"] for e in body["errors"] if e["field"] == "cluster.pools")
    assert "MESHPLAN_MAX_SEARCH_POOLS" in rules and "MESHPLAN_MAX_SEARCH_GPUS" in rules
    assert client.get("/v1/searches").json() == []  # nothing stored


def test_a_search_over_batch_sizes_stores_each_plan_at_its_own(client: Api, worker: Worker
                                                                ) -> None:
    """training.global_batch_sizes: each stored plan's estimate request runs the batch size
    the search chose for it, and reproduces its estimate; a size over the server's limit is a
    422 naming that entry."""
    body = small()
    body["training"] = {**body["training"], "global_batch_sizes": [16, 128]}
    search_id = client.post("/v1/searches", json=body).json()["id"]
    assert worker.run_until_idle() == ["succeeded"]
    result = client.get(f"/v1/searches/{search_id}").json()["result"]
    assert {p["global_batch_size"] for p in result["plans"]} <= {16, 64, 128}
    for ranked in result["plans"]:
        stored = client.get(f"/v1/plans/{ranked['id']}").json()
        assert stored["request"]["training"]["global_batch_size"] == ranked["global_batch_size"]
        again = client.post("/v1/estimates", json=stored["request"]).json()
        assert again["tokens_per_s"] == pytest.approx(ranked["estimate"]["tokens_per_s"])
    body["training"]["global_batch_sizes"] = [16, 10**9]
    problem = assert_problem(client.post("/v1/searches", json=body), 422)
    rules = {e["field"]: e["rule"] for e in problem["errors"]}
    assert "MESHPLAN_MAX_SEARCH_GLOBAL_BATCH" in rules["training.global_batch_sizes.1"]


def test_a_huge_global_batch_is_refused_before_it_is_queued(client: Api) -> None:
    """global_batch_size 1e15 with a 2 s limit once held a worker for minutes enumerating
    divisors: it is now a 422 naming the field and the limit, answered at once."""
    body = small()
    body["training"] = {**body["training"], "global_batch_size": 10**15}
    problem = assert_problem(client.post("/v1/searches", json={**body, "time_limit_s": 2}), 422)
    rules = {e["field"]: e["rule"] for e in problem["errors"]}
    assert "MESHPLAN_MAX_SEARCH_GLOBAL_BATCH" in rules["training.global_batch_size"]
    assert client.get("/v1/searches").json() == []


@pytest.mark.parametrize(("change", "field"), [
    ({"training": None}, "training"),
    ({"objective": "cost_to_train"}, "training.train_tokens"),
    ({"objective": "fastest"}, "objective"),
    ({"top_k": 0}, "top_k"),
    ({"time_limit_s": -1}, "time_limit_s"),
    ({"constraints": {"pools": ["h100"]}}, "constraints.pools"),
    ({"constraints": {"fixed": {"tq": 2}}}, "constraints"),
    ({"constraints": {"max_straggler_sensitivity": -0.1}},
     "constraints.max_straggler_sensitivity"),
    ({"cluster": {"pools": [{"name": "a100", "gpu": "A100-SXM-80GB",
                             "preemption_per_hour": -1}]}},
     "cluster.pools.0.preemption_per_hour"),
    ({"model": {"preset": "llama9"}}, "model"),
    ({"frobnicate": True}, "frobnicate"),
    ({"calibration_id": str(uuid.uuid4())}, "calibration_id"),
    ({"calibration_id": "x", "calibration": {"name": "c", "provenance": {"source": "s"}}},
     "calibration_id"),
])
def test_invalid_search_is_422_naming_the_field(client: Api, change: dict[str, Any],
                                                field: str) -> None:
    body = {k: v for k, v in {**small(), **change}.items() if v is not None}
    problem = assert_problem(client.post("/v1/searches", json=body), 422)
    assert any(f == field or f.startswith(field + ".") for f in fields(problem)), problem


def test_non_finite_numbers_are_refused(client: Api) -> None:
    body = small()
    body["cluster"]["pools"][0]["price_per_gpu_hour"] = float("inf")
    raw = json.dumps(body, allow_nan=True).encode()
    problem = assert_problem(client.post_raw("/v1/searches", raw), 422)
    assert "cluster.pools.0.price_per_gpu_hour" in fields(problem)


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b'"x"', b"\xff"])
def test_malformed_bodies(client: Api, raw: bytes) -> None:
    resp = client.post_raw("/v1/searches", raw)
    assert resp.status_code in (400, 422)
    assert_problem(resp, resp.status_code)


# ---------------------------------------------------------------------------- worker failures
def test_solver_crash_fails_the_search_without_a_traceback(
        client: Api, worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    import solver

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internal state /etc/passwd")

    monkeypatch.setattr(solver, "search", broken)
    search_id = client.post("/v1/searches", json=small()).json()["id"]
    assert worker.run_until_idle() == ["failed"]
    out = client.get(f"/v1/searches/{search_id}").json()
    assert out["status"] == "failed"
    error = out["error"]
    assert error["status"] == 500 and error["instance"] == f"/v1/searches/{search_id}"
    assert "secret" not in json.dumps(out) and "Traceback" not in json.dumps(out)
    # a failed search is not reused: the same request runs again
    monkeypatch.undo()
    again = client.post("/v1/searches", json=small()).json()
    assert again["id"] != search_id and again["status"] == "queued"


def test_request_that_no_longer_validates_fails_as_invalid_input(
        client: Api, worker: Worker, db: Database) -> None:
    """A stored request the worker's solver version rejects (say, written by an older version)
    ends ``failed`` with the 422 problem the API would give."""
    search_id = client.post("/v1/searches", json=small()).json()["id"]
    with db.session() as s:
        job = s.get(SearchJob, uuid.UUID(search_id))
        assert job is not None
        job.request = {**job.request, "top_k": 0}
    assert worker.run_until_idle() == ["failed"]
    error = client.get(f"/v1/searches/{search_id}").json()["error"]
    assert error["status"] == 422 and error["errors"][0]["field"] == "top_k"


# ---------------------------------------------------------------------------- plans keep requests
def test_stored_plan_reproduces_its_estimate(client: Api, worker: Worker) -> None:
    """A plan keeps the estimate request {model, training, cluster, plan} (model resolved) and
    the cost-model version; posting that request gives the stored estimate again."""
    search_id = client.post("/v1/searches", json=small(objective="cost")).json()["id"]
    worker.run_until_idle()
    ranked = client.get(f"/v1/searches/{search_id}").json()["result"]["plans"][0]
    plan = client.get(f"/v1/plans/{ranked['id']}").json()
    assert plan["cost_model_version"] == cost_model_version()
    assert plan["cost_model_version"].startswith(costmodel.__version__ + "+")
    req = plan["request"]
    assert set(req) == {"model", "training", "cluster", "plan"}
    assert req["model"]["num_hidden_layers"] == 32  # llama3-8b, resolved
    assert req["plan"] == ranked["plan"] == plan["plan"]
    again = client.post("/v1/estimates", json=req)
    assert again.status_code == 200
    assert again.json() == plan["estimate"] == ranked["estimate"]
