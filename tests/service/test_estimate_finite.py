"""An estimate whose figures come out infinite or NaN is refused (422 naming them), and the
fast pre-check of :func:`service.validation.non_finite_fields` agrees with the walk."""

from __future__ import annotations

import math
from typing import Any

import pytest

import costmodel
from service import validation
from service.estimates import service
from tests.service.support import Api, assert_problem


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_fields_names_every_path(value: float) -> None:
    data = {"a": 1.0, "b": {"c": [0.5, value]}, "d": value, "e": "text"}
    assert validation.non_finite_fields(data) == ["b.c.1", "d"]


def test_finite_data_and_look_alike_strings_pass() -> None:
    assert validation.non_finite_fields({"a": [1.0, 2], "b": {"c": None}}) == []
    # The words in a string trigger the exact walk, which finds nothing.
    assert validation.non_finite_fields({"note": "NaN and Infinity are words here"}) == []


def test_an_estimate_that_overflows_answers_422(api: Api, example: dict[str, Any],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real = costmodel.estimate

    def overflowing(req: Any) -> Any:
        est = real(req)
        return est.model_copy(update={"step_time_s": math.inf, "mfu": math.nan})

    monkeypatch.setattr(service.costmodel, "estimate", overflowing)
    body = assert_problem(api.post("/v1/estimates", json=example), 422)
    (problem,) = body["errors"]
    assert problem["field"] == "body"
    assert "step_time_s" in problem["rule"] and "mfu" in problem["rule"]


def test_a_real_estimate_has_no_non_finite_field(example: dict[str, Any]) -> None:
    est = costmodel.estimate(example)
    assert validation.non_finite_fields(est.model_dump()) == []
