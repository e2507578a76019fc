"""Large estimates run in a process pool of their own (service.estimates.heavy): the same
answer as in-process, a full queue is a 503 with Retry-After before any work, and invalid input
found in the pool is still a 422 naming the field."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import pytest

import costmodel
from costmodel.errors import FieldProblem, SpecError
from costmodel.specs.request import EstimateRequest
from service.app import create_app
from service.db.engine import Database
from service.estimates.heavy import schedule_cells
from service.settings import Settings
from tests.service.support import Api, assert_problem

URL = "/v1/estimates"


@pytest.fixture
def heavy_api(sqlite_url: str, sqlite_db: Database) -> Iterator[Api]:
    """Every estimate counts as large (threshold 0 cells), one process, a queue of one."""
    settings = Settings(database_url=sqlite_url, heavy_estimate_cells=0,
                        heavy_estimate_processes=1, heavy_estimate_queue=1)
    app = create_app(settings, db=sqlite_db)
    client = Api(app)
    yield client
    client.close()
    app.state.heavy_estimates.shutdown()


def test_a_large_estimate_is_computed_in_the_pool_with_the_in_process_answer(
        heavy_api: Api, example: dict[str, Any]) -> None:
    req = EstimateRequest.model_validate(example)
    assert schedule_cells(req) > 0
    resp = heavy_api.post(URL, json=example)
    assert resp.status_code == 200, resp.text
    pool = heavy_api.app.state.heavy_estimates._pool
    assert pool is not None, "the estimate did not go to the pool"
    assert resp.json() == costmodel.estimate(req).model_dump(mode="json")


def test_a_full_queue_is_a_503_with_retry_after_before_any_work(
        heavy_api: Api, example: dict[str, Any]) -> None:
    heavy = heavy_api.app.state.heavy_estimates
    assert heavy._slots.acquire(blocking=False)  # the one admitted large estimate
    try:
        resp = heavy_api.post(URL, json=example)
    finally:
        heavy._slots.release()
    assert_problem(resp, 503)
    assert int(resp.headers["Retry-After"]) > 0
    assert "micro_batch_size" in resp.json()["detail"]
    assert heavy._pool is None, "a refused estimate started the pool"


def test_cheap_estimates_stay_in_process(api: Api, example: dict[str, Any]) -> None:
    assert api.post(URL, json=example).status_code == 200
    assert api.app.state.heavy_estimates._pool is None


def test_a_spec_error_survives_the_trip_back_from_the_pool() -> None:
    err = SpecError([FieldProblem("plan.tp", "must divide 64"), FieldProblem("plan.pp", "x")])
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, SpecError) and back.problems == err.problems
    assert str(back) == str(err)
