"""Strings PostgreSQL cannot store (a NUL, U+0000) are refused the same way on both backends:
a 422 naming the field, nothing stored. SQLite would accept them; PostgreSQL's ``text`` and
``jsonb`` raise, which used to be a 500. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import copy

from service.calibrations.schemas import H100_PROFILE_EXAMPLE
from service.runs.schemas import RUN_EXAMPLE
from tests.service.support import SMALL_SEARCH, Api, assert_problem, fields

NUL = "a\u0000b"


def test_search_with_a_nul_string_is_422(client: Api) -> None:
    body = copy.deepcopy(SMALL_SEARCH)
    body["cluster"]["pools"][0]["name"] = NUL
    problem = assert_problem(client.post("/v1/searches", json=body), 422)
    assert any("U+0000" in e["rule"] for e in problem["errors"]), problem
    assert client.get("/v1/searches").json() == []


def test_calibration_with_a_nul_name_is_422(client: Api) -> None:
    body = copy.deepcopy(H100_PROFILE_EXAMPLE)
    body["name"] = NUL
    problem = assert_problem(client.post("/v1/calibrations", json=body), 422)
    assert "name" in fields(problem)
    assert client.get("/v1/calibrations").json() == []


def test_run_with_a_nul_string_is_422(client: Api, plan_id: str) -> None:
    body = copy.deepcopy(RUN_EXAMPLE)
    body["environment"]["hostname"] = NUL
    problem = assert_problem(client.post(f"/v1/plans/{plan_id}/runs", json=body), 422)
    assert "environment.hostname" in fields(problem)
    assert client.get(f"/v1/plans/{plan_id}/runs").json() == []


def test_nul_in_a_key_is_422(client: Api) -> None:
    body = copy.deepcopy(H100_PROFILE_EXAMPLE)
    body["provenance"] = {**body["provenance"], f"note{NUL}": "x"}
    resp = client.post("/v1/calibrations", json=body)
    assert resp.status_code == 422, resp.text
